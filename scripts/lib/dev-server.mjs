// A local server for our harnesses (the smoke test, the browser tests, the benchmark): `npm run dev`
// (or any wrangler command) on free loopback ports, in its own process group so that stopping it
// stops npm, wrangler, esbuild and every workerd it started.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { signalGroup, stopGroup } from "./process-group.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Environment for every local server we start: no telemetry, no requests to Cloudflare. */
const DEV_SERVER_ENV = {
  WRANGLER_SEND_METRICS: "false",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
};

/**
 * `count` distinct free loopback ports: every listener stays open until all ports are known, so
 * no two are the same. Never 8787, the port `npm run dev` uses by default.
 */
export async function freePorts(count) {
  const listeners = [];
  try {
    while (listeners.length < count) {
      const listener = await new Promise((resolve, reject) => {
        const s = createServer();
        s.unref();
        s.once("error", reject);
        s.listen(0, "127.0.0.1", () => resolve(s));
      });
      listeners.push(listener);
    }
    const ports = listeners.map((s) => s.address().port);
    if (ports.includes(8787)) throw new Error("refusing port 8787");
    return ports;
  } finally {
    await Promise.all(listeners.map((s) => new Promise((r) => s.close(() => r()))));
  }
}

export class DevServer {
  /**
   * @param {object} o
   * @param {string} o.name label for errors
   * @param {string[]} o.args arguments of `command`
   * @param {string} [o.command] default `npm`
   * @param {string} [o.cwd]
   * @param {Record<string, string>} [o.env] added to this process's environment and DEV_SERVER_ENV
   * @param {(text: string) => void} [o.onOutput] every chunk the server prints (stdout and stderr)
   * @param {number} [o.keepLines] how many lines of output `tail` can show (default 400)
   */
  constructor(o) {
    this.name = o.name;
    this.command = o.command ?? "npm";
    this.args = o.args;
    this.cwd = o.cwd;
    this.env = o.env ?? {};
    this.onOutput = o.onOutput ?? (() => {});
    this.keepLines = o.keepLines ?? 400;
    this.output = [];
    this.exited = null;
    this.child = null;
  }

  /** Starts the process (again, after a stop; the output of each start is kept, up to keepLines). */
  spawn() {
    this.exited = null;
    const child = spawn(this.command, this.args, {
      cwd: this.cwd,
      detached: true, // its own process group (see stop)
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...DEV_SERVER_ENV, ...this.env },
    });
    this.child = child;
    const collect = (chunk) => {
      const text = chunk.toString();
      this.onOutput(text);
      this.output.push(...text.split("\n"));
      if (this.output.length > this.keepLines) this.output.splice(0, this.output.length - this.keepLines);
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    child.on("exit", (code, signal) => (this.exited ??= { code, signal }));
    child.on("error", (error) => (this.exited ??= { code: null, signal: null, error: String(error) }));
  }

  /**
   * Polls `ready()` until it is true; throws when the server exits first or `timeoutMs` passes.
   * A throw from `ready` (connection refused) counts as not ready yet.
   */
  async waitUntilReady(ready, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    let lastError = "no answer yet";
    while (Date.now() < deadline) {
      if (this.exited) throw new Error(`${this.name} exited early (${JSON.stringify(this.exited)})\n${this.tail()}`);
      try {
        if (await ready()) return;
        lastError = "not ready";
      } catch (err) {
        lastError = err?.cause?.code ?? err?.message ?? String(err);
      }
      await sleep(250);
    }
    throw new Error(`${this.name} did not answer within ${timeoutMs} ms (${lastError})\n${this.tail()}`);
  }

  /** The last `lines` non-empty lines it printed. */
  tail(lines = 60) {
    return this.output.filter((l) => l.trim() !== "").slice(-lines).join("\n");
  }

  /** SIGTERM to the whole process group, SIGKILL after a grace period (see stopGroup). */
  async stop(options) {
    if (!this.child?.pid) return;
    await stopGroup(this.child.pid, options);
  }

  /** Last resort when the harness itself is interrupted: synchronous, no waiting. */
  killNow() {
    if (this.child?.pid) signalGroup(this.child.pid, "SIGKILL");
  }
}
