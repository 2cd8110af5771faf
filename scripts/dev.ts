#!/usr/bin/env node
// `npm run dev`: migrate the local D1 databases (its shards), then run `wrangler dev` with local D1, R2,
// Durable Objects and Queues. Extra arguments pass through to wrangler, e.g.
//   npm run dev -- --port 8788 --var RATE_LIMIT_PER_SECOND:5
import { spawn, spawnSync } from "node:child_process";
import { ensureDevVars } from "./dev-vars.ts";
import { d1Databases } from "./lib/d1Databases.ts";

const args = process.argv.slice(2);
const has = (flag: string) => args.some((a) => a === flag || a.startsWith(`${flag}=`));
const env = { WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", ...process.env };

ensureDevVars();

// The Worker serves the web client from web/dist (wrangler.toml [assets]): build it first
// (skipped when web/dist is newer than its sources).
const build = spawnSync("node", ["web/scripts/build.ts"], { stdio: "inherit", env });
if (build.status !== 0) process.exit(build.status ?? 1);

// Local state is shared between the migration step and the server unless told otherwise.
const persist: string[] = [];
const persistIndex = args.findIndex((a) => a === "--persist-to" || a.startsWith("--persist-to="));
const persistArg = args[persistIndex];
if (persistArg !== undefined) {
  persist.push(...(persistArg.includes("=") ? [persistArg] : [persistArg, args[persistIndex + 1] ?? ""]));
}

// Every D1 shard has the whole schema.
for (const { binding } of d1Databases()) {
  const migrate = spawnSync("wrangler", ["d1", "migrations", "apply", binding, "--local", ...persist], {
    stdio: "inherit",
    env,
  });
  if (migrate.status !== 0) process.exit(migrate.status ?? 1);
}

const defaults: string[] = [];
if (!has("--ip")) defaults.push("--ip", "127.0.0.1");
if (!has("--port")) defaults.push("--port", "8787");
// Signed media URLs name the app's origin (PUBLIC_ORIGIN), never the request's Host header.
if (!args.some((a) => a.startsWith("PUBLIC_ORIGIN:"))) {
  const all = [...defaults, ...args];
  const value = (flag: string, fallback: string): string => {
    const i = all.findIndex((a) => a === flag || a.startsWith(`${flag}=`));
    const found = all[i];
    if (found === undefined) return fallback;
    return found.includes("=") ? found.slice(found.indexOf("=") + 1) : (all[i + 1] ?? fallback);
  };
  defaults.push("--var", `PUBLIC_ORIGIN:http://${value("--ip", "127.0.0.1")}:${value("--port", "8787")}`);
}
// The caller's arguments first: a script given in place of wrangler.toml's `main` (the bench's
// targets) is positional, and after a default `--var` it would be taken as one more var.
const dev = spawn("wrangler", ["dev", ...args, ...defaults], { stdio: "inherit", env });
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => dev.kill(signal));
dev.on("exit", (code) => process.exit(code ?? 0));
