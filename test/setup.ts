import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { d1Shards } from "../kernel/d1/shards";

// Every shard has the whole schema. Idempotent: applyD1Migrations records what it applied.
for (const database of d1Shards(env).all) await applyD1Migrations(database, env.TEST_MIGRATIONS);
