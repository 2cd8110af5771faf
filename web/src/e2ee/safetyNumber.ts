// Safety numbers (docs/e2ee.md "Safety numbers"): the 60 digits two users compare to know that
// the devices they encrypt to are each other's. Plain WebCrypto, no MLS library, so the client
// loads this without ts-mls (engine.ts re-exports it for the tests of the engine).

const FINGERPRINT_ITERATIONS = 5200;

/**
 * One user's half of a safety number: Signal's numeric fingerprint (version 0, iterated SHA-512)
 * over the user's device signature keys, sorted bytewise and concatenated, with the user id as
 * the stable identifier. 30 digits.
 */
export async function fingerprintHalf(userId: string, deviceKeys: Uint8Array[]): Promise<string> {
  const keys = [...deviceKeys].sort(compareBytes);
  const key = concat(...keys);
  let hash = concat(new Uint8Array([0, 0]), key, new TextEncoder().encode(userId));
  for (let i = 0; i < FINGERPRINT_ITERATIONS; i++) {
    hash = new Uint8Array(await crypto.subtle.digest("SHA-512", concat(hash, key)));
  }
  let digits = "";
  for (let chunk = 0; chunk < 6; chunk++) {
    let value = 0;
    for (let i = 0; i < 5; i++) value = value * 256 + hash[chunk * 5 + i]!;
    digits += String(value % 100000).padStart(5, "0");
  }
  return digits;
}

/** The 60 digits of two halves: the smaller first, so both users see the same. */
export function joinHalves(a: string, b: string): string {
  return a < b ? a + b : b + a;
}

/** The 60-digit number two users compare: both halves, the numerically smaller first, so both see the same. */
export async function safetyNumber(a: { userId: string; keys: Uint8Array[] }, b: { userId: string; keys: Uint8Array[] }): Promise<string> {
  const [x, y] = await Promise.all([fingerprintHalf(a.userId, a.keys), fingerprintHalf(b.userId, b.keys)]);
  return joinHalves(x, y);
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
