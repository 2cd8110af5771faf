// Signed media URLs: `/media/<id>/content?exp=<epoch ms>&sig=<base64url HMAC-SHA256>`.
// The MAC covers a version tag, the media id and the expiry, so changing any of them (or the
// signature) gives 403. The type and name served come from the stored object, never from the URL,
// so they need no signing. Rotating MEDIA_URL_SECRET voids every URL handed out.
import { ApiError } from "./apiError";
import { MEDIA_LIMITS, type MediaInfo, type MediaRef } from "../../protocol";
import { base64url, hmacKey, macMatches } from "./crypto";
import { requireSecret, type MediaSettings } from "../../kernel/settings";

const encoder = new TextEncoder();
const VERSION = "media-url-v1";

const message = (mediaId: string, expiresAt: number) => encoder.encode(`${VERSION}\n${mediaId}\n${expiresAt}`);

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

/**
 * The origin media URLs are built on: PUBLIC_ORIGIN, never the request's Host. One exception
 * for development: when PUBLIC_ORIGIN is a loopback address and the request came to another
 * loopback name for the same scheme and port (localhost for 127.0.0.1), that name is kept, so a
 * page opened at http://localhost:8787 gets URLs of its own origin (its CSP allows no other). A
 * forged Host can then only name the same local server.
 */
export function mediaOrigin(publicOrigin: string, requestUrl: string): string {
  const configured = new URL(publicOrigin);
  const asked = new URL(requestUrl);
  const sameLocalServer =
    LOOPBACK.has(configured.hostname) && LOOPBACK.has(asked.hostname) && asked.protocol === configured.protocol && asked.port === configured.port;
  return sameLocalServer ? asked.origin : configured.origin;
}

export const contentPath = (mediaId: string) => `/media/${encodeURIComponent(mediaId)}/content`;

export async function signMediaUrl(origin: string, mediaId: string, expiresAt: number, secret: string): Promise<string> {
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), message(mediaId, expiresAt));
  return `${origin}${contentPath(mediaId)}?exp=${expiresAt}&sig=${base64url(new Uint8Array(mac))}`;
}

/**
 * Checks a signed URL's query for `mediaId`; throws 403 when it was changed in any way or has
 * expired. `maxLifetimeMs` bounds the expiry too, so a URL signed with a since-lowered cap dies.
 */
export async function verifyMediaUrl(
  mediaId: string,
  query: URLSearchParams,
  secret: string,
  now: number,
  maxLifetimeMs: number,
): Promise<{ expiresAt: number }> {
  const exp = query.get("exp") ?? "";
  const sig = query.get("sig") ?? "";
  const names = [...query.keys()];
  const exact = names.length === 2 && names.includes("exp") && names.includes("sig");
  // Only the canonical form: `exp` as we write it (no leading zero), `sig` as we encode it.
  if (!exact || !/^[1-9]\d{0,15}$/.test(exp) || !/^[A-Za-z0-9_-]{43}$/.test(sig)) {
    throw new ApiError("forbidden", "invalid signed URL");
  }
  const expiresAt = Number(exp);
  if (!(await macMatches(secret, message(mediaId, expiresAt), sig))) throw new ApiError("forbidden", "invalid signed URL");
  if (expiresAt <= now || expiresAt > now + maxLifetimeMs) throw new ApiError("forbidden", "signed URL expired");
  return { expiresAt };
}

/** A ref with a fresh signed URL, valid `ttlSeconds` (the setting by default, at most 7 days). */
export async function withUrl(ref: MediaRef, origin: string, settings: MediaSettings, ttlSeconds?: number): Promise<MediaInfo> {
  const ttl = Math.min(ttlSeconds ?? settings.urlTtlSeconds, MEDIA_LIMITS.urlTtlMaxSeconds);
  const urlExpiresAt = Date.now() + ttl * 1000;
  return { ...ref, url: await signMediaUrl(origin, ref.id, urlExpiresAt, requireSecret("MEDIA_URL_SECRET", settings.urlSecret)), urlExpiresAt };
}
