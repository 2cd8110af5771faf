#!/usr/bin/env node
// Builds the web client into web/dist unless it is already newer than everything it is built
// from. Several people and processes share one working tree: a `vite build` empties web/dist
// while it runs, which a `wrangler dev` already serving it would notice as missing files, so
// `npm run dev` and the test scripts rebuild only when something changed. `--force` always builds.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../../", import.meta.url).pathname;
const sources = ["web/src", "web/public", "web/index.html", "web/vite.config.ts", "protocol", "package-lock.json"];

function newest(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let max = st.mtimeMs;
  for (const name of readdirSync(path)) max = Math.max(max, newest(join(path, name)));
  return max;
}

const built = join(root, "web/dist/index.html");
const force = process.argv.includes("--force");
if (!force && existsSync(built) && statSync(built).mtimeMs > Math.max(...sources.map((s) => newest(join(root, s))))) {
  console.log("web/dist is up to date (npm run build:web -- --force rebuilds it)");
  process.exit(0);
}
const result = spawnSync("vite", ["build", "--config", "web/vite.config.ts"], { stdio: "inherit", cwd: root });
process.exit(result.status ?? 1);
