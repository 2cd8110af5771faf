#!/usr/bin/env node
// `npm run deploy [-- <extra wrangler deploy args>]`: deploy to the Cloudflare account wrangler
// is logged in to (`npx wrangler login`, or CLOUDFLARE_API_TOKEN + CLOUDFLARE_ACCOUNT_ID).
//
// wrangler.toml names the D1 databases (one per shard), R2 bucket and queues but has no ids: `wrangler deploy`
// provisions them on the first deploy (and writes nothing secret). So:
//   - first deploy (the D1 databases do not exist yet): deploy, then apply the D1 migrations to each;
//   - later deploys: apply the D1 migrations to each first, then deploy the code that needs them.
// Before deploying, every secret the app reads must exist on the Worker.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { LOCAL_SECRETS } from "./dev-vars.ts";
import { d1Databases } from "./lib/d1Databases.ts";

/** Secrets that must be set on the deployed Worker (the same names `npm run dev` generates locally). */
export const REQUIRED_SECRETS = Object.keys(LOCAL_SECRETS);

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const env = { ...process.env, WRANGLER_SEND_METRICS: "false" };

/** Runs `npx wrangler ...args`; with `capture`, stdout is returned instead of shown. */
function wrangler(args: string[], { capture = false, quiet = false } = {}): { ok: boolean; status: number; stdout: string; stderr: string } {
  console.log(`\n$ npx wrangler ${args.join(" ")}`);
  const result = spawnSync("npx", ["wrangler", ...args], {
    cwd: ROOT,
    env,
    encoding: "utf8",
    stdio: ["inherit", capture ? "pipe" : "inherit", quiet ? "pipe" : "inherit"],
  });
  if (result.error) fail(`could not run npx wrangler: ${result.error.message}`);
  return { ok: result.status === 0, status: result.status ?? 1, stdout: result.stdout ?? "", stderr: result.stderr ?? "" };
}

function run(args: string[]): void {
  const result = wrangler(args);
  if (!result.ok) fail(`\`npx wrangler ${args.join(" ")}\` failed (exit ${result.status}).`, result.status);
}

function fail(message: string, status = 1): never {
  console.error(`\ndeploy: ${message}`);
  process.exit(status);
}

/** What is read of `wrangler whoami --json`. */
interface WhoAmI {
  loggedIn?: boolean;
  email?: string;
  accounts?: { name: string; id: string }[];
}

function checkLogin(): void {
  const whoami = wrangler(["whoami", "--json"], { capture: true });
  let info: WhoAmI | null = null;
  try {
    info = JSON.parse(whoami.stdout) as WhoAmI;
  } catch {
    // not JSON: treated as not logged in below
  }
  if (!whoami.ok || !info?.loggedIn) {
    fail(
      "wrangler is not authenticated with Cloudflare.\n" +
        "  Run `npx wrangler login` (interactive), or set CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID\n" +
        "  (an API token with Workers Scripts, D1, R2 and Queues edit permissions), then run `npm run deploy` again.",
    );
  }
  const who = info.email ?? "an API token";
  const accounts = (info.accounts ?? []).map((a) => `${a.name} (${a.id})`).join(", ");
  console.log(`Logged in as ${who}${accounts ? `; accounts: ${accounts}` : ""}`);
}

function checkSecrets(): void {
  if (REQUIRED_SECRETS.length === 0) {
    console.log("\nNo secrets required.");
    return;
  }
  const list = wrangler(["secret", "list", "--format", "json"], { capture: true });
  let present = new Set<string>();
  if (list.ok) {
    try {
      present = new Set((JSON.parse(list.stdout) as { name: string }[]).map((s) => s.name));
    } catch {
      fail(`could not read \`wrangler secret list\` output:\n${list.stdout}`);
    }
  } else {
    console.warn("Could not list the Worker's secrets (on a first deploy the Worker does not exist yet).");
  }
  const missing = REQUIRED_SECRETS.filter((name) => !present.has(name));
  if (missing.length > 0) {
    fail(
      `missing secret${missing.length > 1 ? "s" : ""} on the deployed Worker: ${missing.join(", ")}\n` +
        "  Set each one (wrangler prompts for the value), then run `npm run deploy` again:\n" +
        missing.map((name) => `    npx wrangler secret put ${name}`).join("\n"),
    );
  }
  console.log(`All ${REQUIRED_SECRETS.length} required secrets are set.`);
}

/** Signed media URLs are built on PUBLIC_ORIGIN; left empty they would name 127.0.0.1:8787. */
function checkPublicOrigin(deployArgs: string[]): void {
  const configured = /^\s*PUBLIC_ORIGIN\s*=\s*"([^"]*)"/m.exec(readFileSync(join(ROOT, "wrangler.toml"), "utf8"))?.[1] ?? "";
  if (configured === "" && !deployArgs.some((a) => a.startsWith("PUBLIC_ORIGIN:"))) {
    console.warn(
      "\nPUBLIC_ORIGIN is empty: media URLs would name http://127.0.0.1:8787. Set it in wrangler.toml [vars],\n" +
        "  or deploy with `npm run deploy -- --var PUBLIC_ORIGIN:https://chat.example.com` (or set it in the dashboard).",
    );
  }
}

function main(): void {
  const deployArgs = process.argv.slice(2);

  checkLogin();
  checkSecrets();
  checkPublicOrigin(deployArgs);

  // The D1 shards are created together by the first deploy; the first one tells which this is.
  const shards = d1Databases();
  const first = shards[0];
  if (!first) fail("wrangler.toml has no [[d1_databases]].");
  const migrateAll = () => {
    for (const { binding } of shards) run(["d1", "migrations", "apply", binding, "--remote"]);
  };
  const info = wrangler(["d1", "info", first.databaseName, "--json"], { capture: true, quiet: true });
  if (info.ok) {
    console.log(`D1 database ${first.databaseName} exists: applying migrations to the ${shards.length} shards first, then deploying.`);
    migrateAll();
    run(["deploy", ...deployArgs]);
  } else if (/couldn'?t find/i.test(`${info.stdout}\n${info.stderr}`)) {
    console.log(`D1 database ${first.databaseName} not found: first deploy. Deploying (wrangler creates the ${shards.length} D1 shards, R2 and queues), then applying migrations.`);
    run(["deploy", ...deployArgs]);
    migrateAll();
  } else {
    fail(
      `could not look up the D1 database ${first.databaseName} (so whether this is a first deploy is unknown):\n` +
        `${info.stdout}${info.stderr}\n  Fix the cause above and run \`npm run deploy\` again.`,
      info.status,
    );
  }
  console.log("\ndeploy: done.");
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
