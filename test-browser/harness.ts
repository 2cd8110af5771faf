// A small harness for the browser tests: a `wrangler dev` of our own on free loopback ports
// (started detached, stopped by process group), Debian's Chromium through playwright-core, and
// a sequential runner that prints one line per test and a final tally.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/** From TOOLCHAIN.md, plus fake media devices for voice notes. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
];

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitUntil<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 15_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ""}`);
    }
    await sleep(everyMs);
  }
}

export interface Server {
  origin: string;
  port: number;
  stop: () => Promise<void>;
  log: () => string;
}

/** `npm run dev` (builds the client, migrates D1, runs wrangler dev) in its own process group. */
export async function startServer(extraArgs: string[] = []): Promise<Server> {
  const port = await freePort();
  const inspector = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "edge-chat-browser-"));
  const logPath = join(dir, "server.log");
  const logFd = openSync(logPath, "w");
  const child: ChildProcess = spawn(
    "npm",
    ["run", "dev", "--", "--port", String(port), "--inspector-port", String(inspector), "--persist-to", join(dir, "state"), ...extraArgs],
    {
      detached: true,
      stdio: ["ignore", logFd, logFd],
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", X_LOCAL_OBSERVABILITY: "false" },
    },
  );
  const log = () => {
    try {
      return readFileSync(logPath, "utf8");
    } catch {
      return "";
    }
  };
  let exited = false;
  child.on("exit", () => {
    exited = true;
  });
  const stop = async () => {
    if (child.pid === undefined) return;
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      if (exited) break;
      try {
        process.kill(-child.pid, signal);
      } catch {
        break; // the group is gone
      }
      const deadline = Date.now() + 5000;
      while (!exited && Date.now() < deadline) await sleep(100);
    }
    // wrangler's workerd may outlive npm; the group kill reaches it, and this makes sure.
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  };
  // localhost, not 127.0.0.1: a secure context for the service worker, push and IndexedDB.
  const origin = `http://localhost:${port}`;
  try {
    await waitUntil(
      "wrangler dev to answer",
      async () => {
        if (exited) throw new Error(`server exited:\n${log().slice(-3000)}`);
        const res = await fetch(`http://127.0.0.1:${port}/`).catch(() => null);
        return res?.status === 200;
      },
      180_000,
      500,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { origin, port, stop, log };
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

export interface Ctx {
  server: Server;
  browser: Browser;
  /** Pages opened through `newUser`, closed after each test. */
  contexts: BrowserContext[];
  /** CSP violations and page errors seen in any page. */
  problems: string[];
}

export async function newPage(ctx: Ctx, viewport = { width: 1280, height: 800 }): Promise<{ context: BrowserContext; page: Page }> {
  const context = await ctx.browser.newContext({ viewport, baseURL: ctx.server.origin, colorScheme: "light", timezoneId: "UTC", locale: "en-GB" });
  context.setDefaultTimeout(15_000);
  context.setDefaultNavigationTimeout(30_000);
  ctx.contexts.push(context);
  const page = await context.newPage();
  watch(ctx, page);
  return { context, page };
}

export function watch(ctx: Ctx, page: Page): void {
  page.on("console", (msg) => {
    const text = msg.text();
    if (/Content Security Policy|Refused to/i.test(text)) ctx.problems.push(`CSP: ${text}`);
  });
  page.on("pageerror", (err) => ctx.problems.push(`page error: ${err.message}`));
}

export type Test = { name: string; fn: (ctx: Ctx) => Promise<void | "skipped"> };

/** Runs tests in order; each gets fresh contexts. Prints `browser: N passed, M failed[, K skipped]`. */
export async function run(tests: Test[], serverArgs: string[] = []): Promise<number> {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const t0 = Date.now();
  console.log(`browser tests: starting wrangler dev and ${CHROMIUM}`);
  const server = await startServer(serverArgs);
  let browser: Browser | null = null;
  try {
    browser = await launchBrowser();
    console.log(`browser tests: ${server.origin}, Chromium ${browser.version()}`);
    // BROWSER_TESTS=word runs only the tests whose name contains it (while iterating locally).
    const only = process.env.BROWSER_TESTS;
    for (const test of only ? tests.filter((t) => t.name.includes(only)) : tests) {
      const ctx: Ctx = { server, browser, contexts: [], problems: [] };
      const start = Date.now();
      try {
        const result = await test.fn(ctx);
        if (ctx.problems.length > 0) throw new Error(`problems in the page:\n  ${ctx.problems.join("\n  ")}`);
        if (result === "skipped") {
          skipped++;
          console.log(`- skip ${test.name}`);
        } else {
          passed++;
          console.log(`ok ${test.name} (${Date.now() - start} ms)`);
        }
      } catch (err) {
        failed++;
        console.log(`FAIL ${test.name} (${Date.now() - start} ms)\n  ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      } finally {
        for (const c of ctx.contexts) await c.close().catch(() => undefined);
      }
    }
  } finally {
    await browser?.close().catch(() => undefined);
    if (failed > 0) console.log(`--- server log (tail) ---\n${server.log().slice(-4000)}`);
    await server.stop();
  }
  console.log(`browser: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped (server part missing)` : ""} in ${Math.round((Date.now() - t0) / 1000)} s`);
  return failed;
}
