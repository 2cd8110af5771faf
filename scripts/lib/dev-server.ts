// A local server for our harnesses (the smoke test, the browser tests, the benchmark): `npm run
// dev` (which builds the client, migrates D1 and runs `wrangler dev`) or a bare `wrangler dev -c
// <config>`, on free loopback ports with its own local state, in its own process group
// (`spawn(..., { detached: true })` is a setsid), so that stopping it stops npm, wrangler, esbuild
// and every workerd it started, not just the process at its top.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server as NetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Environment for every local server we start: no telemetry, no requests to Cloudflare. */
const DEV_SERVER_ENV = {
  WRANGLER_SEND_METRICS: "false",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
};

// --- Ports ---------------------------------------------------------------------------------------

/**
 * `count` distinct free loopback ports: every listener stays open until all ports are known, so
 * no two are the same. Never 8787, the port `npm run dev` uses by default.
 */
export async function freePorts(count: number): Promise<number[]> {
  const listeners: NetServer[] = [];
  try {
    while (listeners.length < count) {
      const listener = await new Promise<NetServer>((resolve, reject) => {
        const s = createServer();
        s.unref();
        s.once("error", reject);
        s.listen(0, "127.0.0.1", () => resolve(s));
      });
      listeners.push(listener);
    }
    const ports = listeners.map((s) => {
      const address = s.address();
      if (address === null || typeof address === "string") throw new Error("a TCP listener without a port");
      return address.port;
    });
    if (ports.includes(8787)) throw new Error("refusing port 8787");
    return ports;
  } finally {
    await Promise.all(listeners.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

// --- Process groups ------------------------------------------------------------------------------

function errorCode(err: unknown): unknown {
  return typeof err === "object" && err !== null && "code" in err ? err.code : undefined;
}

/** Sends `signal` to process group `pgid`; a group that is already gone is not an error. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (err) {
    if (errorCode(err) !== "ESRCH") throw err;
  }
}

export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface StopOptions {
  /** How long the group has after SIGTERM before SIGKILL (default 5 s). */
  graceMs?: number;
  /** How long to wait for the group to go after SIGKILL (default 3 s). */
  killWaitMs?: number;
  /** Told before the SIGKILL. */
  onKill?: () => void;
}

/**
 * SIGTERM to the group, SIGKILL after `graceMs` if anything is left (`onKill` is told first),
 * then waits up to `killWaitMs` for the group to go.
 */
export async function stopGroup(pgid: number, { graceMs = 5_000, killWaitMs = 3_000, onKill = () => {} }: StopOptions = {}): Promise<void> {
  signalGroup(pgid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (groupAlive(pgid) && Date.now() < deadline) await sleep(100);
  if (!groupAlive(pgid)) return;
  onKill();
  signalGroup(pgid, "SIGKILL");
  const killDeadline = Date.now() + killWaitMs;
  while (groupAlive(pgid) && Date.now() < killDeadline) await sleep(50);
}

export interface GroupProcess {
  pid: number;
  /** The command name (/proc/PID/comm, at most 15 characters). */
  name: string;
  /** The arguments joined by spaces. */
  cmdline: string;
}

/** The processes of process group `pgid`, from /proc. */
export function groupProcesses(pgid: number): GroupProcess[] {
  const found: GroupProcess[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the last ")".
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) !== pgid) continue;
      found.push({
        pid: Number(entry),
        name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")),
        cmdline: readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " "),
      });
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/** Resident memory of a process in KiB, or null when it is gone. */
export function rssKiB(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

// --- The server ----------------------------------------------------------------------------------

/** The Worker of the app answers: GET /me without a token is a JSON 401. */
export async function appAnswers(base: string): Promise<boolean> {
  const res = await fetch(`${base}/me`, { signal: AbortSignal.timeout(2_000) });
  const body = await res.text();
  return res.status === 401 && body.includes('"unauthorized"');
}

export interface DevServerOptions {
  /** Label for errors and logs. */
  name: string;
  /** Where wrangler serves the Worker (127.0.0.1) and its inspector. */
  port: number;
  inspectorPort: number;
  /**
   * A wrangler config to run with a bare `npx wrangler dev -c <config>`; without it the app runs
   * through `npm run dev` (web client build, D1 migrations, then wrangler dev).
   */
  config?: string;
  /** The app's entry Worker instead of wrangler.toml's `main` (e.g. bench/alone/worker.ts). */
  script?: string;
  /** Local state (D1, R2, Durable Objects); default a fresh temp dir under `stateDir`, removed by stop. */
  persistTo?: string;
  /** Where the fresh temp dir goes when `persistTo` is not given (default the system's temp dir). */
  stateDir?: string;
  /** Settings as KEY:VALUE, each passed as `--var KEY:VALUE`. */
  vars?: string[];
  /** More wrangler arguments. */
  args?: string[];
  /** Local tracing (X_LOCAL_OBSERVABILITY); off makes storage-heavy code about 10x faster. Default on. */
  localObservability?: boolean;
  /** Added to this process's environment and DEV_SERVER_ENV. */
  env?: Record<string, string>;
  /** Default the current directory (the repository's root, as npm runs our scripts). */
  cwd?: string;
  /** Whether the server is ready at this base URL; a throw counts as not yet. Default `appAnswers`. */
  ready?: (base: string) => Promise<boolean>;
  /** Every chunk the server prints (stdout and stderr). */
  onOutput?: (text: string) => void;
  /** How many lines of output `output` keeps (default 400). */
  keepLines?: number;
}

export interface Exited {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: string;
}

export class DevServer {
  readonly name: string;
  readonly port: number;
  readonly inspectorPort: number;
  /** http://127.0.0.1:PORT and ws://127.0.0.1:PORT */
  readonly base: string;
  readonly wsBase: string;
  /** Where its local state is. */
  readonly persistTo: string;
  readonly command: string;
  readonly args: string[];
  readonly ready: (base: string) => Promise<boolean>;
  /** The last `keepLines` lines it printed, over every start. */
  output: string[] = [];
  exited: Exited | null = null;
  child: ChildProcess | null = null;
  /** Whether the group is stopped by `pause`. */
  paused = false;
  private readonly ownsState: boolean;
  private readonly options: DevServerOptions;

  constructor(options: DevServerOptions) {
    this.options = options;
    this.name = options.name;
    this.port = options.port;
    this.inspectorPort = options.inspectorPort;
    this.base = `http://127.0.0.1:${options.port}`;
    this.wsBase = `ws://127.0.0.1:${options.port}`;
    this.ownsState = options.persistTo === undefined;
    this.persistTo = options.persistTo ?? mkdtempSync(join(options.stateDir ?? tmpdir(), `edge-chat-${options.name.replace(/\W+/g, "-")}-`));
    this.ready = options.ready ?? appAnswers;
    const wranglerArgs = [
      ...(options.script ? [options.script] : []),
      "--ip",
      "127.0.0.1",
      "--port",
      String(options.port),
      "--inspector-port",
      String(options.inspectorPort),
      "--persist-to",
      this.persistTo,
      ...(options.vars ?? []).flatMap((v) => ["--var", v]),
      ...(options.args ?? []),
    ];
    [this.command, this.args] = options.config
      ? ["npx", ["wrangler", "dev", "-c", options.config, ...wranglerArgs]]
      : ["npm", ["run", "dev", "--", ...wranglerArgs]];
  }

  /** The process group's id (its first process's pid), while it was started. */
  get pgid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the process (again, after a stop; the output of each start is kept, up to keepLines). */
  spawn(): void {
    this.exited = null;
    this.paused = false;
    const { env, localObservability, cwd, onOutput } = this.options;
    const child = spawn(this.command, this.args, {
      cwd,
      detached: true, // its own process group (see stop)
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        ...DEV_SERVER_ENV,
        ...(localObservability === false ? { X_LOCAL_OBSERVABILITY: "false" } : {}),
        ...env,
      },
    });
    this.child = child;
    const keepLines = this.options.keepLines ?? 400;
    const collect = (chunk: Buffer) => {
      const text = chunk.toString();
      onOutput?.(text);
      this.output.push(...text.split("\n"));
      if (this.output.length > keepLines) this.output.splice(0, this.output.length - keepLines);
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    child.on("exit", (code, signal) => (this.exited ??= { code, signal }));
    child.on("error", (error) => (this.exited ??= { code: null, signal: null, error: String(error) }));
  }

  /** Spawns the server and waits until it is ready (see waitUntilReady); stops it if it never is. */
  async start(timeoutMs = 90_000): Promise<void> {
    this.spawn();
    try {
      await this.waitUntilReady(() => this.ready(this.base), timeoutMs);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /**
   * Polls `ready()` until it is true; throws when the server exits first or `timeoutMs` passes.
   * A throw from `ready` (connection refused) counts as not ready yet.
   */
  async waitUntilReady(ready: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError = "no answer yet";
    while (Date.now() < deadline) {
      if (this.exited) throw new Error(`${this.name} exited early (${JSON.stringify(this.exited)})\n${this.tail()}`);
      try {
        if (await ready()) return;
        lastError = "not ready";
      } catch (err) {
        const cause = err instanceof Error ? errorCode(err.cause) : undefined;
        lastError = typeof cause === "string" ? cause : err instanceof Error ? err.message : String(err);
      }
      await sleep(250);
    }
    throw new Error(`${this.name} did not answer within ${timeoutMs} ms (${lastError})\n${this.tail()}`);
  }

  /** The last `lines` non-empty lines it printed. */
  tail(lines = 60): string {
    return this.output
      .filter((l) => l.trim() !== "")
      .slice(-lines)
      .join("\n");
  }

  /** Whether anything of its process group still runs. */
  alive(): boolean {
    return this.pgid !== undefined && groupAlive(this.pgid);
  }

  /**
   * SIGTERM to the whole process group (resumed first if paused), SIGKILL after a grace period
   * (see stopGroup); then removes the temp dir of its state unless `keepState` (a restart).
   */
  async stop(options: StopOptions & { keepState?: boolean } = {}): Promise<void> {
    if (this.pgid !== undefined) {
      this.resume();
      await stopGroup(this.pgid, options);
    }
    if (this.ownsState && !options.keepState) rmSync(this.persistTo, { recursive: true, force: true });
  }

  /** Last resort when the harness itself is interrupted: synchronous, no waiting. */
  killNow(): void {
    if (this.pgid !== undefined) signalGroup(this.pgid, "SIGKILL");
    if (this.ownsState) rmSync(this.persistTo, { recursive: true, force: true });
  }

  /**
   * Stops the whole process group (SIGSTOP) until `resume`: the bench pauses every server but the
   * one it measures. An idle `wrangler dev` is not idle, its esbuild watcher polls the source tree
   * (~1-2% of a core, in bursts; workers-sdk#11469), and on two cores that landed in the measured
   * target's tail latency.
   */
  pause(): void {
    if (this.pgid === undefined || this.paused) return;
    signalGroup(this.pgid, "SIGSTOP");
    this.paused = true;
  }

  resume(): void {
    if (this.pgid === undefined || !this.paused) return;
    signalGroup(this.pgid, "SIGCONT");
    this.paused = false;
  }

  /** The processes in this server's process group. */
  groupProcesses(): GroupProcess[] {
    return this.pgid === undefined ? [] : groupProcesses(this.pgid);
  }
}
