#!/usr/bin/env node
// `npm run bench`: the app and a bare broadcast baseline (bench/baseline/), side by side in one
// run on the same runtime, driven over loopback by WebSocket clients in this process. S1 and S2
// also run two more baselines from bench/baseline: "relay" (the broadcast plus the relay to every
// member's user socket that the contract requires) and "store" (one SQLite insert per message),
// and "alone": the app with D1 and users' objects answering at once (bench/alone/worker.ts).
// With --before DIR they also run "before": the app of another checkout (an earlier commit), so a
// change is measured against what it changes in the same run, on the same host.
//
//   npm run bench                          every scenario, 3 runs each (about 30 minutes)
//   npm run bench -- --only S2 --runs 1    one scenario, one run
//   npm run bench -- --quick               short windows and small counts, to try the harness
//
// S6 (not in the issue's list) checks that a send costs no more in a conversation with a long
// history: S2's load in a group already holding --s6-messages messages, against a fresh group.
// S7 is S2's load in an end-to-end encrypted group against a plaintext one, alternating; S8 the
// client's MLS engine alone (web/src/e2ee/engine.ts under Node, no server): groups of
// --s8-sizes devices made, a commit processed, a message encrypted and decrypted, beside a
// plaintext client's JSON encoding of the same message.
//
// S9 and S10 (issue 31) run against the "counted" server, the app as bench/counted/worker.ts, which
// writes down every D1 query it makes: S9 counts the D1 queries a message sent and an authenticated
// request wait for and leave behind, D1 writes per message through the outbox, and compares an
// authenticated request with the app's signed token against the D1 token lookup it replaced; S10 is
// a user in --s10-conversations conversations (100 and 1,000) syncing after a day away and reading
// the conversation list: time, D1 queries and rows per page (bench/lib/d1load.ts).
//
// Flags: --only S1,S2,S3,S4,S5,S6,S7,S8,S9,S10  --runs N  --quick  --s4-messages N  --s5-sockets N  --s5-via-proxy  --s5-bearer
//        --s6-messages N (S6's history)  --s7-ciphertexts N (S7's pool per group)
//        --s8-sizes 10,100,1000  --s8-messages N (S8's messages encrypted and decrypted per size)
//        --s9-requests N (S9's auth comparison: requests of each kind at each concurrency)
//        --s9-burst N (S9's messages per group for the outbox's D1 writes)
//        --s10-conversations 100,1000  --s10-messages N (per conversation)  --s10-limit N (sync page)
//        --s1-rates 200,500,1000  --window N (S2 unacked window)
//        --receipt-ms N (0: receivers send no receipts)
//        --alone-answers d1: the alone server answers only D1 at once, its users' objects are real
//        --before DIR: S1 and S2 also run the app from DIR, a checkout of an earlier commit with its
//        node_modules (`git worktree add DIR <commit> && ln -s "$PWD/node_modules" DIR/node_modules`),
//        as a column "before", measured right beside the app in every run
//        --no-baseline  --no-alone  --no-media  --out FILE (JSON results; default bench/results/<time>.json)
//        --render FILE: print the table of a saved results file again, and run nothing
//        --var KEY:VALUE  another app setting for this run (repeatable), e.g. --var BATCH_DELAY_MS:0
//        --profile: CPU-profile the app's (and alone's) isolate during each S1 rate, S2 and S6
//        window, S4 run and S5 resume, save the .cpuprofile under bench/results/ and print the top
//        functions
//        --gc: during each S1 rate, watch every target's garbage collector (bench/lib/gc.ts) and
//        print its major GCs beside the stalls the receivers saw
//        --gc-pauses: during each S1 rate, sample every target's runtime main thread with Linux
//        `perf` (bench/lib/perf.ts) and add the major GC pauses in its window to the table
//        --trace: run the app as bench/traced/worker.ts, which records when its conversation object
//        took each frame and when its deferred passes ran, and print that beside each S1 stall
//        (bench/lib/trace.ts)
//        --via-proxy: every scenario through wrangler's proxy port, as before (see below)
//        --s5-via-proxy: S5 only through wrangler's proxy port (fails above ~4,400 sockets, see below)
//        --s5-bearer: S5's app sockets send the bearer token in the handshake instead of taking a
//        single-use ticket first (POST /auth/ticket, then ?ticket=) as the web client does
//        --state-dir DIR: where the servers keep local D1 and Durable Object state (default
//        /dev/shm, a tmpfs, where there is one; see below)
// BENCH_VERBOSE=1 streams the servers' output.
//
// Every server runs under `wrangler dev` with local observability off (X_LOCAL_OBSERVABILITY=false:
// its per-event trace spans cost about 10x on storage) and the app's rate limit raised with --var,
// which would otherwise cap a single sender at 20 messages/s. Everything started is stopped at the end.
//
// Every scenario's sockets and requests go straight to each runtime's own entry socket, not to
// wrangler's proxy port. The proxy does not exist in a deployment: it is a second workerd process
// that relays every frame, on the same two cores. Through it S1's bare broadcast had about twice
// the p99 at 500 msg/s (6.9 ms against 3.3 straight, two invocations minutes apart). And it holds
// ~4.5 file descriptors per relayed WebSocket, so under this machine's 20,000 open-file limit
// (`ulimit -n`, hard limit too) S5 ran out at ~4,400-4,600 of the 5,000 sockets and dropped every
// connection ("Error: socket hang up" / "read ECONNRESET at TCP.onStreamRead"). Setup (users,
// groups, seeding) still goes through the proxy.
//
// S5 reads memory per socket four ways: the runtime process's RSS as the
// sockets connect; its isolate's live JavaScript heap after a full GC (through the inspector),
// which is what the code itself holds; the RSS the runtime adds when every socket is dropped
// and reconnects (which reuses what the dropped sockets held); and the
// RSS a second set of sockets (half as many) adds while the first stays open, which is what an
// open idle socket keeps (what connecting used and freed is reused; what a socket holds is not).
// Local state goes to a tmpfs by default: locally each SQLite commit's fsync runs on the
// runtime's one thread, and on this machine's disk those stalled for tens of ms while other
// writes were flushed (S1 at 500 msg/s, 5 runs each: app p99 25.2 ms on disk, 9.4 on tmpfs).
// In a deployment storage is not flushed on the object's thread. A Worker reload by wrangler (a
// source file changed on disk mid-run) is detected and flagged in the table: it drops every socket
// and restarts the runtime's memory.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { registerUsers, createGroup, type Conversation, type RetryStats, type User } from "./lib/clients.ts";
import { freePorts, Server } from "./lib/proc.ts";
import { Inspector, busySamples, summarize } from "./lib/inspector.ts";
import { gcReport, gcWatcher, type GcWatcher } from "./lib/gc.ts";
import { traceHooks, traceReport, type Trace } from "./lib/trace.ts";
import { gcPausesIn, perfInstalled, threadSampler, type ThreadSampler } from "./lib/perf.ts";
import { e2eeGroups, mlsCosts } from "./lib/mls.ts";
import { s9, s10, seedMany, type AuthCost, type AuthKind, type S10Seed } from "./lib/d1load.ts";
import type { D1Totals } from "./lib/d1count.ts";
import {
  s1,
  s2,
  s3,
  s4,
  s5App,
  s5Baseline,
  s6,
  s7,
  seedHistory,
  seedS4,
  STALL_MS,
  type Hooks,
  type S1Options,
  type Target,
  type WindowOptions,
} from "./lib/scenarios.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const T0 = Date.now();
/** S5's user sockets per device (each device is a user with its own object). */
const S5_SOCKETS_PER_DEVICE = 10;
const log = (msg: string) => console.error(`bench [${((Date.now() - T0) / 1000).toFixed(0).padStart(4)} s] ${msg}`);

// --- Options --------------------------------------------------------------------------------------

interface Options {
  only: string[];
  runs: number;
  quick: boolean;
  s4Messages: number;
  s6Messages: number;
  s5Sockets: number;
  s7Ciphertexts: number;
  s8Sizes: number[];
  s8Messages: number;
  s9Requests: number;
  s9Burst: number;
  s10Conversations: number[];
  s10Messages: number;
  s10Limit: number;
  s5ViaProxy: boolean;
  s5Tickets: boolean;
  aloneAnswers: string;
  viaProxy: boolean;
  window: number;
  receiptMs: number;
  baseline: boolean;
  alone: boolean;
  media: boolean;
  out: string | null;
  /** --before: a checkout of an earlier commit whose app S1 and S2 run too. */
  before: string | null;
  stateDir: string;
  profile: boolean;
  gc: boolean;
  gcPauses: boolean;
  trace: boolean;
  vars: string[];
  s1Rates?: number[];
  render?: string;
  s1: Omit<S1Options, "profile">;
  s2: WindowOptions;
  s3: WindowOptions;
}

/** Flags that set a number: the option and its least value. */
type NumericOption =
  | "runs"
  | "s4Messages"
  | "s6Messages"
  | "s5Sockets"
  | "s7Ciphertexts"
  | "s8Messages"
  | "s9Requests"
  | "s9Burst"
  | "s10Messages"
  | "s10Limit"
  | "window"
  | "receiptMs";
const NUMERIC_FLAGS = new Map<string, [NumericOption, number]>([
  ["--runs", ["runs", 1]],
  ["--s4-messages", ["s4Messages", 100]],
  ["--s6-messages", ["s6Messages", 100]],
  ["--s5-sockets", ["s5Sockets", 10]],
  ["--s7-ciphertexts", ["s7Ciphertexts", 1]],
  ["--s8-messages", ["s8Messages", 1]],
  ["--s9-requests", ["s9Requests", 10]],
  ["--s9-burst", ["s9Burst", 10]],
  ["--s10-messages", ["s10Messages", 1]],
  ["--s10-limit", ["s10Limit", 1]],
  ["--window", ["window", 1]],
  ["--receipt-ms", ["receiptMs", 0]],
]);
/** Flags that set options to true or false. */
type BooleanOption = "quick" | "s5ViaProxy" | "s5Tickets" | "viaProxy" | "baseline" | "alone" | "media" | "profile" | "gc" | "gcPauses" | "trace";
const SWITCHES = new Map<string, { keys: BooleanOption[]; value: boolean }>([
  ["--quick", { keys: ["quick"], value: true }],
  ["--s5-via-proxy", { keys: ["s5ViaProxy"], value: true }],
  ["--s5-bearer", { keys: ["s5Tickets"], value: false }],
  ["--via-proxy", { keys: ["viaProxy", "s5ViaProxy"], value: true }],
  ["--no-baseline", { keys: ["baseline"], value: false }],
  ["--no-alone", { keys: ["alone"], value: false }],
  ["--no-media", { keys: ["media"], value: false }],
  ["--profile", { keys: ["profile"], value: true }],
  ["--gc", { keys: ["gc"], value: true }],
  ["--gc-pauses", { keys: ["gcPauses"], value: true }],
  ["--trace", { keys: ["trace"], value: true }],
]);

function parseArgs(argv: string[]): Options {
  const o: Options = {
    only: ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10"],
    runs: 3,
    quick: false,
    s4Messages: 100_000,
    s6Messages: 100_000,
    s5Sockets: 5_000,
    s7Ciphertexts: 2_000,
    s8Sizes: [10, 100, 1000],
    s8Messages: 200,
    s9Requests: 1_000,
    s9Burst: 200,
    s10Conversations: [100, 1000],
    s10Messages: 3,
    s10Limit: 100,
    s5ViaProxy: false,
    s5Tickets: true,
    aloneAnswers: "d1,users",
    viaProxy: false,
    window: 100,
    receiptMs: 250,
    baseline: true,
    alone: true,
    media: true,
    out: null,
    before: null,
    stateDir: existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir(),
    profile: false,
    gc: false,
    gcPauses: false,
    trace: false,
    vars: [],
    // Set below, once the flags are known.
    s1: { rates: [], warmupMs: 0, windowMs: 0, receiptMs: 0 },
    s2: { window: 0, warmupMs: 0, durationMs: 0, receiptMs: 0 },
    s3: { window: 0, warmupMs: 0, durationMs: 0, receiptMs: 0 },
  };
  let onlyGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, null];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const numeric = NUMERIC_FLAGS.get(flag);
    const toggle = SWITCHES.get(flag);
    if (numeric) {
      const [key, min] = numeric;
      o[key] = Math.max(min, Number(value()));
      continue;
    }
    if (toggle) {
      for (const key of toggle.keys) o[key] = toggle.value;
      continue;
    }
    switch (flag) {
      case "--only":
        o.only = value().split(",").map((s) => s.trim().toUpperCase()).filter(Boolean);
        onlyGiven = true;
        break;
      case "--alone-answers":
        o.aloneAnswers = value();
        if (!["d1", "d1,users"].includes(o.aloneAnswers)) throw new Error("--alone-answers: d1 or d1,users");
        break;
      case "--s8-sizes":
        o.s8Sizes = value().split(",").map(Number).filter((n) => n >= 2);
        break;
      case "--s10-conversations":
        o.s10Conversations = value().split(",").map(Number).filter((n) => n >= 1);
        break;
      case "--s1-rates":
        o.s1Rates = value().split(",").map(Number).filter((r) => r > 0);
        break;
      case "--out":
        o.out = value();
        break;
      case "--before":
        o.before = resolve(value());
        if (!existsSync(join(o.before, "wrangler.toml")) || !existsSync(join(o.before, "node_modules"))) {
          throw new Error("--before: a checkout with its wrangler.toml and node_modules");
        }
        break;
      case "--state-dir":
        o.stateDir = value();
        break;
      case "--var":
        o.vars.push(value());
        break;
      case "--render":
        o.render = value();
        break;
      case "--help":
      case "-h":
        {
          const lines = readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n");
          console.log(lines.slice(1, lines.findIndex((l) => l.startsWith("// BENCH_VERBOSE")) + 1).join("\n"));
        }
        process.exit(0);
        break;
      default:
        throw new Error(`unknown flag ${a} (see --help)`);
    }
  }
  for (const s of o.only) if (!/^S([1-9]|10)$/.test(s)) throw new Error(`unknown scenario ${s}`);
  if (o.gcPauses && !perfInstalled()) throw new Error("--gc-pauses needs Linux perf (apt install linux-perf)");
  if (o.gcPauses && (o.trace || o.gc)) throw new Error("--gc-pauses samples every target's thread itself: leave out --trace and --gc");
  if (o.quick) {
    if (o.s4Messages === 100_000) o.s4Messages = 5_000;
    if (o.s5Sockets === 5_000) o.s5Sockets = 500;
    if (o.s6Messages === 100_000) o.s6Messages = 5_000;
    if (o.s7Ciphertexts === 2_000) o.s7Ciphertexts = 500;
    if (o.s8Messages === 200) o.s8Messages = 50;
    if (o.s8Sizes.join() === "10,100,1000") o.s8Sizes = [10, 100];
    if (o.s9Requests === 1_000) o.s9Requests = 200;
    if (o.s9Burst === 200) o.s9Burst = 50;
    if (o.s10Conversations.join() === "100,1000") o.s10Conversations = [20, 100];
  }
  o.media = o.media && !onlyGiven && !o.quick;
  o.s1 = { rates: o.s1Rates ?? [200, 500, 1000], warmupMs: o.quick ? 500 : 1_000, windowMs: o.quick ? 2_000 : 5_000, receiptMs: o.receiptMs };
  o.s2 = { window: o.window, warmupMs: o.quick ? 500 : 1_000, durationMs: o.quick ? 3_000 : 10_000, receiptMs: o.receiptMs };
  o.s3 = { window: 10, warmupMs: o.quick ? 500 : 1_000, durationMs: o.quick ? 3_000 : 10_000, receiptMs: o.receiptMs };
  return o;
}

// --- Machine ------------------------------------------------------------------------------------------

interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: string;
  kernel: string;
  node: string;
  wrangler: string;
  workerd: string;
  workerdBinary?: string | null;
}

function machineInfo(): Machine {
  const version = (path: string): string => {
    try {
      return (JSON.parse(readFileSync(join(ROOT, path), "utf8")) as { version: string }).version;
    } catch {
      return "?";
    }
  };
  return {
    cpu: os.cpus()[0]?.model.trim() ?? "?",
    cores: os.cpus().length,
    memoryGiB: (os.totalmem() / 2 ** 30).toFixed(1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    wrangler: version("node_modules/wrangler/package.json"),
    workerd: version("node_modules/miniflare/node_modules/workerd/package.json"),
  };
}

const loadavg = () => os.loadavg().map((l) => l.toFixed(2)).join(" ");

// --- Statistics -------------------------------------------------------------------------------------

type Maybe = number | null | undefined;
const finite = (xs: readonly Maybe[]): number[] => xs.filter((x): x is number => x !== null && x !== undefined && Number.isFinite(x));

const median = (xs: readonly Maybe[]): number | null => {
  const s = finite(xs).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] ?? null) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
};

interface Spread {
  med: number;
  min: number;
  max: number;
  n: number;
}

const spread = (xs: readonly Maybe[]): Spread | null => {
  const s = finite(xs);
  return s.length ? { med: median(s) ?? 0, min: Math.min(...s), max: Math.max(...s), n: s.length } : null;
};

function fmt(v: Maybe, digits?: number): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "n/a";
  if (digits !== undefined) return v.toFixed(digits);
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString("en-US");
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function cell(stat: Spread | null, digits?: number, unit = ""): string {
  if (!stat) return "n/a";
  const m = `${fmt(stat.med, digits)}${unit}`;
  if (stat.n < 2) return m;
  return `${m} [${fmt(stat.min, digits)}-${fmt(stat.max, digits)}]`;
}

// --- Main ---------------------------------------------------------------------------------------------------

/** What a scenario's run returns, by scenario. */
type S1Result = Awaited<ReturnType<typeof s1>>;
/** An S1 rate's numbers; with --gc-pauses, the major GC pauses in its window too. */
type S1Rate = S1Result["rates"][number] & { gcPauses?: ReturnType<typeof gcPausesIn> };

interface RunOf {
  S1: Omit<S1Result, "rates"> & { rates: S1Rate[] };
  S2: Awaited<ReturnType<typeof s2>>;
  S3: Awaited<ReturnType<typeof s3>>;
  S4: Awaited<ReturnType<typeof s4>>;
  // S5's app runs have what its baseline runs have, and more.
  S5: Awaited<ReturnType<typeof s5Baseline>> & Partial<Awaited<ReturnType<typeof s5App>>>;
  S6: Awaited<ReturnType<typeof s6>>;
  S7: Awaited<ReturnType<typeof s7>>;
  S9: Awaited<ReturnType<typeof s9>>;
  S10: Awaited<ReturnType<typeof s10>>;
}
type ScenarioKey = keyof RunOf;
/** A column of the table: a target's kind, or S6's and S7's two groups (both the app). */
type Column = "app" | "baseline" | "relay" | "store" | "alone" | "before" | "fresh" | "history" | "plaintext" | "e2ee";
/** Every run of a scenario, by column; `reloadsDuring`: wrangler reloaded the Worker during it. */
type Runs = { [K in ScenarioKey]?: Partial<Record<Column, (RunOf[K] & { reloadsDuring?: number })[]>> };

/** A results file (bench/results/*.json), as written by main and read back by --render. */
interface Results {
  machine: Machine;
  options: Options;
  vars: string[];
  startedAt: string;
  runs: Runs;
  /** --before: the commit its checkout was at. */
  beforeCommit?: string;
  appAssets?: boolean;
  reloads?: string[];
  s4Seed?: Awaited<ReturnType<typeof seedS4>>;
  s6Seed?: Awaited<ReturnType<typeof seedHistory>>;
  /** S10's users, one per number of conversations (without their tokens). */
  s10Seeds?: Omit<S10Seed, "user">[];
  /** S7's E2EE groups: how long the sender took to encrypt each pool, ms per message. */
  s7EncryptMs?: number[];
  /** S8: the client engine's costs (no server, one run). */
  s8?: Awaited<ReturnType<typeof mlsCosts>>;
  loads?: string[];
  serverErrors?: { app: string[]; baseline: string[] };
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.render) {
    const saved = JSON.parse(readFileSync(opts.render, "utf8")) as Results;
    console.log(render(saved, saved.options));
    return;
  }
  const machine = machineInfo();
  const wants = (s: string) => opts.only.includes(s);
  const loads = [loadavg()];
  log(`machine: ${machine.cpu}, ${machine.cores} cores; load ${loads[0]}`);

  const [appPort = 0, appInspector = 0, basePort = 0, baseInspector = 0, alonePort = 0, aloneInspector = 0, countedPort = 0, countedInspector = 0, beforePort = 0, beforeInspector = 0] =
    await freePorts(10);
  // S5 opens a second set of user sockets for half its devices while their first set stays open.
  const VARS = ["RATE_LIMIT_PER_SECOND:100000", "RATE_LIMIT_BURST:100000", "REGISTRATIONS_PER_ADDRESS_PER_HOUR:1000000", "GROUPS_PER_USER_PER_HOUR:1000000", `MAX_SOCKETS_PER_DEVICE:${2 * S5_SOCKETS_PER_DEVICE}`, ...opts.vars];
  const appAnswers = async (base: string) => (await fetch(`${base}/me`, { signal: AbortSignal.timeout(2_000) })).status === 401;
  // Each server keeps its state in a temp dir of its own under opts.stateDir, removed when it stops
  // (scripts/lib/dev-server.ts); a restart keeps it.
  const app = new Server({
    name: "app",
    ...(opts.trace ? { script: "bench/traced/worker.ts" } : {}),
    port: appPort,
    inspectorPort: appInspector,
    stateDir: opts.stateDir,
    vars: VARS,
    cwd: ROOT,
    ready: appAnswers,
  });
  // The app once more, with a conversation's remote work (D1, users' objects) answered at once:
  // what the conversation object's own thread carries (bench/alone/worker.ts). S1 and S2 only.
  const alone = new Server({
    name: "alone",
    script: "bench/alone/worker.ts",
    port: alonePort,
    inspectorPort: aloneInspector,
    stateDir: opts.stateDir,
    vars: [...VARS, `ALONE_ANSWERS:${opts.aloneAnswers}`],
    cwd: ROOT,
    ready: appAnswers,
  });
  // The app of an earlier commit (--before), run by its own `npm run dev`: S1 and S2 only.
  const before = new Server({
    name: "before",
    port: beforePort,
    inspectorPort: beforeInspector,
    stateDir: opts.stateDir,
    vars: VARS,
    cwd: opts.before ?? ROOT,
    ready: appAnswers,
  });
  const baseline = new Server({
    name: "baseline",
    config: "bench/baseline/wrangler.toml",
    port: basePort,
    inspectorPort: baseInspector,
    stateDir: opts.stateDir,
    cwd: ROOT,
    ready: async (base) => (await fetch(base, { signal: AbortSignal.timeout(2_000) })).status === 200,
  });
  // The app once more, each D1 query it makes written down (bench/counted/worker.ts): S9 and S10
  // only, so that the scenarios timed against the app run on its own entry point.
  const counted = new Server({
    name: "counted",
    script: "bench/counted/worker.ts",
    port: countedPort,
    inspectorPort: countedInspector,
    stateDir: opts.stateDir,
    vars: VARS,
    cwd: ROOT,
    ready: appAnswers,
  });
  const withCounted = wants("S9") || wants("S10");
  opts.alone = opts.alone && opts.baseline && (wants("S1") || wants("S2"));
  const withBefore = opts.before !== null && opts.baseline && (wants("S1") || wants("S2"));
  const servers = [app, ...(opts.baseline ? [baseline] : []), ...(opts.alone ? [alone] : []), ...(withBefore ? [before] : []), ...(withCounted ? [counted] : [])];

  let stopping = false;
  const cleanup = async () => {
    if (stopping) return;
    stopping = true;
    // Every server, started or not: each removes its state dir.
    await Promise.all([app, baseline, alone, before, counted].map((s) => s.stop()));
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      log(`${signal}: stopping servers`);
      void cleanup().then(() => process.exit(130));
    });
  }

  const results: Results = {
    machine,
    options: opts,
    vars: VARS,
    startedAt: new Date().toISOString(),
    runs: {},
    // Whether the app ran with static assets, and so behind wrangler dev's assets router (render).
    appAssets: /^\[assets\]/m.test(readFileSync(join(ROOT, "wrangler.toml"), "utf8")),
    ...(opts.before ? { beforeCommit: execFileSync("git", ["-C", opts.before, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim() } : {}),
  };
  const record = <K extends ScenarioKey>(key: K, target: Column, value: RunOf[K] & { reloadsDuring?: number }) => {
    const runs: Runs[K] = (results.runs[key] ??= { app: [], baseline: [], relay: [], store: [], alone: [] });
    if (runs) (runs[target] ??= []).push(value);
  };
  // Runs during which wrangler reloaded the Worker (a source file changed on disk): flagged.
  const reloaded: string[] = [];
  results.reloads = reloaded;
  // Only the measured target's server runs; the others are paused, and so is its own esbuild
  // watcher (Server.pause and Server.pauseWatcher say why).
  const focus = (server: Server) => {
    for (const s of servers) if (s !== server) s.pause();
    server.resume();
    server.pauseWatcher();
  };
  // `as`: the column the result goes in, when not the target's kind (S6 runs the app twice).
  // `fn` gets the target as the scenario reaches it: its server straight at the runtime's entry
  // socket, or wrangler's proxy with --via-proxy (--s5-via-proxy for S5 alone).
  const measure = async <K extends ScenarioKey>(key: K, t: Target, run: number, fn: (reached: Target) => Promise<RunOf[K]>, as: Column = t.kind) => {
    focus(t.server);
    const viaProxy = key === "S5" ? opts.s5ViaProxy : opts.viaProxy;
    const reached = viaProxy ? t : { ...t, server: await t.server.direct() };
    const before = t.server.reloads;
    const value: RunOf[K] & { reloadsDuring?: number } = await fn(reached);
    const reloads = t.server.reloads - before;
    if (reloads > 0) {
      value.reloadsDuring = reloads;
      reloaded.push(`${key} ${as} run ${run + 1}`);
      log(`WARNING: ${as} reloaded ${reloads}x during ${key} run ${run + 1} (a source file changed): numbers not valid`);
    }
    record(key, as, value);
  };

  try {
    // The app and alone both run `npm run dev`, which builds the web client into web/dist when it
    // is missing or stale; started side by side on a fresh clone, two builds emptied and filled
    // the same directory at once and one failed. So it is built here first, once.
    const build = spawnSync(process.execPath, [join(ROOT, "web", "scripts", "build.ts")], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
    if (build.status !== 0) throw new Error("building the web client (web/scripts/build.ts) failed");
    if (wants("S8")) {
      // Before any server starts: the engine alone on the machine.
      log(`S8: the client's MLS engine, groups of ${opts.s8Sizes.join(", ")} devices, ${opts.s8Messages} messages each (load ${loadavg()})`);
      results.s8 = await mlsCosts({ sizes: opts.s8Sizes, messages: opts.s8Messages });
    }
    log(`starting app (port ${appPort})${opts.baseline ? `, baseline (port ${basePort})` : ""}${opts.alone ? `, alone (port ${alonePort})` : ""}${withBefore ? `, before (port ${beforePort}, ${opts.before})` : ""}`);
    await Promise.all(servers.map((s) => s.start()));
    machine.workerdBinary = workerdVersion(app);

    // Users: registration is a deliberate 100k-iteration PBKDF2, so they are made once and reused.
    const s5Devices = wants("S5") ? Math.ceil(opts.s5Sockets / S5_SOCKETS_PER_DEVICE) : 0;
    const poolSize = Math.max(wants("S3") ? 40 : wants("S1") || wants("S2") || wants("S6") || wants("S7") ? 10 : 0, s5Devices);
    const tag = Date.now().toString(36);
    log(`registering ${poolSize} users${wants("S4") ? " + 21 for S4" : ""}${wants("S5") ? " + 1 poster" : ""}`);
    const users = await registerUsers(app.base, poolSize, `b${tag}_`);
    // `inspector`: where --profile (the app and alone only) and --gc reach the target's isolate.
    const appTarget: Target = { kind: "app", server: app, inspector: appInspector, profiled: true };
    const baseTarget: Target = { kind: "baseline", server: baseline, inspector: baseInspector };
    const relayTarget: Target = { kind: "relay", server: baseline, inspector: baseInspector };
    const storeTarget: Target = { kind: "store", server: baseline, inspector: baseInspector };
    const aloneTarget: Target = {
      kind: "alone",
      server: alone,
      // Its devices hold user sockets only when its users' objects are real.
      userSockets: opts.aloneAnswers === "d1",
      inspector: aloneInspector,
      profiled: true,
      users: opts.alone ? await registerUsers(alone.base, 10, `a${tag}_`) : [],
    };
    const beforeTarget: Target = {
      kind: "before",
      server: before,
      inspector: beforeInspector,
      profiled: true,
      users: withBefore ? await registerUsers(before.base, 10, `p${tag}_`) : [],
    };
    const targets = (run: number): Target[] => (opts.baseline ? (run % 2 === 0 ? [appTarget, baseTarget] : [baseTarget, appTarget]) : [appTarget]);
    // S1 and S2 also run the relay baseline (what the contract's delivery costs without storage)
    // and the store baseline (what a naive insert per message costs without anything else).
    // And, with the "alone" server, the app with its remote work answered at once; with --before,
    // the earlier commit's app, right beside the app (after it in one run, before it in the next).
    const withRelayAndStore = (run: number): Target[] => {
      if (!opts.baseline) return [appTarget];
      const pair = withBefore ? (run % 2 === 0 ? [appTarget, beforeTarget] : [beforeTarget, appTarget]) : [appTarget];
      const others = [relayTarget, storeTarget, ...(opts.alone ? [aloneTarget] : [])];
      return run % 2 === 0 ? [...pair, baseTarget, ...others] : [baseTarget, ...pair, ...others];
    };

    if (wants("S1")) {
      for (let run = 0; run < opts.runs; run++) {
        for (const t of withRelayAndStore(run)) {
          log(`S1 run ${run + 1}/${opts.runs} ${t.kind} (load ${loadavg()})`);
          // Hooks around each rate: a CPU profile (--profile), a watch on the GC (--gc, one per
          // rate), the runtime's thread sampled (--gc-pauses, one per rate), or the app's timeline
          // (--trace, one per rate).
          let profile: ((rate: number) => Hooks) | undefined;
          const watchers: GcWatcher[] = [];
          const tracers: Trace[] = [];
          const samplers: ThreadSampler[] = [];
          if (opts.gcPauses) {
            profile = () => {
              const sampler = threadSampler(t.server.workerdProcesses().runtime);
              samplers.push(sampler);
              return sampler;
            };
          } else if (opts.trace && t.kind === "app") {
            profile = () => {
              const tracer = traceHooks(app.base, app.workerdProcesses().runtime);
              tracers.push(tracer);
              return tracer;
            };
          } else if (opts.profile && t.profiled) {
            profile = (rate) => profiler(t.inspector, `S1-${rate}-${t.kind}-run${run + 1}`);
          } else if (opts.gc) {
            profile = () => {
              const watcher = gcWatcher(t.inspector);
              watchers.push(watcher);
              return watcher;
            };
          }
          await measure("S1", t, run, async (reached) => {
            const result = await s1(reached, (t.users ?? users).slice(0, 10), { ...opts.s1, profile });
            for (const [i, w] of watchers.entries()) {
              const r = result.rates[i];
              if (r) console.error(gcReport(`S1 @${opts.s1.rates[i]}/s ${t.kind} run ${run + 1}`, w.findings, r).join("\n"));
            }
            for (const [i, tracer] of tracers.entries()) {
              const r = result.rates[i];
              if (r) console.error(traceReport(`S1 @${opts.s1.rates[i]}/s ${t.kind} run ${run + 1}`, tracer, r).join("\n"));
            }
            for (const [i, sampler] of samplers.entries()) {
              const r: S1Rate | undefined = result.rates[i];
              if (r) r.gcPauses = gcPausesIn(sampler.samples, r.windowStart, r.windowStart + opts.s1.windowMs);
            }
            return result;
          });
        }
      }
    }
    if (wants("S2")) {
      for (let run = 0; run < opts.runs; run++) {
        for (const t of withRelayAndStore(run)) {
          log(`S2 run ${run + 1}/${opts.runs} ${t.kind} (load ${loadavg()})`);
          const hooks = opts.profile && t.profiled ? profiler(t.inspector, `S2-${t.kind}-run${run + 1}`) : undefined;
          await measure("S2", t, run, (reached) => s2(reached, (t.users ?? users).slice(0, 10), { ...opts.s2, hooks }));
        }
      }
    }
    if (wants("S3")) {
      const pairs = Array.from({ length: 20 }, (_, i) => users.slice(2 * i, 2 * i + 2));
      for (let run = 0; run < opts.runs; run++) {
        for (const t of targets(run)) {
          log(`S3 run ${run + 1}/${opts.runs} ${t.kind} (load ${loadavg()})`);
          await measure("S3", t, run, (reached) => s3(reached, pairs, opts.s3));
        }
      }
    }
    if (wants("S6")) {
      // The same devices, the same load, alternating: a fresh group, and one holding the history.
      focus(app);
      const devices = users.slice(0, 10);
      log(`S6: storing ${opts.s6Messages.toLocaleString("en-US")} messages in one group (load ${loadavg()})`);
      const seed = await seedHistory(app, devices, opts.s6Messages);
      results.s6Seed = seed;
      log(`S6: stored in ${seed.sentSeconds.toFixed(1)} s, in D1 ${seed.drainSeconds.toFixed(1)} s later`);
      for (let run = 0; run < opts.runs; run++) {
        for (const group of run % 2 === 0 ? (["fresh", "history"] as const) : (["history", "fresh"] as const)) {
          log(`S6 run ${run + 1}/${opts.runs} ${group} (load ${loadavg()})`);
          const conversationId = group === "history" ? seed.conversationId : null;
          const hooks = opts.profile ? profiler(appInspector, `S6-${group}-run${run + 1}`) : undefined;
          await measure("S6", appTarget, run, (reached) => s6(reached, devices, conversationId, { ...opts.s2, hooks }), group);
        }
      }
    }
    if (wants("S7")) {
      // A fresh E2EE group per run (each device registers its MLS key once, so all are made
      // together), against a fresh plaintext group of the same devices, alternating.
      focus(app);
      const devices = users.slice(0, 10);
      log(`S7: ${opts.runs} E2EE groups of ${devices.length} devices, ${opts.s7Ciphertexts} ciphertexts each (load ${loadavg()})`);
      const e2ee = await e2eeGroups({ base: app.base, devices, groups: opts.runs, ciphertexts: opts.s7Ciphertexts, title: `s7 ${tag}` });
      results.s7EncryptMs = e2ee.map((g) => g.encryptMs);
      for (let run = 0; run < opts.runs; run++) {
        for (const group of run % 2 === 0 ? (["plaintext", "e2ee"] as const) : (["e2ee", "plaintext"] as const)) {
          log(`S7 run ${run + 1}/${opts.runs} ${group} (load ${loadavg()})`);
          const e2eeGroup = group === "e2ee" ? (e2ee[run] ?? null) : null;
          const hooks = opts.profile ? profiler(appInspector, `S7-${group}-run${run + 1}`) : undefined;
          await measure("S7", appTarget, run, (reached) => s7(reached, devices, e2eeGroup, { ...opts.s2, hooks }), group);
        }
      }
    }
    loads.push(loadavg());
    if (wants("S4")) {
      focus(app);
      const [s4User, ...s4Others] = await registerUsers(app.base, 21, `s4${tag}_`);
      if (!s4User) throw new Error("S4: no user registered");
      log(`S4: storing ${opts.s4Messages.toLocaleString("en-US")} messages through sockets (load ${loadavg()})`);
      const seed = await seedS4(app, s4User, s4Others, opts.s4Messages);
      results.s4Seed = seed;
      log(`S4: stored in ${seed.sentSeconds.toFixed(1)} s, in D1 ${seed.drainSeconds.toFixed(1)} s later`);
      for (let run = 0; run < opts.runs; run++) {
        log(`S4 run ${run + 1}/${opts.runs} (load ${loadavg()})`);
        const hooks = opts.profile ? profiler(appInspector, `S4-app-run${run + 1}`) : undefined;
        await measure("S4", appTarget, run, (reached) => s4(reached.server, s4User, seed.stored, { hooks }));
      }
    }
    loads.push(loadavg());
    if (withCounted) {
      const countedTarget: Target = { kind: "app", server: counted, inspector: countedInspector };
      if (wants("S9")) {
        for (let run = 0; run < opts.runs; run++) {
          log(`S9 run ${run + 1}/${opts.runs}: D1 per operation, then auth with and without D1 (load ${loadavg()})`);
          await measure("S9", countedTarget, run, (reached) => s9(reached.server, `${tag}${run}`, { requests: opts.s9Requests, repeats: 5, burst: opts.s9Burst }));
        }
      }
      if (wants("S10")) {
        results.s10Seeds = [];
        for (const n of opts.s10Conversations) {
          focus(counted);
          const direct = await counted.direct();
          log(`S10: a user in ${n.toLocaleString("en-US")} conversations, ${opts.s10Messages} messages each (load ${loadavg()})`);
          const seed = await seedMany(direct, n, opts.s10Messages, tag);
          results.s10Seeds.push({
            conversations: seed.conversations,
            messagesPerConversation: seed.messagesPerConversation,
            since: seed.since,
            seconds: seed.seconds,
            drainSeconds: seed.drainSeconds,
          });
          log(`S10: seeded in ${seed.seconds.toFixed(1)} s, D1 quiet ${seed.drainSeconds.toFixed(1)} s later`);
          for (let run = 0; run < opts.runs; run++) {
            log(`S10 run ${run + 1}/${opts.runs}, ${n} conversations (load ${loadavg()})`);
            await measure("S10", countedTarget, run, (reached) => s10(reached.server, seed, { limit: opts.s10Limit }));
          }
        }
      }
    }
    loads.push(loadavg());
    if (wants("S5")) {
      focus(app);
      const [poster] = await registerUsers(app.base, 1, `p${tag}_`);
      if (!poster) throw new Error("S5: no poster registered");
      const devices = users.slice(0, s5Devices);
      // Groups of 49 devices plus the poster: 50 members, the largest size fanned out inline.
      const groups: { members: User[]; conversation: Conversation }[] = [];
      for (let i = 0; i < devices.length; i += 49) {
        const members = devices.slice(i, i + 49);
        groups.push({ members, conversation: await createGroup(app.base, poster, members, `s5 ${i / 49}`) });
      }
      const sockets = devices.length * S5_SOCKETS_PER_DEVICE;
      for (let run = 0; run < opts.runs; run++) {
        for (const t of targets(run)) {
          // A fresh runtime per run, so the memory delta is not hidden by what an earlier run freed.
          log(`S5 run ${run + 1}/${opts.runs} ${t.kind}: restarting it, then ${sockets} sockets (load ${loadavg()})`);
          await t.server.stop({ keepState: true });
          await t.server.start();
          await measure("S5", t, run, (reached) => {
            const via = reached.server;
            log(`S5 ${t.kind}: sockets to ${via.base}${opts.s5ViaProxy ? " (wrangler's proxy)" : " (the runtime's entry socket, no proxy)"}`);
            return t.kind === "app"
              ? s5App(app, {
                  devices,
                  groups,
                  poster,
                  perDevice: S5_SOCKETS_PER_DEVICE,
                  via,
                  inspector: t.inspector,
                  tickets: opts.s5Tickets,
                  hooks: opts.profile ? profiler(t.inspector, `S5-resume-app-run${run + 1}`) : undefined,
                })
              : s5Baseline(baseline, { rooms: devices.length, perRoom: S5_SOCKETS_PER_DEVICE, via, inspector: t.inspector });
          });
        }
      }
    }
    for (const s of servers) s.resume();
    loads.push(loadavg());
    results.loads = loads;
    results.serverErrors = { app: app.errorLines().slice(-20), baseline: opts.baseline ? baseline.errorLines().slice(-20) : [] };
  } catch (err) {
    // fetch's "fetch failed" names what went wrong only in its cause (a reset, a refusal).
    const text = (e: unknown) => (e instanceof Error ? (e.stack ?? e.message) : String(e));
    log(`FAILED: ${text(err)}${err instanceof Error && err.cause ? `\n  cause: ${text(err.cause)}` : ""}`);
    for (const s of servers) {
      if (s.reloads > 0) log(`note: ${s.name} reloaded ${s.reloads}x during the bench (a source file changed on disk; it drops every socket)`);
    }
    log(`app output tail:\n${app.tail()}`);
    process.exitCode = 1;
  } finally {
    await cleanup();
  }

  const table = render(results, opts);
  console.log(table);
  const out = opts.out ?? join(ROOT, "bench", "results", `${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ ...results, table }, null, 2));
  log(`results: ${out}`);

  if (opts.media && process.exitCode !== 1 && existsSync(join(ROOT, "bench", "media.ts"))) {
    log("bench/media.ts exists: running it");
    const media = spawnSync(process.execPath, [join(ROOT, "bench", "media.ts")], { cwd: ROOT, stdio: "inherit" });
    if (media.status !== 0) process.exitCode = media.status ?? 1;
  }
}

/**
 * Start/stop hooks that CPU-profile the app's isolate (its Worker and Durable Objects) through
 * wrangler's inspector proxy, save the profile under bench/results/, and print the top functions.
 * miniflare's own services (D1, queues) run in other isolates of the same process and are not in
 * it. Sampling slows the app down: profiled runs measure where time goes, not how fast it is.
 */
function profiler(inspectorPort: number, label: string): Hooks {
  let inspector: Inspector | null = null;
  return {
    async start() {
      inspector = await Inspector.connect(inspectorPort);
      await inspector.startProfile();
    },
    async stop() {
      if (!inspector) throw new Error(`profile ${label}: stop before start`);
      const profile = await inspector.stopProfile();
      inspector.close();
      const dir = join(ROOT, "bench", "results");
      mkdirSync(dir, { recursive: true });
      const file = join(dir, `${new Date().toISOString().replace(/[:.]/g, "-")}-${label}.cpuprofile`);
      writeFileSync(file, JSON.stringify(profile));
      const { self, inclusive } = summarize(profile, 40);
      console.error([`\nprofile ${label}: ${busySamples(profile)} busy samples of ${profile.samples.length}, ${file}`, "-- self --", ...self, "-- inclusive --", ...inclusive, ""].join("\n"));
    },
  };
}

/** A run's retries (`retrying` in bench/lib/clients.ts): "0", or "3 (ECONNRESET 3)". */
function describeRetries(stats: RetryStats): string {
  const n = stats.retries ?? 0;
  if (n === 0) return "0";
  return `${n} (${Object.entries(stats.byCode ?? {}).map(([code, k]) => `${code} ${k}`).join(", ")})`;
}

function workerdVersion(server: Server): string | null {
  try {
    const { runtime } = server.workerdProcesses();
    const exe = readFileSync(`/proc/${runtime}/cmdline`, "utf8").split("\0")[0] ?? "";
    return execFileSync(exe, ["--version"], { encoding: "utf8" }).trim();
  } catch {
    return null;
  }
}

// --- The table -------------------------------------------------------------------------------------------

/** What the alone server answered at once (results saved before --alone-answers: both). */
function aloneWhat(opts: Options): string {
  return opts.aloneAnswers === "d1" ? "only D1 answering at once, its users' objects real" : "D1 and users' objects answering at once";
}

/** Every run of scenario `key` in column `target` (none when it did not run). */
function runsOf<K extends ScenarioKey>(runs: Runs, key: K, target: Column): RunOf[K][] {
  const byColumn: Runs[K] = runs[key];
  return byColumn?.[target] ?? [];
}

function render(results: Results, opts: Options): string {
  const { machine } = results;
  const runs = results.runs;
  const lines: string[] = [];
  const rows: string[][] = [];
  // One row per metric: a cell per target ("-": the target did not run this scenario), and the
  // app's ratio to the bare broadcast.
  // The "before" column (--before) only when some scenario ran it.
  const OTHERS: Column[] = ["relay", "store", "alone", ...((["S1", "S2"] as const).some((k) => runs[k]?.before?.length) ? (["before"] as const) : [])];
  const row = (scenario: string, metric: string, app: string, base: string, ratio = "", others = OTHERS.map(() => "-")) => rows.push([scenario, metric, app, base, ratio, ...others]);
  const get = <K extends ScenarioKey>(key: K, target: Column, f: (r: RunOf[K]) => Maybe) => spread(runsOf(runs, key, target).map(f));
  const ratio = (a: Spread | null, b: Spread | null) => (a && b && b.med ? `${(a.med / b.med).toFixed(2)}x` : "");
  /** A metric of every target that ran `key` (`only`: the targets it means something for). */
  const metric = <K extends ScenarioKey>(key: K, scenario: string, name: string, f: (r: RunOf[K]) => Maybe, digits?: number, only: Column[] = ["app", "baseline", ...OTHERS]) => {
    const stat = (t: Column) => (only.includes(t) ? get(key, t, f) : null);
    const shown = (t: Column) => (runsOf(runs, key, t).length === 0 ? "-" : only.includes(t) ? cell(stat(t), digits) : "n/a");
    row(scenario, name, shown("app"), shown("baseline"), ratio(stat("app"), stat("baseline")), OTHERS.map(shown));
  };

  if (runs.S1) {
    for (const [k, rate] of opts.s1.rates.entries()) {
      const at = (f: (x: S1Rate) => Maybe) => (r: RunOf["S1"]) => {
        const x = r.rates[k];
        return x ? f(x) : null;
      };
      metric("S1", `S1 @${rate}/s`, "delivered msg/s per receiver", at((x) => x.deliveredPerSec));
      for (const p of ["p50", "p95", "p99", "max"] as const) metric("S1", "", `${p} latency ms`, at((x) => x[p]), 1);
      // 1% of the messages is 0.01 x rate x 5 s: a stall holding that many decides p99 alone.
      metric("S1", "", `messages in the longest stall (>= ${STALL_MS} ms late)`, at((x) => x.longestStall), 0);
      metric("S1", "", "loss %", at((x) => x.loss * 100), 2);
      metric("S1", "", "runtime CPU ms per message", at((x) => x.cpuMsPerMessage), 3);
      if (opts.gcPauses) {
        // The runtime's main thread runs every isolate of its process: a pause there holds them all.
        metric("S1", "", "major GC pauses >= 5 ms in the window", at((x) => x.gcPauses?.count), 0);
        metric("S1", "", "longest major GC pause ms", at((x) => x.gcPauses?.longestMs), 0);
        metric("S1", "", "major GC ms in the window", at((x) => x.gcPauses?.totalMs), 0);
      }
      // The fan-out's relay to the user sockets: only the app and the relay baseline have one.
      for (const p of ["relayP50", "relayP99"] as const) {
        metric("S1", "", `user socket ${p.slice(5).toLowerCase()} latency ms`, at((x) => x[p]), 1, ["app", "relay"]);
      }
    }
  }
  if (runs.S2) {
    const key = `S2 window ${opts.s2.window}`;
    metric("S2", key, "acked msg/s", (r) => r.ackedPerSec);
    metric("S2", "", "delivered msg/s per receiver", (r) => r.deliveredPerSec);
    metric("S2", "", "ack p50 ms", (r) => r.ackP50, 1);
    metric("S2", "", "ack p99 ms", (r) => r.ackP99, 1);
    metric("S2", "", "runtime CPU ms per message (all work)", (r) => r.cpuMsPerMessage.runtimeAll, 3);
    metric("S2", "", "  of which kernel (system) ms", (r) => r.cpuMsPerMessage.runtimeAllSystem, 3);
    metric("S2", "", "outbox + fan-out caught up after s", (r) => r.quietSeconds, 1, ["app"]);
  }
  if (runs.S3) {
    metric("S3", "S3 20 conv x 2", "aggregate acked msg/s", (r) => r.ackedPerSec);
    metric("S3", "", "outbox + fan-out caught up after s", (r) => r.quietSeconds, 1, ["app"]);
  }
  if (runs.S6) {
    // The app twice: in the table's app column, a fresh group's cells, then the seeded group's.
    const n = results.s6Seed?.stored ?? 0;
    const both = (name: string, f: (r: RunOf["S6"]) => Maybe, digits: number | undefined, first: boolean) => {
      const fresh = get("S6", "fresh", f);
      const history = get("S6", "history", f);
      row(first ? "S6 history" : "", `${name}, fresh group`, cell(fresh, digits), "-");
      // Each of its runs adds S2's messages to the seeded ones: "at least".
      row("", `${name}, group of >= ${n.toLocaleString("en-US")} messages`, cell(history, digits), "-");
      row("", `  history/fresh`, fresh && history ? `${(history.med / fresh.med).toFixed(2)}x` : "n/a", "-");
    };
    both("acked msg/s", (r) => r.ackedPerSec, undefined, true);
    both("runtime CPU ms per message", (r) => r.cpuMsPerMessage.runtimeAll, 3, false);
  }
  if (runs.S7) {
    // The app twice: in the table's app column, a plaintext group's cells, then an E2EE group's.
    const both = (name: string, f: (r: RunOf["S7"]) => Maybe, digits: number | undefined, first: boolean) => {
      const plaintext = get("S7", "plaintext", f);
      const e2ee = get("S7", "e2ee", f);
      row(first ? "S7 E2EE" : "", `${name}, plaintext group`, cell(plaintext, digits), "-");
      row("", `${name}, E2EE group`, cell(e2ee, digits), "-");
      row("", `  e2ee/plaintext`, plaintext && e2ee ? `${(e2ee.med / plaintext.med).toFixed(2)}x` : "n/a", "-");
    };
    both("acked msg/s", (r) => r.ackedPerSec, undefined, true);
    both("ack p50 ms", (r) => r.ackP50, 1, false);
    both("ack p99 ms", (r) => r.ackP99, 1, false);
    both("runtime CPU ms per message", (r) => r.cpuMsPerMessage.runtimeAll, 3, false);
    const pool = runsOf(runs, "S7", "e2ee").map((r) => `${r.ciphertextsSent.toLocaleString("en-US")} of ${(r.ciphertextPool ?? 0).toLocaleString("en-US")}`);
    if (pool.length) row("", "E2EE ciphertexts sent, of a pool of (per run)", pool.join("; "), "-");
    const encrypt = spread(results.s7EncryptMs ?? []);
    if (encrypt) row("", "the sender's encrypt ms per message (making the pools)", cell(encrypt, 2), "-");
  }
  if (runs.S4) {
    const n = runs.S4.app?.[0]?.messages ?? 0;
    row(`S4 sync ${n.toLocaleString("en-US")}`, "seconds", cell(get("S4", "app", (r) => r.seconds), 2), "-");
    row("", "messages/s", cell(get("S4", "app", (r) => r.perSec)), "-");
    row("", "ms per page (of 500)", cell(get("S4", "app", (r) => (r.seconds * 1000) / r.pages), 1), "-");
  }
  if (runs.S5) {
    const n = runs.S5.app?.[0]?.sockets ?? runs.S5.baseline?.[0]?.sockets ?? 0;
    type S5Run = RunOf["S5"];
    // A reading that older saved results lack shows as n/a, not 0.
    const kb = (t: Column, f: (r: S5Run) => Maybe) =>
      get("S5", t, (r) => {
        const bytes = f(r);
        return bytes === null || bytes === undefined ? null : bytes / 1024;
      });
    row(`S5 ${n.toLocaleString("en-US")} sockets`, "runtime KB per idle socket", cell(kb("app", (r) => r.memoryPerSocket.runtime), 1),
      cell(kb("baseline", (r) => r.memoryPerSocket.runtime), 1));
    row("", "of which isolate live heap KB (after a GC)", cell(kb("app", (r) => r.memoryPerSocket.heap), 2), cell(kb("baseline", (r) => r.memoryPerSocket.heap), 2));
    row("", "runtime KB per socket, all dropped and reconnected", cell(kb("app", (r) => r.memoryPerSocket.reconnected), 1), cell(kb("baseline", (r) => r.memoryPerSocket.reconnected), 1));
    row("", "runtime KB per socket kept open (a second set)", cell(kb("app", (r) => r.memoryPerSocket.keptOpen), 1), cell(kb("baseline", (r) => r.memoryPerSocket.keptOpen), 1),
      ratio(kb("app", (r) => r.memoryPerSocket.keptOpen), kb("baseline", (r) => r.memoryPerSocket.keptOpen)));
    const viaProxy = [...(runs.S5.app ?? []), ...(runs.S5.baseline ?? [])].some((r) => r.viaProxy);
    if (viaProxy) {
      row("", "+ wrangler proxy KB per socket", cell(kb("app", (r) => r.memoryPerSocket.proxy), 1), cell(kb("baseline", (r) => r.memoryPerSocket.proxy), 1));
    } else {
      row("", "+ wrangler proxy KB per socket", "not measured: S5 bypasses the proxy", "-");
    }
    row("", "all reconnect + resume s", cell(get("S5", "app", (r) => r.resumeSeconds), 2), cell(get("S5", "baseline", (r) => r.resumeSeconds), 2),
      ratio(get("S5", "app", (r) => r.resumeSeconds), get("S5", "baseline", (r) => r.resumeSeconds)));
    // Older results files have no resumeCpu: their cells read n/a.
    const resumeCpu = (t: Column, part: "runtime" | "client") => get("S5", t, (r) => r.resumeCpu?.[part] ?? null);
    row("", "  runtime CPU s during it", cell(resumeCpu("app", "runtime"), 2), cell(resumeCpu("baseline", "runtime"), 2),
      ratio(resumeCpu("app", "runtime"), resumeCpu("baseline", "runtime")));
    row("", "  bench client CPU s during it", cell(resumeCpu("app", "client"), 2), cell(resumeCpu("baseline", "client"), 2));
    const lost = (runs.S5.app ?? []).map((r) => `${r.synced}/${r.syncedExpected} synced, ${r.liveReceived}/${r.sockets} live`);
    if (lost.length) row("", "resumed, nothing lost (per run)", lost.join("; "), "-");
    const retried = (t: Column) =>
      runsOf(runs, "S5", t)
        .map((r) => (["connect", "resume", "kept"] as const).map((k) => r.handshakeRetries?.[k]?.retries ?? 0).join("+"))
        .join("; ") || "-";
    row("", "handshakes retried (connect+resume+kept, per run)", retried("app"), retried("baseline"));
    // Older results files have no syncRetries: their cells read n/a.
    const syncRetried = (runs.S5.app ?? []).map((r) => (r.syncRetries ? describeRetries(r.syncRetries) : "n/a")).join("; ");
    if (syncRetried) row("", "sync requests retried (per run)", syncRetried, "-");
  }

  const header = ["scenario", "metric", "app", "bare", "app/bare", ...OTHERS.map((c) => (c === "before" ? `before (${results.beforeCommit ?? "?"})` : c))];
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((r) => String(r[c]).length)));
  const line = (r: string[]) => `| ${r.map((v, c) => String(v).padEnd(widths[c] ?? 0)).join(" | ")} |`;
  lines.push("");
  lines.push(`edge-chat benchmark, ${results.startedAt}`);
  lines.push(
    `machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB; node ${machine.node}, wrangler ${machine.wrangler}, workerd ${machine.workerd}${machine.workerdBinary ? ` (${machine.workerdBinary})` : ""}`,
  );
  lines.push(`load average (1/5/15 min) at start / during / end: ${(results.loads ?? []).join(" | ")}`);
  // Each option's flag is its name in kebab case (gcPauses: --gc-pauses).
  const diagnostics = (["profile", "gc", "gcPauses", "trace"] as const).filter((key) => opts[key]).map((key) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`));
  if (diagnostics.length) lines.push(`DIAGNOSTIC RUN (${diagnostics.map((d) => `--${d}`).join(" ")}): what it watches costs time; these are not the numbers to report`);
  lines.push(
    `wrangler dev, local observability OFF (X_LOCAL_OBSERVABILITY=false); app settings raised with ${results.vars.map((v) => `--var ${v}`).join(" ")}; ` +
      (opts.stateDir ? `local state in ${opts.stateDir}; servers not being measured paused, and the measured one's esbuild watcher too` : "local state in the temp directory"),
  );
  lines.push(
    `each number: median of ${opts.runs} run(s) [min-max]; loopback WebSockets (ws, no compression) from one Node process; ` +
      `S1-S3: 10 (S3: 2) devices per conversation, app devices also hold their user socket${opts.receiptMs ? ` and send a delivered receipt at most every ${opts.receiptMs} ms` : ""}`,
  );
  lines.push("");
  // S8, S9 and S10 have tables of their own (below): without another scenario this one is empty.
  if (rows.length > 0) {
    lines.push(line(header));
    lines.push(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
    for (const r of rows) lines.push(line(r));
    lines.push("");
  }
  if ((["S1", "S2"] as const).some((k) => results.runs[k]?.alone?.length)) lines.push(`alone: the app with ${aloneWhat(opts)} (bench/alone/worker.ts)`);
  if (OTHERS.includes("before")) lines.push(`before: the app at ${results.beforeCommit ?? "?"} (--before ${opts.before ?? "?"}), beside the app in every run`);
  // Results saved before S1-S4 bypassed the proxy have no `viaProxy` option: they went through it.
  const measuredViaProxy = opts.viaProxy !== false;
  const others = (["S1", "S2", "S3", "S4", "S6"] as const).filter((k) => results.runs[k]);
  if (others.length) {
    lines.push(
      measuredViaProxy
        ? `${others.join(", ")} went through wrangler's proxy port`
        : `${others.join(", ")} sockets and requests go to each runtime's own entry socket, not wrangler's proxy (a second workerd process relaying every frame, not part of a deployment)`,
    );
  }
  if (results.runs.S5) {
    const s5 = [...(results.runs.S5.app ?? []), ...(results.runs.S5.baseline ?? [])];
    lines.push(
      s5.some((r) => r.viaProxy)
        ? "S5 went through wrangler's proxy port (--s5-via-proxy)"
        : "S5 sockets and requests go to each runtime's own entry socket, not wrangler's proxy (which runs out of file descriptors near 4,400 sockets here)",
    );
    const app = results.runs.S5.app ?? [];
    if (app.length) {
      lines.push(
        app.every((r) => r.tickets)
          ? "S5: each app socket first takes a single-use ticket (POST /auth/ticket, then ?ticket=), as the web client does"
          : app.some((r) => r.tickets)
            ? "S5: app sockets took tickets in some runs and sent the bearer token in others"
            : "S5: app sockets sent the bearer token in the handshake (--s5-bearer, or a results file from before S5 took tickets)",
      );
      if (results.appAssets) {
        lines.push(
          "S5: the app has [assets], so under wrangler dev its sockets and requests pass through the assets router in front of its Worker, which holds memory per socket and costs CPU per request that the bare baseline (no assets) does not pay (docs/performance.md, S5)",
        );
      }
    }
  }
  if (results.runs.S7) {
    lines.push(
      "S7: the E2EE sender sends ciphertexts encrypted beforehand (bench/lib/mlsClient.ts), in turn and again from the start when they run out; the server reads only their headers, so a repeat costs it the same. Receivers do not decrypt: S8 has the client's cost",
    );
  }
  if (results.s8) lines.push("", ...renderS8(results.s8));
  if (runs.S9?.app?.length) lines.push("", ...renderS9(runs.S9.app));
  if (runs.S10?.app?.length) lines.push("", ...renderS10(runs.S10.app, results.s10Seeds ?? []));
  if (results.reloads?.length) lines.push(`WARNING: wrangler reloaded the Worker (a source file changed on disk) during ${results.reloads.join(", ")}: those numbers are not valid`);
  const targets = checkTargets(results, opts);
  if (targets.length) lines.push(...targets.map((t) => `target: ${t}`));
  return lines.join("\n");
}

/** S8's table: each group size's engine costs, and each against the smallest group's. */
function renderS8(s8: NonNullable<Results["s8"]>): string[] {
  const [first] = s8.groups;
  if (!first) return [];
  const sizes = s8.groups.map((g) => g.devices);
  const header = ["S8 client MLS engine (ms)", ...sizes.map((n) => `${n.toLocaleString("en-US")} devices`), ...sizes.slice(1).map((n) => `${n}/${first.devices}`)];
  const rows: string[][] = [];
  const msCell = (v: number) => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : v.toFixed(v >= 10 ? 0 : 2));
  const costRow = (name: string, f: (g: (typeof s8.groups)[number]) => number) =>
    rows.push([name, ...s8.groups.map((g) => msCell(f(g))), ...s8.groups.slice(1).map((g) => `${(f(g) / f(first)).toFixed(1)}x`)]);
  costRow("n - 1 devices made, a key package each", (g) => g.keyPackagesMs);
  costRow("  per device", (g) => g.keyPackagesMs / (g.devices - 1));
  costRow("one commit adding them all (creator)", (g) => g.addCommitMs);
  costRow("its Welcome processed (one joiner)", (g) => g.welcomeMs);
  costRow("an update commit made (a member)", (g) => g.updateCommitMs);
  costRow("that commit processed (another member)", (g) => g.processCommitMs);
  costRow("encrypt, per message", (g) => g.encryptMs);
  costRow("decrypt, per message", (g) => g.decryptMs);
  const kib = (chars: number) => `${(chars / 1024).toFixed(1)} KiB`;
  const sizeRow = (name: string, f: (g: (typeof s8.groups)[number]) => number) =>
    rows.push([name, ...s8.groups.map((g) => kib(f(g))), ...s8.groups.slice(1).map((g) => `${(f(g) / f(first)).toFixed(1)}x`)]);
  sizeRow("add commit, base64url", (g) => g.sizes.addCommit);
  sizeRow("Welcome, base64url", (g) => g.sizes.welcome);
  sizeRow("GroupInfo (with the ratchet tree), base64url", (g) => g.sizes.groupInfo);
  sizeRow("update commit, base64url", (g) => g.sizes.updateCommit);
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((r) => String(r[c] ?? "").length)));
  const line = (r: string[]) => `| ${r.map((v, c) => String(v).padEnd(widths[c] ?? 0)).join(" | ")} |`;
  const { encodeMs, decodeMs } = s8.plaintext;
  const per = (mls: number, plain: number) => `${(mls / plain).toFixed(0)}x`;
  return [
    line(header),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...rows.map(line),
    "",
    `S8 baseline, a plaintext client (JSON encoding and decoding of the send frame of the same ~100-character message): ` +
      `encode ${(encodeMs * 1000).toFixed(2)} µs, decode ${(decodeMs * 1000).toFixed(2)} µs; ` +
      `MLS encrypt is ${per(first.encryptMs, encodeMs)} and decrypt ${per(first.decryptMs, decodeMs)} of those (group of ${first.devices}); ` +
      `a ciphertext is ${first.sizes.ciphertext} characters against the plaintext frame's ${first.sizes.plaintextFrame}`,
    `S8: in one Node process (ts-mls, pure TypeScript); each cost the median of ${s8.groups.map((g) => `${g.runs} group${g.runs > 1 ? "s" : ""} of ${g.devices}`).join(", ")}; encrypt and decrypt the median of the messages of each group`,
  ];
}

/** A markdown table of `rows` under `header`, its columns padded. */
function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((r) => String(r[c] ?? "").length)));
  const line = (r: string[]) => `| ${header.map((_, c) => String(r[c] ?? "").padEnd(widths[c] ?? 0)).join(" | ")} |`;
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)];
}

/** "median [min-max]" of `xs`, or the value alone when they are all one. */
function range(xs: readonly Maybe[], digits?: number): string {
  const s = spread(xs);
  if (!s) return "n/a";
  return s.min === s.max ? fmt(s.med, digits) : `${fmt(s.med, digits)} [${fmt(s.min, digits)}-${fmt(s.max, digits)}]`;
}

/** S9's tables: D1 per operation, D1 writes per message through the outbox, auth with and without D1. */
function renderS9(s9runs: RunOf["S9"][]): string[] {
  const out: string[] = [];
  const [first] = s9runs;
  if (!first) return out;
  const byName = (name: string) => s9runs.flatMap((r) => r.operations.filter((o) => o.name === name));
  const all = <T>(ops: RunOf["S9"]["operations"], f: (o: RunOf["S9"]["operations"][number]) => T[]) => ops.flatMap(f);
  const opRows = first.operations.map((o) => {
    const ops = byName(o.name);
    const awaited = all(ops, (x) => x.awaited);
    const notAwaited = all(ops, (x) => x.notAwaited);
    const after = all(ops, (x) => x.after);
    const calls = (ts: D1Totals[]) => range(ts.map((t) => t.calls), 0);
    return [
      o.name,
      calls(awaited),
      // `raw` calls (drizzle's selects) return no meta: their rows read are not known.
      `${range(awaited.map((t) => t.rowsRead), 0)}${awaited.some((t) => t.unreported > 0) ? ` (+${range(awaited.map((t) => t.unreported), 0)} raw call(s), not reported)` : ""}`,
      range(awaited.map((t) => t.ms), 0),
      calls(notAwaited),
      `${calls(after)} / ${range(after.map((t) => t.writes), 0)} / ${range(after.map((t) => t.rowsWritten), 0)}`,
      range(all(ops, (x) => x.ms), 2),
    ];
  });
  out.push(
    `S9 D1 queries per operation, counted (bench/counted/worker.ts), ${first.operations[0]?.awaited.length ?? 0} repeats x ${s9runs.length} run(s): median [min-max]`,
    ...table(["operation", "D1 calls awaited", "rows read awaited", "D1 ms awaited", "D1 calls begun, not awaited", "after the answer: calls / writes / rows written", "answer ms"], opRows),
    "",
    "S9 what each operation's D1 calls were (first repeat; awaited, then after the answer):",
  );
  for (const o of first.operations) {
    if (o.awaitedSql.length) out.push(`  ${o.name}, awaited: ${o.awaitedSql.join("; ")}`);
    if (o.afterSql.length) out.push(`  ${o.name}, after: ${o.afterSql.join("; ")}`);
  }
  const bursts = s9runs.flatMap((r) => r.outbox);
  const per = (f: (b: (typeof bursts)[number]) => number, members: number, digits = 3) => range(bursts.filter((b) => b.members === members).map(f), digits);
  const memberCounts = [...new Set(bursts.map((b) => b.members))];
  out.push(
    "",
    `S9 D1 work per message of a burst of ${first.outbox[0]?.messages ?? 0} socket sends (20 unacked, no receipts), until D1 was quiet`,
    ...table(
      ["group", "D1 calls", "statements", "writes", "rows written", "of which the outbox: writes / rows written", "per binding: statements", "calls settled before the last ack"],
      memberCounts.map((m) => {
        const bindings = [...new Set(bursts.filter((b) => b.members === m).flatMap((b) => Object.keys(b.perBinding)))];
        return [
          `${m} members`,
          per((b) => b.all.calls, m),
          per((b) => b.all.statements, m),
          per((b) => b.all.writes, m),
          per((b) => b.all.rowsWritten, m),
          `${per((b) => b.outbox.writes, m)} / ${per((b) => b.outbox.rowsWritten, m)}`,
          bindings.map((name) => `${name} ${per((b) => b.perBinding[name]?.statements ?? 0, m)}`).join(", "),
          per((b) => b.awaitedByAcks, m, 0),
        ];
      }),
    ),
  );
  for (const b of first.outbox) out.push(`  ${b.members} members: ${b.sql.join("; ")}`);
  const kinds: [AuthKind, string][] = [
    ["none", "no auth (the floor: base middleware, 204)"],
    ["signed", "signed token + session in the user's object (the app's requireAuth)"],
    ["d1", "D1 token lookup (its hash by a unique key, as before signed tokens)"],
    ["me", "GET /me (the app: auth + its handler)"],
  ];
  const authOf = (mode: "sequential" | "concurrent", kind: AuthKind, f: (c: AuthCost) => number | null) => s9runs.map((r) => f(r.auth[mode][kind]));
  out.push(
    "",
    `S9 an authenticated request, with and without D1 (each kind ${first.auth.sequential.none.requests} requests one at a time, then ${first.auth.concurrent.none.requests} with ${first.concurrency} in flight, in rotating rounds)`,
    ...table(
      ["request", "1 in flight: p50 / p99 ms", "mean ms", "runtime CPU ms per request", `${first.concurrency} in flight: requests/s`, "p50 / p99 ms", "CPU ms per request"],
      kinds.map(([kind, label]) => [
        label,
        `${range(authOf("sequential", kind, (c) => c.p50), 2)} / ${range(authOf("sequential", kind, (c) => c.p99), 2)}`,
        range(authOf("sequential", kind, (c) => c.meanMs), 3),
        range(authOf("sequential", kind, (c) => c.cpuMsPerRequest), 3),
        range(authOf("concurrent", kind, (c) => c.perSec), 0),
        `${range(authOf("concurrent", kind, (c) => c.p50), 2)} / ${range(authOf("concurrent", kind, (c) => c.p99), 2)}`,
        range(authOf("concurrent", kind, (c) => c.cpuMsPerRequest), 3),
      ]),
    ),
  );
  const med = (xs: (number | null)[]) => median(xs) ?? Number.NaN;
  const ratioOf = (mode: "sequential" | "concurrent", f: (c: AuthCost) => number) => `${(med(authOf(mode, "d1", f)) / med(authOf(mode, "signed", f))).toFixed(2)}x`;
  // What each way of authenticating adds to the floor, in ms: a difference, since a ratio of two
  // small differences swings with the machine's noise.
  const over = (mode: "sequential" | "concurrent", kind: AuthKind, f: (c: AuthCost) => number) => {
    const d = med(authOf(mode, kind, f)) - med(authOf(mode, "none", f));
    return `${d >= 0 ? "+" : ""}${d.toFixed(3)}`;
  };
  out.push(
    `S9 auth by D1 lookup / auth by signed token: mean latency ${ratioOf("sequential", (c) => c.meanMs)}, CPU per request ${ratioOf("sequential", (c) => c.cpuMsPerRequest)}; ` +
      `with ${first.concurrency} in flight: requests/s ${ratioOf("concurrent", (c) => c.perSec)}, CPU per request ${ratioOf("concurrent", (c) => c.cpuMsPerRequest)}`,
    `S9 over the floor (no auth), ms: D1 lookup ${over("sequential", "d1", (c) => c.meanMs)} latency, ${over("sequential", "d1", (c) => c.cpuMsPerRequest)} CPU; ` +
      `signed token ${over("sequential", "signed", (c) => c.meanMs)} latency, ${over("sequential", "signed", (c) => c.cpuMsPerRequest)} CPU (one at a time); ` +
      `with ${first.concurrency} in flight, CPU: D1 lookup ${over("concurrent", "d1", (c) => c.cpuMsPerRequest)}, signed token ${over("concurrent", "signed", (c) => c.cpuMsPerRequest)}`,
    "S9: locally D1 is SQLite in the same process and the user's object on the same thread, both a call away; in a deployment D1 is one remote database for every request (one query at a time), the user's object the caller's own",
  );
  return out;
}

/** S10's table: per number of conversations, the sync's and the list's cost per page, and their growth. */
function renderS10(s10runs: RunOf["S10"][], seeds: NonNullable<Results["s10Seeds"]>): string[] {
  const sizes = [...new Set(s10runs.map((r) => r.conversations))].sort((a, b) => a - b);
  const of = (n: number) => s10runs.filter((r) => r.conversations === n);
  const syncPages = (n: number) => of(n).flatMap((r) => r.sync);
  const listPages = (n: number) => of(n).flatMap((r) => r.list.flat());
  type Page = ReturnType<typeof syncPages>[number];
  const stat = (pages: (n: number) => Page[], f: (p: Page) => number) => (n: number) => median(pages(n).map(f));
  const metrics: [string, (n: number) => string, ((n: number) => number | null) | null][] = [
    ["messages synced (pages)", (n) => `${of(n)[0]?.messages ?? 0} (${of(n)[0]?.syncPages ?? 0} of ${of(n)[0]?.limit ?? 0})`, null],
    ["sync: whole backlog s", (n) => range(of(n).flatMap((r) => r.syncSeconds), 2), (n) => median(of(n).flatMap((r) => r.syncSeconds))],
    ["sync: ms per page", (n) => range(syncPages(n).map((p) => p.ms), 1), stat(syncPages, (p) => p.ms)],
    ["sync: D1 calls awaited per page", (n) => range(syncPages(n).map((p) => p.d1.calls), 0), stat(syncPages, (p) => p.d1.calls)],
    ["sync: D1 rows read per page", (n) => range(syncPages(n).map((p) => p.d1.rowsRead), 0), stat(syncPages, (p) => p.d1.rowsRead)],
    ["sync: D1 ms awaited per page", (n) => range(syncPages(n).map((p) => p.d1.ms), 0), stat(syncPages, (p) => p.d1.ms)],
    ["list: pages (conversations each)", (n) => `${of(n)[0]?.list[0]?.length ?? 0} (${range(listPages(n).map((p) => p.items), 0)})`, null],
    ["list: ms per page", (n) => range(listPages(n).map((p) => p.ms), 1), stat(listPages, (p) => p.ms)],
    ["list: D1 calls awaited per page", (n) => range(listPages(n).map((p) => p.d1.calls), 0), stat(listPages, (p) => p.d1.calls)],
    ["list: D1 rows read per page", (n) => range(listPages(n).map((p) => p.d1.rowsRead), 0), stat(listPages, (p) => p.d1.rowsRead)],
    ["list: D1 ms awaited per page", (n) => range(listPages(n).map((p) => p.d1.ms), 0), stat(listPages, (p) => p.d1.ms)],
    ["list: ms per conversation listed", (n) => range(listPages(n).map((p) => p.ms / Math.max(1, p.items)), 3), stat(listPages, (p) => p.ms / Math.max(1, p.items))],
  ];
  const [smallest] = sizes;
  const growth = sizes.slice(1).map((n) => `${n}/${smallest}`);
  const rows = metrics.map(([name, show, value]) => [
    name,
    ...sizes.map(show),
    ...sizes.slice(1).map((n) => {
      const a = value?.(n);
      const b = smallest === undefined ? null : value?.(smallest);
      return a !== null && a !== undefined && b ? `${(a / b).toFixed(2)}x` : "";
    }),
  ]);
  const seeded = seeds.map((s) => `${s.conversations.toLocaleString("en-US")} in ${s.seconds.toFixed(1)} s (+${s.drainSeconds.toFixed(1)} s until D1 was quiet)`).join(", ");
  return [
    `S10 a user in many conversations, ${seeds[0]?.messagesPerConversation ?? "?"} messages each, syncing after a day away (GET /messages?since=<epoch ms a day back>&limit=${s10runs[0]?.limit ?? "?"}, to the end, ${sizes.map((n) => `${of(n)[0]?.syncSeconds.length ?? 0} times at ${n}`).join(", ")}) and listing them (GET /conversations, ${s10runs[0]?.list.length ?? 0} times); ${smallest === undefined ? 0 : of(smallest).length} run(s) each; median [min-max] over every page`,
    ...table(["metric", ...sizes.map((n) => `${n.toLocaleString("en-US")} conversations`), ...growth], rows),
    `S10 seeded: ${seeded}. "Per page" counts what each page's answer waited for; the target is a cost per page that does not grow with the conversations beyond the page itself`,
  ];
}

function checkTargets(results: Results, opts: Options): string[] {
  const runs = results.runs;
  const out: string[] = [];
  const med = <K extends ScenarioKey>(key: K, target: Column, f: (r: RunOf[K]) => Maybe): number | null => median(runsOf(runs, key, target).map(f));
  // A missing median counts as 0 in a ratio or a comparison, as JavaScript's arithmetic has it.
  const n = (x: number | null): number => x ?? 0;
  const ofBaseline = (t: Column) => n(med("S2", t, (x) => x.ackedPerSec)) / n(med("S2", "baseline", (x) => x.ackedPerSec));
  if (runs.S2?.app?.length && runs.S2.baseline?.length) {
    const r = ofBaseline("app");
    out.push(`S2 app/baseline acked ${r.toFixed(2)}x (>= 0.6x; aim 0.8x): ${r >= 0.6 ? "MET" : "NOT MET"}`);
    if (runs.S2.relay?.length) {
      out.push(`  (the relay baseline itself, no storage, reaches ${ofBaseline("relay").toFixed(2)}x of the bare broadcast)`);
    }
    if (runs.S2.store?.length) {
      out.push(`  (the store baseline, one insert per message and nothing else, reaches ${ofBaseline("store").toFixed(2)}x of the bare broadcast)`);
    }
    if (runs.S2.alone?.length) {
      out.push(`  (the conversation alone, ${aloneWhat(opts)}, reaches ${ofBaseline("alone").toFixed(2)}x of the bare broadcast)`);
    }
    if (runs.S2.before?.length) {
      const b = ofBaseline("before");
      out.push(`S2 against the app before (${results.beforeCommit ?? "?"}): ${r.toFixed(2)}x of bare now, ${b.toFixed(2)}x before: ${r >= b ? "no worse" : `${((1 - r / b) * 100).toFixed(0)}% worse`}`);
    }
  }
  const k = opts.s1.rates.indexOf(500);
  const s1App = runs.S1?.app ?? [];
  if (s1App.length && k >= 0) {
    const p99At500 = (t: Column) => med("S1", t, (x) => x.rates[k]?.p99);
    const p99 = p99At500("app");
    out.push(`S1 p99 at 500 msg/s ${fmt(p99, 1)} ms (<= 10 ms): ${n(p99) <= 10 ? "MET" : "NOT MET"}`);
    for (const kind of ["relay", "store"] as const) {
      if (runs.S1?.[kind]?.length) out.push(`  (the ${kind} baseline's p99 at 500 msg/s: ${fmt(p99At500(kind), 1)} ms)`);
    }
    if (runs.S1?.alone?.length) {
      out.push(`  (the conversation alone, ${aloneWhat(opts)}: p99 ${fmt(p99At500("alone"), 1)} ms)`);
    }
    if (runs.S1?.before?.length) {
      const b = p99At500("before");
      const ofBare = (x: number | null) => `${(n(x) / n(p99At500("baseline"))).toFixed(2)}x`;
      out.push(`S1 p99 at 500 msg/s against the app before (${results.beforeCommit ?? "?"}): ${fmt(p99, 1)} ms now (${ofBare(p99)} of bare), ${fmt(b, 1)} ms before (${ofBare(b)})`);
    }
    for (const [i, rate] of opts.s1.rates.entries()) {
      const baseLoss = med("S1", "baseline", (x) => x.rates[i]?.loss);
      const appLoss = Math.max(...s1App.map((x) => x.rates[i]?.loss ?? Number.NaN));
      if (baseLoss === null || baseLoss === 0) out.push(`S1 loss at ${rate} msg/s (baseline sustains it): ${appLoss === 0 ? "none, MET" : `${(appLoss * 100).toFixed(2)}%, NOT MET`}`);
    }
  }
  const s5App = runs.S5?.app ?? [];
  if (s5App[0]) {
    const kb = n(med("S5", "app", (x) => x.memoryPerSocket.runtime)) / 1024;
    const heap = med("S5", "app", (x) => x.memoryPerSocket.heap ?? null);
    const again = med("S5", "app", (x) => x.memoryPerSocket.reconnected ?? null);
    // What an open idle socket keeps, where measured (results saved before it lack it): the target's measure.
    const kept = med("S5", "app", (x) => x.memoryPerSocket.keptOpen ?? null);
    const keptBare = med("S5", "baseline", (x) => x.memoryPerSocket.keptOpen ?? null);
    const memoryNote =
      (heap === null ? "" : ` (the isolate's live heap: ${fmt(heap / 1024, 2)} KB of it)`) +
      (again === null ? "" : `, ${fmt(again / 1024, 1)} KB more when all reconnected`);
    const ok = s5App.every((x) => x.synced === x.syncedExpected && x.liveReceived === x.sockets);
    const resumed = `all ${s5App[0].sockets} resumed with nothing lost: ${ok ? "MET" : "NOT MET"}`;
    if (kept === null) {
      out.push(`S5 ${fmt(kb, 1)} KB of runtime RSS per idle socket${memoryNote} (< 10 KB): ${kb < 10 ? "MET" : "NOT MET"}; ${resumed}`);
    } else {
      // The bare broadcast runs no code of ours: what it keeps is the runtime's own floor.
      const bare =
        keptBare === null
          ? ""
          : ` (the bare broadcast keeps ${fmt(keptBare / 1024, 1)} KB${keptBare / 1024 >= 10 ? ", so under 10 KB is not reachable on this runtime" : ""})`;
      out.push(`S5 ${fmt(kept / 1024, 1)} KB of runtime RSS kept per open idle socket${bare} (< 10 KB): ${kept / 1024 < 10 ? "MET" : "NOT MET"}; ${resumed}`);
      out.push(`S5   (when connecting: ${fmt(kb, 1)} KB per socket${memoryNote})`);
    }
  }
  const fresh = runs.S6?.fresh ?? [];
  const history = runs.S6?.history ?? [];
  if (fresh.length && history.length) {
    type S6Run = RunOf["S6"];
    const cpuOf = (x: S6Run) => x.cpuMsPerMessage.runtimeAll;
    const rateOf = (x: S6Run) => x.ackedPerSec;
    const historyOverFresh = (f: (x: S6Run) => Maybe) => n(med("S6", "history", f)) / n(med("S6", "fresh", f));
    // Whether the two sets of runs overlap: a per-message cost that grew with history would set
    // them apart by a multiple, not by this machine's run-to-run spread.
    const overlap = (f: (x: S6Run) => Maybe) => {
      const [a, b] = [spread(fresh.map(f)), spread(history.map(f))];
      if (!a || !b || a.n < 2 || b.n < 2) return "one run: no spread to compare with";
      return a.min <= b.max && b.min <= a.max ? "within the runs' spread" : "outside the runs' spread";
    };
    out.push(
      `S6 a send into a group of ${(results.s6Seed?.stored ?? 0).toLocaleString("en-US")} messages against a fresh group: ` +
        `CPU per message ${fmt(historyOverFresh(cpuOf), 2)}x (${overlap(cpuOf)}), ` +
        `acked rate ${fmt(historyOverFresh(rateOf), 2)}x (${overlap(rateOf)})`,
    );
  }
  const s4 = runs.S4?.app?.[0];
  if (s4) {
    const s = med("S4", "app", (x) => x.seconds);
    const count = s4.messages;
    out.push(`S4 ${count.toLocaleString("en-US")} messages synced in ${fmt(s, 2)} s (100k in < 5 s): ${count >= 100_000 ? (n(s) < 5 ? "MET" : "NOT MET") : "not measured at 100k"}`);
  }
  const s9runs = runs.S9?.app ?? [];
  if (s9runs[0]) {
    // The app's own operations: the bench's auth baselines are not the app's.
    const ops = s9runs[0].operations.filter((o) => !o.name.startsWith("bench:"));
    const awaited = ops.map((o) => {
      const most = Math.max(...s9runs.flatMap((r) => r.operations.filter((x) => x.name === o.name).flatMap((x) => x.awaited.map((t) => t.calls))));
      return { name: o.name, most };
    });
    const waiting = awaited.filter((a) => a.most > 0);
    out.push(
      `S9 D1 queries awaited per message sent and per authenticated request (0): ${waiting.length === 0 ? "MET" : `NOT MET: ${waiting.map((a) => `${a.name} ${a.most}`).join(", ")}`}`,
    );
  }
  const s10runs = runs.S10?.app ?? [];
  const sizes = [...new Set(s10runs.map((r) => r.conversations))].sort((a, b) => a - b);
  const [fewest] = sizes;
  const most = sizes.at(-1);
  if (fewest !== undefined && most !== undefined && most > fewest) {
    const perPage = (c: number, f: (r: RunOf["S10"]) => number[]) => n(median(s10runs.filter((r) => r.conversations === c).flatMap(f)));
    const growth = (f: (r: RunOf["S10"]) => number[]) => perPage(most, f) / perPage(fewest, f);
    // Time per page and D1 rows read per page; rows only where pages read D1 at all (0/0 is flat).
    const cost = (pages: (r: RunOf["S10"]) => { ms: number; d1: D1Totals }[]) => {
      const ms = growth((r) => pages(r).map((p) => p.ms));
      const rowsMost = perPage(most, (r) => pages(r).map((p) => p.d1.rowsRead));
      const rowsFewest = perPage(fewest, (r) => pages(r).map((p) => p.d1.rowsRead));
      const rows = rowsMost === 0 ? 1 : rowsMost / rowsFewest;
      // Within 1.5x: the machine's noise; a cost that grows with the conversations shows as a multiple.
      const ok = ms <= 1.5 && rows <= 1.5;
      return `time ${ms.toFixed(2)}x, D1 rows read ${Number.isFinite(rows) ? rows.toFixed(2) : "n/a"}x (${ok ? "flat, MET" : "grows, NOT MET"})`;
    };
    out.push(
      `S10 cost per page, ${most.toLocaleString("en-US")} conversations against ${fewest.toLocaleString("en-US")} (must not grow beyond the page): ` +
        `sync ${cost((r) => r.sync)}; conversation list ${cost((r) => r.list.flat())}`,
    );
  }
  return out;
}

await main();
