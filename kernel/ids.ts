// Sortable ids (ULID format: 48-bit millisecond time + 80 random bits, Crockford base 32).
//
// Our own lines rather than a library: random bytes are drawn 4 KiB at a time (one
// getRandomValues call per 256 ids), because a call per id, let alone per character as ULID
// libraries do, is a measurable share of a conversation object's CPU at 500 msg/s
// (docs/performance.md). Ids are not secrets (tokens come from randomToken), and the bytes are
// the platform's CSPRNG output either way.
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const POOL_BYTES = 4096;
const ID_RANDOM_BYTES = 16;

let pool = new Uint8Array(0);
let taken = 0;

export function newId(now = Date.now()): string {
  let time = "";
  for (let t = now, i = 0; i < 10; i++, t = Math.floor(t / 32)) time = ALPHABET[t % 32]! + time;
  // Drawn lazily: the runtime allows no random draw at module scope.
  if (taken + ID_RANDOM_BYTES > pool.length) {
    pool = crypto.getRandomValues(new Uint8Array(POOL_BYTES));
    taken = 0;
  }
  let rest = "";
  // 256 is a multiple of 32, so `& 31` is uniform.
  for (let i = taken; i < taken + ID_RANDOM_BYTES; i++) rest += ALPHABET[pool[i]! & 31]!;
  taken += ID_RANDOM_BYTES;
  return time + rest;
}
