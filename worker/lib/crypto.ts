// Passwords, tokens and ids: everything here uses WebCrypto only.

const encoder = new TextEncoder();

/** workerd rejects PBKDF2 above 100,000 iterations, so that is both the cap and our choice. */
export const PBKDF2_ITERATIONS = 100_000;

export function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromBase64url(text: string): Uint8Array {
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function randomToken(bytes = 32): string {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** HMAC-SHA256 keys, imported once per isolate per secret (signed media URLs, socket tickets). */
const hmacKeys = new Map<string, Promise<CryptoKey>>();

export function hmacKey(secret: string): Promise<CryptoKey> {
  let key = hmacKeys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
    hmacKeys.set(secret, key);
  }
  return key;
}

export async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(text));
  return base64url(new Uint8Array(digest));
}

export async function hashPassword(
  password: string,
  salt: Uint8Array,
  iterations = PBKDF2_ITERATIONS,
): Promise<string> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(password), "PBKDF2", false, [
    "deriveBits",
  ]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    key,
    256,
  );
  return base64url(new Uint8Array(bits));
}

/** Compares two equal-length strings without an early exit, so timing reveals nothing. */
export function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * Whether `text` is exactly the base64url encoding of the HMAC-SHA256 of `data`, compared as text
 * in constant time. Decoding `text` and verifying the bytes would accept other spellings of the
 * same MAC (the bits a last character carries beyond the 256 are dropped by the decoder).
 */
export async function macMatches(secret: string, data: Uint8Array, text: string): Promise<boolean> {
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), data);
  return constantTimeEqual(base64url(new Uint8Array(mac)), text);
}
