// Bearer tokens, signed instead of stored:
//   s1.<keyId>.<userId>.<deviceId>.<sessionId>.<expiresAt>.<mac>
// the MAC an HMAC-SHA256 over a version tag and the five fields before it, under the key that
// `keyId` names. The Worker checks the MAC and the expiry without any database; what makes a token
// revocable is the user's object, which keeps the sessions that are live (a logout deletes its
// device's), so every request costs one call to the caller's own object and none to D1.
//
// Keys: SESSION_SECRET holds one key, or several separated by commas. The first signs; each
// verifies the tokens signed under it. A key's id is derived from the key (a MAC of a fixed
// label, 48 bits), so a token names the key to check it with and the secret needs no other
// configuration: to rotate, put the new key first and keep the old one after it for as long as
// the sessions it signed should live.
import type { Identity } from "../../kernel/identity";
import { base64url, hmacKey, macMatches, randomToken } from "./crypto";

const VERSION = "session-token-v1";
const KEY_ID_LABEL = "session-key-id-v1";
const encoder = new TextEncoder();
const ID = "[0-9A-Za-z_-]{1,64}";
const TOKEN = new RegExp(`^s1\\.([A-Za-z0-9_-]{8})\\.(${ID})\\.(${ID})\\.([A-Za-z0-9_-]{22})\\.([1-9]\\d{0,15})\\.([A-Za-z0-9_-]{43})$`);

/** What a verified token says: who, which of the user's sessions, and until when. */
export interface SessionClaims extends Identity {
  /** 16 random bytes, base64url: the session the user's object keeps while it is live. */
  sessionId: string;
  expiresAt: number;
}

/** The keys of SESSION_SECRET, the signing one first; empty when it is unset. */
export function sessionKeys(secret: string | null): string[] {
  return (secret ?? "")
    .split(",")
    .map((key) => key.trim())
    .filter(Boolean);
}

const keyIds = new Map<string, Promise<string>>();

/** A key's public name: the first 6 bytes of its MAC over a fixed label, base64url (8 characters). */
export function keyIdOf(key: string): Promise<string> {
  let id = keyIds.get(key);
  if (!id) {
    id = hmacKey(key)
      .then((k) => crypto.subtle.sign("HMAC", k, encoder.encode(KEY_ID_LABEL)))
      .then((mac) => base64url(new Uint8Array(mac).slice(0, 6)));
    keyIds.set(key, id);
  }
  return id;
}

const signed = (keyId: string, c: SessionClaims) =>
  encoder.encode(`${VERSION}\n${keyId}\n${c.userId}\n${c.deviceId}\n${c.sessionId}\n${c.expiresAt}`);

/** A new session for `identity` until `expiresAt`, and its token, signed with the first key. */
export async function mintSessionToken(identity: Identity, expiresAt: number, keys: string[]): Promise<{ token: string; claims: SessionClaims }> {
  const key = keys[0];
  if (!key) throw new Error("SESSION_SECRET is not set");
  const claims: SessionClaims = { userId: identity.userId, deviceId: identity.deviceId, sessionId: randomToken(16), expiresAt };
  const keyId = await keyIdOf(key);
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(key), signed(keyId, claims));
  const token = `s1.${keyId}.${claims.userId}.${claims.deviceId}.${claims.sessionId}.${expiresAt}.${base64url(new Uint8Array(mac))}`;
  return { token, claims };
}

/**
 * The claims of a token signed under one of `keys` that has not expired, else null: malformed,
 * an unknown key id, a MAC that is not the key's, expired, or signed for longer than the lifetime
 * allowed now (`maxLifetimeMs`, so lowering TOKEN_TTL_DAYS shortens the tokens already out).
 * Whether the session is still live is the user's object's to say.
 */
export async function verifySessionToken(text: string, keys: string[], now: number, maxLifetimeMs: number): Promise<SessionClaims | null> {
  const m = TOKEN.exec(text);
  if (!m) return null;
  const keyId = m[1]!;
  const claims: SessionClaims = { userId: m[2]!, deviceId: m[3]!, sessionId: m[4]!, expiresAt: Number(m[5]) };
  if (claims.expiresAt <= now || claims.expiresAt > now + maxLifetimeMs) return null;
  for (const key of keys) {
    if ((await keyIdOf(key)) !== keyId) continue;
    // The canonical form only: `expiresAt` without leading zeros (above), the MAC as we encode it.
    return (await macMatches(key, signed(keyId, claims), m[6]!)) ? claims : null;
  }
  return null;
}

/** The token of an `Authorization: Bearer` header, or null when there is none of a token's characters and length. */
export function bearerToken(header: string | undefined): string | null {
  return /^Bearer\s+([A-Za-z0-9._-]{16,512})$/.exec(header ?? "")?.[1] ?? null;
}
