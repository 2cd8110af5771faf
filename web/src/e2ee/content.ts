// What an application message of an E2EE conversation carries inside MLS: the contract's
// `E2eePlaintext` (a message's text, reply, mentions, forward mark and attachments, each attachment
// with the key, nonce and SHA-256 that open its encrypted blob; or an action on an earlier message),
// and the older Content v1 this client still opens (docs/e2ee.md). The server sees only the blobs'
// ids (`mediaIds`) and, in the clear, the thread a reply belongs to.
// Plain data and its codec; no cryptography here.
import * as z from "zod";
import { E2eePlaintext, MediaRef, type Action, type Reaction } from "../../../protocol";

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

/**
 * Version 1 of the content (text, attachments, or both): what this client sealed before message
 * actions, still read from ciphertexts and caches that hold it. New messages are sealed as the
 * contract's `E2eePlaintext` (protocol/actions.ts).
 */
export const ContentV1 = z.object({
  v: z.literal(1),
  body: z.string().max(16_384).optional(),
  media: z.array(SealedMedia).max(32).optional(),
});

/**
 * A decrypted message as this device shows it, and as it keeps it (`mls:plain:<id>`): the sealed
 * fields, who sent it as MLS authenticated it (`from`) and when the server stored it (`at`), and
 * what the encrypted actions applied since made of it. Entries stored before actions existed have
 * only `v`, `body` and `media`.
 */
export interface Content {
  v: 1;
  body?: string;
  media?: SealedMedia[];
  replyToSeq?: number;
  mentions?: string[];
  forwarded?: true;
  from?: string;
  at?: number;
  editedAt?: number;
  deletedAt?: number;
  reactions?: Reaction[];
  pinned?: { by: string; at: number };
}

/** What one application message carries, decoded. */
export type Plaintext = { type: "message"; content: Content } | { type: "action"; action: Action };

/** The fields a sender seals with a message (the sealed part of Content). */
export type Outgoing = Pick<Content, "body" | "media" | "replyToSeq" | "mentions" | "forwarded">;

/** A message's plaintext, as the contract's `E2eePlaintext`. */
export function encodeMessage(content: Outgoing): Uint8Array {
  const out: E2eePlaintext = { type: "message" };
  if (content.body !== undefined) out.body = content.body;
  if (content.replyToSeq !== undefined) out.replyToSeq = content.replyToSeq;
  if (content.mentions && content.mentions.length > 0) out.mentions = content.mentions;
  if (content.forwarded) out.forwarded = true;
  if (content.media && content.media.length > 0) out.media = content.media;
  return new TextEncoder().encode(JSON.stringify(out));
}

/** An action's plaintext, as the contract's `E2eePlaintext`. */
export function encodeAction(action: Action): Uint8Array {
  const out: E2eePlaintext = { type: "action", action };
  return new TextEncoder().encode(JSON.stringify(out));
}

/** A decrypted application message (`E2eePlaintext`, or the older Content v1), or null if it is not one this client understands. */
export function decodePlaintext(bytes: Uint8Array): Plaintext | null {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return null;
  }
  const current = E2eePlaintext.safeParse(json);
  if (current.success) {
    const p = current.data;
    if (p.type === "action") return { type: "action", action: p.action };
    const media: SealedMedia[] = [];
    for (const m of p.media ?? []) {
      const sealed = SealedMedia.safeParse(m);
      if (!sealed.success) return null;
      media.push(sealed.data);
    }
    const content: Content = { v: 1 };
    if (p.body !== undefined) content.body = p.body;
    if (media.length > 0) content.media = media;
    if (p.replyToSeq !== undefined) content.replyToSeq = p.replyToSeq;
    if (p.mentions && p.mentions.length > 0) content.mentions = p.mentions;
    if (p.forwarded) content.forwarded = true;
    return { type: "message", content };
  }
  const v1 = ContentV1.safeParse(json);
  return v1.success ? { type: "message", content: v1.data } : null;
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
  | { kind: "action"; action: Pick<Action, "type" | "targetSeq"> }
  | { kind: "pending" }
  | { kind: "before-join" }
  | { kind: "failed"; reason: string };

export const SHOWN_TEXT: Record<Exclude<Shown["kind"], "content" | "action">, string> = {
  pending: "🔒 Decrypting…",
  "before-join": "🔒 Cannot decrypt (sent before this device joined)",
  failed: "🔒 Cannot decrypt this message",
};
