// What an application message of an E2EE conversation carries inside MLS: the text and the
// attachments, each with the key, nonce and SHA-256 that open its encrypted blob (docs/e2ee.md).
// The server sees only the blobs' ids (`mediaIds`) and, in the clear, the thread a reply belongs to.
// Plain data and its codec; no cryptography here.
import * as z from "zod";
import { MediaRef } from "../../../protocol";

/** What opens one encrypted blob (the engine's FileKey without the id). */
export const FileSeal = z.object({
  key: z.string().min(1).max(64),
  nonce: z.string().min(1).max(64),
  sha256: z.string().min(1).max(64),
});
export type FileSeal = z.infer<typeof FileSeal>;

/**
 * An attachment as the members see it: a MediaRef (its real type, name, size and dimensions,
 * which the server never sees) whose `id` names the encrypted blob, with the seal that opens it
 * and, for a picture or a video, the seal of its thumbnail (`thumbnailId`).
 */
export const SealedMedia = MediaRef.extend({ seal: FileSeal, thumbnailSeal: FileSeal.optional() });
export type SealedMedia = z.infer<typeof SealedMedia>;

/** Version 1 of the content: text, attachments, or both. */
export const Content = z.object({
  v: z.literal(1),
  body: z.string().max(16_384).optional(),
  media: z.array(SealedMedia).max(32).optional(),
});
export type Content = z.infer<typeof Content>;

export function encodeContent(content: { body?: string | undefined; media?: SealedMedia[] | undefined }): Uint8Array {
  const out: Content = { v: 1 };
  if (content.body !== undefined) out.body = content.body;
  if (content.media && content.media.length > 0) out.media = content.media;
  return new TextEncoder().encode(JSON.stringify(out));
}

/** The content of a decrypted message, or null if it is not one this client understands. */
export function decodeContent(bytes: Uint8Array): Content | null {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return null;
  }
  const parsed = Content.safeParse(json);
  return parsed.success ? parsed.data : null;
}

/** Whether a media reference carries a seal (an attachment of an E2EE message). */
export function isSealed(m: MediaRef): m is SealedMedia {
  return "seal" in m && FileSeal.safeParse((m as { seal?: unknown }).seal).success;
}

/**
 * How a message of an E2EE conversation is shown on this device: its content, or why there is
 * none. `before-join`: sent before this device joined the group, so its keys never reached it.
 */
export type Shown =
  | { kind: "content"; content: Content }
  | { kind: "pending" }
  | { kind: "before-join" }
  | { kind: "failed"; reason: string };

export const SHOWN_TEXT: Record<Exclude<Shown["kind"], "content">, string> = {
  pending: "🔒 Decrypting…",
  "before-join": "🔒 Cannot decrypt (sent before this device joined)",
  failed: "🔒 Cannot decrypt this message",
};
