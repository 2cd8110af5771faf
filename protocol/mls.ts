// The wire contract of end-to-end encryption (API.md "End-to-end encryption (v2 addition)"):
// request bodies and the base64url encoding every MLS structure travels in. The structures
// themselves (RFC 9420 TLS encodings wrapped in an MLSMessage) are parsed by kernel/mls on the
// server and by the client's engine, never by these schemas.
import * as z from "zod";

/** Upper bound of one encoded MLS structure in an ordinary request body (at most 64 KiB anyway). */
const MLS_TEXT_MAX = 64 * 1024;

/**
 * Upper bound of a commit's `commit` field, in characters. The commit is the part of a commit
 * request that is stored as a message and relayed to every member, in a fan-out queue job too
 * (128 KB at most, with the recipients' ids beside it); its GroupInfo and Welcome are never
 * relayed and are bounded by the commit route's own body limit (`MLS_COMMIT_MAX_BYTES`). An Add
 * takes ~0.45 KiB of it, and an update or remove commit up to ~0.11 KiB per device of the group
 * while its tree still has blank nodes (docs/performance.md, S8): ~108 KiB at 1,000 devices.
 */
export const MLS_COMMIT_TEXT_MAX = 112 * 1024;

/** Upper bound of a commit request's GroupInfo or Welcome: the route's body limit is the real one. */
const MLS_GROUP_TEXT_MAX = 2 * 1024 * 1024;

/** At most this many Adds in one commit by our clients: ~22 KiB of commit, far under MLS_COMMIT_TEXT_MAX. */
export const MLS_ADDS_PER_COMMIT = 50;

const base64UrlOf = (max: number) => z.string().min(1).max(max).regex(/^[A-Za-z0-9_-]+$/, "base64url without padding");

/** base64url without padding (RFC 4648 section 5), the encoding of every MLS structure on the wire. */
export const Base64Url = base64UrlOf(MLS_TEXT_MAX);

const Id = z.string().min(1).max(128);
const ClientMsgId = z.string().min(1).max(64);

/** `PUT /devices/me/mls`: the device's Ed25519 signature key (32 bytes). */
export const DeviceMlsBody = z.strictObject({
  signatureKey: z.string().regex(/^[A-Za-z0-9_-]{43}$/, "a base64url 32-byte Ed25519 public key"),
});

export const KeyPackagesBody = z.strictObject({
  keyPackages: z.array(Base64Url).min(1).max(100),
  lastResort: Base64Url.optional(),
});

export const ClaimKeyPackagesBody = z.strictObject({ userIds: z.array(Id).min(1).max(100) });

export const CommitBody = z.strictObject({
  clientMsgId: ClientMsgId,
  epoch: z.number().int().nonnegative(),
  commit: base64UrlOf(MLS_COMMIT_TEXT_MAX),
  groupInfo: base64UrlOf(MLS_GROUP_TEXT_MAX),
  welcome: base64UrlOf(MLS_GROUP_TEXT_MAX).optional(),
  welcomeDeviceIds: z.array(Id).max(1000).optional(),
});

export const DeviceWithKey = z.object({ id: Id, name: z.string(), createdAt: z.number().int(), signatureKey: z.string().nullable() });

export const ClaimedKeyPackage = z.object({ userId: Id, deviceId: Id, keyPackage: z.string(), lastResort: z.boolean() });

export const PendingWelcome = z.object({ id: Id, conversationId: Id, seq: z.number().int().positive(), welcome: z.string() });

export type DeviceMlsBody = z.infer<typeof DeviceMlsBody>;
export type KeyPackagesBody = z.infer<typeof KeyPackagesBody>;
export type CommitBody = z.infer<typeof CommitBody>;
export type DeviceWithKey = z.infer<typeof DeviceWithKey>;
export type ClaimedKeyPackage = z.infer<typeof ClaimedKeyPackage>;
export type PendingWelcome = z.infer<typeof PendingWelcome>;

export function toBase64Url(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The bytes of a base64url string, or null if it is not one. */
export function fromBase64Url(text: string): Uint8Array<ArrayBuffer> | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return null;
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** The MLS group of a conversation: its `group_id` is the UTF-8 bytes of the conversation id. */
export function groupIdOf(conversationId: string): Uint8Array {
  return new TextEncoder().encode(conversationId);
}

/** A leaf's `basic` credential identity: the UTF-8 bytes of `<userId>:<deviceId>`. */
export function credentialIdentity(userId: string, deviceId: string): Uint8Array {
  return new TextEncoder().encode(`${userId}:${deviceId}`);
}

/** The (userId, deviceId) a credential identity names, or null. Ids never contain ':'. */
export function parseCredentialIdentity(identity: Uint8Array): { userId: string; deviceId: string } | null {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(identity);
  } catch {
    return null;
  }
  const parts = text.split(":");
  if (parts.length !== 2 || !parts[0] || !parts[1]) return null;
  return { userId: parts[0], deviceId: parts[1] };
}
