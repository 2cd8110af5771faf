import { drizzle, type DrizzleD1Database } from "drizzle-orm/d1";
import * as schema from "./schema";
import { d1Shards } from "./shards";

type Db = DrizzleD1Database<typeof schema>;

// One instance per D1 binding, made on first use: making one builds the schema's relational
// config (about 30 µs), 5-9% of the push queue consumer's CPU if made per query.
// The instance holds nothing but the binding and that config, so requests can share it.
const instances = new WeakMap<D1Database, Db>();

/** Drizzle over one D1 database (one shard). */
export function drizzleOf(database: D1Database): Db {
  let instance = instances.get(database);
  if (!instance) {
    instance = drizzle(database, { schema });
    instances.set(database, instance);
  }
  return instance;
}

/** Drizzle over the shard holding the rows keyed by `key` (kernel/d1/shards.ts). */
export function db(env: Env, key: string): Db {
  return drizzleOf(d1Shards(env).of(key));
}

export { schema };
