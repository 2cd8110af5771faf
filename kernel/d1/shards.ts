// D1 is split into D1_SHARDS databases, bound as DB_0 ... DB_<n-1>, every one with the whole
// schema (migrations/). A row lives on the shard its key hashes to (shardIndex), and no query
// joins rows of two shards:
//   - the directory, by user: the user's row, devices and push subscriptions, and the media items
//     they uploaded with their parts and shares. A user's id is drawn so that it hashes to the
//     shard of the lower-cased username, and the ids of their devices and media items so that they
//     hash to the user's shard (idOnShardOf): then the username, or any of those ids alone, names
//     the shard, and the unique index on usernames is enforced by one database.
//   - each conversation's rows, by conversation id: conversations, members, former_members,
//     messages and their search index, hidden_messages.
// The hash is taken modulo the shard count, so the count is fixed at the first deploy (docs/scale.md).
import { newId } from "../ids";

/** FNV-1a (32 bits) of the key's UTF-16 code units, modulo `count`: stable across runtimes and versions. */
export function shardIndex(key: string, count: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % count;
}

/** A fresh id that hashes to the same shard as `key` (about `count` draws of newId, each ~1 µs). */
export function idOnShardOf(key: string, count: number, now = Date.now()): string {
  const wanted = shardIndex(key, count);
  for (;;) {
    const id = newId(now);
    if (shardIndex(id, count) === wanted) return id;
  }
}

/** `keys` grouped by what `shardOf` answers for each, each group in the order given. */
export function groupByShard<D, K extends string>(keys: Iterable<K>, shardOf: (key: K) => D): Map<D, K[]> {
  const groups = new Map<D, K[]>();
  for (const key of keys) {
    const shard = shardOf(key);
    const list = groups.get(shard);
    if (list) list.push(key);
    else groups.set(shard, [key]);
  }
  return groups;
}

/** D1 binds at most 100 values in one statement: a query takes this many keys, leaving room for others. */
const KEYS_PER_QUERY = 90;

/**
 * `query` on each shard for its share of `keys` (duplicates dropped), at most KEYS_PER_QUERY keys
 * a call, every shard at once; the rows of all, shard after shard.
 */
export async function queryByShard<D, T>(keys: Iterable<string>, shardOf: (key: string) => D, query: (shard: D, keys: string[]) => Promise<T[]>): Promise<T[]> {
  const perShard = await Promise.all(
    [...groupByShard(new Set(keys), shardOf)].map(async ([shard, onShard]) => {
      const rows: T[] = [];
      for (let i = 0; i < onShard.length; i += KEYS_PER_QUERY) rows.push(...(await query(shard, onShard.slice(i, i + KEYS_PER_QUERY))));
      return rows;
    }),
  );
  return perShard.flat();
}

/** The shards, in binding order, and where each key's rows are (D: a D1 binding; anything in a unit test). */
export class D1Shards<D = D1Database> {
  constructor(readonly all: readonly D[]) {
    if (all.length === 0) throw new Error("no D1 shard");
  }

  get count(): number {
    return this.all.length;
  }

  /** The database holding the rows keyed by `key` (a user, device, media or conversation id, or a lower-cased username). */
  of(key: string): D {
    return this.all[shardIndex(key, this.all.length)]!;
  }

  /** `keys` grouped by the database holding them, each group in the order given. */
  group<K extends string>(keys: Iterable<K>): Map<D, K[]> {
    return groupByShard(keys, (key) => this.of(key));
  }

  /** `query` on each shard for its share of `keys` (queryByShard). */
  query<T>(keys: Iterable<string>, query: (shard: D, keys: string[]) => Promise<T[]>): Promise<T[]> {
    return queryByShard(keys, (key) => this.of(key), query);
  }

  /** A fresh id on the same shard as `key`. */
  idBeside(key: string): string {
    return idOnShardOf(key, this.all.length);
  }
}

function isD1(value: unknown): value is D1Database {
  return typeof value === "object" && value !== null && "prepare" in value && "batch" in value;
}

const cache = new WeakMap<object, D1Shards>();

/** The deployment's shards: D1_SHARDS (default 1) bindings named DB_0, DB_1, ...; a missing one is a configuration error. */
export function d1Shards(env: Pick<Env, "D1_SHARDS">): D1Shards {
  const cached = cache.get(env);
  if (cached) return cached;
  const count = Number(env.D1_SHARDS || "1");
  if (!Number.isInteger(count) || count < 1) throw new Error(`D1_SHARDS must be a positive integer, not "${env.D1_SHARDS}"`);
  const all: D1Database[] = [];
  for (let i = 0; i < count; i++) {
    const binding: unknown = Reflect.get(env, `DB_${i}`);
    if (!isD1(binding)) throw new Error(`D1_SHARDS is ${count} but there is no D1 binding DB_${i} (wrangler.toml)`);
    all.push(binding);
  }
  const shards = new D1Shards(all);
  cache.set(env, shards);
  return shards;
}
