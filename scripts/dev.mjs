#!/usr/bin/env node
// `npm run dev`: migrate the local D1 database, then run `wrangler dev` with local D1, R2,
// Durable Objects and Queues. Extra arguments pass through to wrangler, e.g.
//   npm run dev -- --port 8788 --var RATE_LIMIT_PER_SECOND:5
import { spawn, spawnSync } from "node:child_process";
import { ensureDevVars } from "./dev-vars.mjs";

const args = process.argv.slice(2);
const has = (flag) => args.some((a) => a === flag || a.startsWith(`${flag}=`));
const env = { WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", ...process.env };

ensureDevVars();

// The Worker serves the web client from web/dist (wrangler.toml [assets]): build it first
// (skipped when web/dist is newer than its sources).
const build = spawnSync("node", ["web/scripts/build.mjs"], { stdio: "inherit", env });
if (build.status !== 0) process.exit(build.status ?? 1);

// Local state is shared between the migration step and the server unless told otherwise.
const persist = [];
const persistIndex = args.findIndex((a) => a === "--persist-to" || a.startsWith("--persist-to="));
if (persistIndex >= 0) {
  persist.push(...(args[persistIndex].includes("=") ? [args[persistIndex]] : [args[persistIndex], args[persistIndex + 1]]));
}

const migrate = spawnSync("wrangler", ["d1", "migrations", "apply", "DB", "--local", ...persist], {
  stdio: "inherit",
  env,
});
if (migrate.status !== 0) process.exit(migrate.status ?? 1);

const defaults = [];
if (!has("--ip")) defaults.push("--ip", "127.0.0.1");
if (!has("--port")) defaults.push("--port", "8787");
// Signed media URLs name the app's origin (PUBLIC_ORIGIN), never the request's Host header.
if (!args.some((a) => a.startsWith("PUBLIC_ORIGIN:"))) {
  const value = (flag, fallback) => {
    const i = [...defaults, ...args].findIndex((a) => a === flag || a.startsWith(`${flag}=`));
    if (i < 0) return fallback;
    const all = [...defaults, ...args];
    return all[i].includes("=") ? all[i].slice(all[i].indexOf("=") + 1) : all[i + 1];
  };
  defaults.push("--var", `PUBLIC_ORIGIN:http://${value("--ip", "127.0.0.1")}:${value("--port", "8787")}`);
}
const dev = spawn("wrangler", ["dev", ...defaults, ...args], { stdio: "inherit", env });
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => dev.kill(signal));
dev.on("exit", (code) => process.exit(code ?? 0));
