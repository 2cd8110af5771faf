// A small harness for the browser tests: a `wrangler dev` of our own on free loopback ports
// (started detached, stopped by process group), Debian's Chromium through playwright-core, and
// a sequential runner that prints one line per test and a final tally.
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { DevServer, freePorts } from "../scripts/lib/dev-server.ts";

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
  /** The folder of the server's local state: Durable Objects' SQLite, D1, R2. */
  stateDir: string;
  stop: () => Promise<void>;
  log: () => string;
}

/**
 * `npm run dev` (builds the client, migrates D1, runs wrangler dev) in its own process group, with
 * fresh state in a temp dir (scripts/lib/dev-server.ts); `extraArgs` go to wrangler.
 */
export async function startServer(extraArgs: string[] = []): Promise<Server> {
  const [port = 0, inspectorPort = 0] = await freePorts(2);
  const server = new DevServer({
    name: "wrangler dev",
    port,
    inspectorPort,
    args: extraArgs,
    localObservability: false,
    ready: async (base) => (await fetch(`${base}/`)).status === 200,
    keepLines: 2000,
  });
  await server.start(180_000);
  // localhost, not 127.0.0.1: a secure context for the service worker, push and IndexedDB.
  return { origin: `http://localhost:${port}`, port, stateDir: server.persistTo, stop: () => server.stop(), log: () => server.output.join("\n") };
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

/** `touch`: a phone's touch screen (no hover, a coarse pointer) rather than a mouse. */
export async function newPage(ctx: Ctx, viewport = { width: 1280, height: 800 }, touch = false): Promise<{ context: BrowserContext; page: Page }> {
  const context = await ctx.browser.newContext({ viewport, baseURL: ctx.server.origin, colorScheme: "light", timezoneId: "UTC", locale: "en-GB", hasTouch: touch });
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
    // BROWSER_TESTS=word runs only the tests whose name contains it (while iterating locally);
    // BROWSER_TESTS="one|two", those whose name contains either.
    const only = process.env.BROWSER_TESTS?.split("|").filter(Boolean);
    for (const test of only?.length ? tests.filter((t) => only.some((w) => t.name.includes(w))) : tests) {
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
