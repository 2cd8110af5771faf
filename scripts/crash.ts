#!/usr/bin/env node
// `npm run test:crash`: the crash test against the real server (docs/reliability.md).
//
// It starts `npm run dev` on free loopback ports with its local state in a temp dir, in its own
// process group. Several clients (members of two groups) send a storm of messages over their
// conversation sockets and `POST /send`, each with its own clientMsgId. At each kill point the
// whole process group (npm, wrangler, workerd) gets SIGKILL; the server is started again on the
// same state, every client reconnects with `?after=<last seq it saw>` and resends every message not
// yet acked, with the same clientMsgId. Kill points cycle through: right after a burst (every
// client has just written a burst of frames and requests, nothing answered yet), mid-storm (at a
// random send), and during recovery (just after a restart, while the resends are in flight).
//
// At the end, with every message resent until acked: every acked message is stored exactly once
// with the id and seq of its ack, seq is contiguous from 1 in each conversation, and every
// member's sync (`GET /messages?since=` paged) returns every message of the conversation. Then a
// table; the exit code is 1 if anything was lost, doubled, out of order or undelivered.
//
// Then, on the same server, text frames holding ill-formed UTF-8 bytes over a raw connection
// (Node's WebSocket can only send well-formed text): see rawFrames below.
//
// Counts: CRASH_KILLS (default 3, at least 3) and CRASH_MESSAGES (default 600); `npm run
// test:crash -- --long` is 6 kills and 6,000 messages. CRASH_SEED replays the random choices;
// CRASH_VERBOSE=1 streams the server's output.
import { randomBytes } from "node:crypto";
import { rmSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DevServer, freePorts, groupAlive, signalGroup } from "./lib/dev-server.ts";
import { apiRequest } from "./lib/http.ts";
import { prng, type Rng } from "./lib/prng.ts";
import { rawFrames, type RawFramesReport } from "./lib/rawFrames.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const LONG = process.argv.includes("--long");
const count = (value: string | undefined, fallback: number) => (value !== undefined && /^\d+$/.test(value) ? Number(value) : fallback);
const KILLS = Math.max(3, count(process.env.CRASH_KILLS, LONG ? 6 : 3));
const MESSAGES = count(process.env.CRASH_MESSAGES, LONG ? 6000 : 600);
const SEED = count(process.env.CRASH_SEED, Date.now() % 2 ** 31);
const VERBOSE = process.env.CRASH_VERBOSE === "1";
const START_TIMEOUT_MS = 120_000;
const REQUEST_TIMEOUT_MS = 15_000;
const SYNC_TIMEOUT_MS = 90_000;
/** Frames a client's socket may have written and not seen acked before it waits. */
const IN_FLIGHT = 8;
/** Each client's burst before a kill "right after a burst": frames on its socket and REST sends. */
const BURST_FRAMES = 20;
const BURST_REQUESTS = 5;

const T0 = Date.now();
const log = (msg: string) => console.log(`crash: [${((Date.now() - T0) / 1000).toFixed(1).padStart(6)} s] ${msg}`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

class CrashError extends Error {}

// What the test reads of the API's answers (protocol/schemas.ts has the whole shapes).
interface Message {
  id: string;
  seq: number;
  conversationId: string;
  senderId: string;
  clientMsgId: string | null;
  kind: string;
}
interface Frame {
  type: string;
  clientMsgId?: string;
  message?: Message;
  code?: string;
}

async function api<T>(base: string, method: string, path: string, token?: string, body?: unknown): Promise<{ status: number; json: T | null; text: string }> {
  const { status, text } = await apiRequest(base, method, path, { token, body, timeoutMs: REQUEST_TIMEOUT_MS });
  let json: T | null = null;
  try {
    json = text ? (JSON.parse(text) as T) : null;
  } catch {
    // not JSON: the caller looks at the status
  }
  return { status, json, text };
}

async function expectOk<T>(base: string, method: string, path: string, token?: string, body?: unknown): Promise<T> {
  const res = await api<T>(base, method, path, token, body);
  if (res.status < 200 || res.status > 299 || res.json === null) throw new CrashError(`${method} ${path}: ${res.status} ${res.text.slice(0, 300)}`);
  return res.json;
}

// --- The report ----------------------------------------------------------------------------------

const report = {
  kills: new Map<string, number>(),
  restartSeconds: [] as number[],
  sent: 0,
  acked: 0,
  stored: 0,
  lost: 0,
  duplicated: 0,
  /** Acked with one id or seq, stored with another. */
  changed: 0,
  /** Stored with a clientMsgId no client sent. */
  unexpected: 0,
  /** Messages in flight (sent, not acked) when the server was killed: their outcome was unknown. */
  inFlightAtKill: 0,
  /** Resends of an unacked message with its clientMsgId, after a restart or at the end. */
  retried: 0,
  /** Answers other than an ack to a send: 429/503 while the server was busy, retried. */
  refusedThenRetried: 0,
  /** (member, message) pairs: the message is in the member's sync. */
  delivered: 0,
  undelivered: 0,
  seqGaps: 0,
  fiveHundreds: 0,
};

function printReport(raw: RawFramesReport | null): void {
  const sorted = [...report.restartSeconds].sort((a, b) => a - b);
  const rows: Array<[string, string | number]> = [
    ["seed", SEED],
    ...[...report.kills].map(([kind, n]): [string, number] => [`kills: ${kind}`, n]),
    ["kills", [...report.kills.values()].reduce((a, b) => a + b, 0)],
    ["restart to first answer", sorted.length ? `median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} s, max ${sorted[sorted.length - 1]!.toFixed(1)} s` : "-"],
    ["messages sent", report.sent],
    ["messages in flight at a kill", report.inFlightAtKill],
    ["messages retried", report.retried],
    ["messages refused then retried (429/503)", report.refusedThenRetried],
    ["messages acked", report.acked],
    ["messages stored", report.stored],
    ["messages lost", report.lost],
    ["messages duplicated", report.duplicated],
    ["messages changed after the ack", report.changed],
    ["messages nobody sent", report.unexpected],
    ["seq gaps", report.seqGaps],
    ["messages delivered (member x message, by sync)", report.delivered],
    ["messages undelivered", report.undelivered],
    ["5xx answers", report.fiveHundreds],
  ];
  if (raw) {
    rows.push(["raw frames with ill-formed UTF-8", raw.tried]);
    for (const [answer, n] of raw.answers) rows.push([`  answered: ${answer}`, n]);
    rows.push(["  acked and then stored otherwise", raw.ackedNotAsStored]);
    rows.push(["  other answers (not documented)", raw.undocumented]);
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log(["", "crash report", ...rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`)].join("\n"));
}

// --- Clients -------------------------------------------------------------------------------------

/** One member's device: a conversation socket (one at a time) and REST sends. */
class Client {
  socket: WebSocket | null = null;
  /** clientMsgId -> body: sent, not yet acked; resent with the same id after a restart. */
  readonly pending = new Map<string, string>();
  /** clientMsgId -> the stored message's id and seq, as its ack said. */
  readonly acked = new Map<string, { id: string; seq: number }>();
  lastSeq = 0;
  private sentCount = 0;
  private inFlight = 0;
  private wakeSender: (() => void) | null = null;

  readonly base: () => string;
  readonly label: string;
  readonly userId: string;
  readonly token: string;
  readonly conversationId: string;

  constructor(base: () => string, label: string, userId: string, token: string, conversationId: string) {
    this.base = base;
    this.label = label;
    this.userId = userId;
    this.token = token;
    this.conversationId = conversationId;
  }

  nextId(): string {
    return `${this.label}-${this.sentCount++}`;
  }

  private onAck(clientMsgId: string, message: { id: string; seq: number }): void {
    if (!this.acked.has(clientMsgId)) this.acked.set(clientMsgId, { id: message.id, seq: message.seq });
    else {
      const first = this.acked.get(clientMsgId)!;
      // A resend is answered with the stored message: the same id and seq.
      if (first.id !== message.id || first.seq !== message.seq) report.changed++;
    }
    if (this.pending.delete(clientMsgId)) this.inFlight = Math.max(0, this.inFlight - 1);
    this.wakeSender?.();
  }

  /** Opens a socket resuming after the last seq seen; resolves at `ready`, rejects if it closes first. */
  async connect(): Promise<void> {
    const ticket = await expectOk<{ ticket: string }>(this.base(), "POST", "/auth/ticket", this.token);
    const url = `${this.base().replace(/^http/, "ws")}/conversations/${encodeURIComponent(this.conversationId)}/ws?ticket=${encodeURIComponent(ticket.ticket)}&after=${this.lastSeq}`;
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new CrashError(`${this.label}: no ready within ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS);
      ws.addEventListener("message", (event) => {
        if (typeof event.data !== "string" || event.data === "pong") return;
        const frame = JSON.parse(event.data) as Frame;
        if (frame.type === "ready") {
          clearTimeout(timer);
          resolve();
        } else if (frame.type === "ack" && frame.clientMsgId && frame.message) {
          this.lastSeq = Math.max(this.lastSeq, frame.message.seq);
          this.onAck(frame.clientMsgId, frame.message);
        } else if (frame.type === "message" && frame.message) {
          this.lastSeq = Math.max(this.lastSeq, frame.message.seq);
        } else if (frame.type === "error") {
          // A send refused while the object was busy is retried; anything else is a failure.
          if (frame.code !== "unavailable" && frame.code !== "rate_limited") console.error(`crash: ${this.label}: error frame ${event.data}`);
        }
      });
      const closed = () => {
        clearTimeout(timer);
        if (this.socket === ws) this.socket = null;
        this.inFlight = 0;
        this.wakeSender?.();
        reject(new CrashError(`${this.label}: socket closed before ready`));
      };
      ws.addEventListener("close", closed);
      ws.addEventListener("error", closed);
    });
    this.socket = ws;
  }

  /** Reconnects, retrying while the server is not there yet, and resends every unacked message. */
  async recover(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.connect();
        break;
      } catch (err) {
        if (attempt >= 20) throw err;
        await sleep(250 + attempt * 100);
      }
    }
    this.inFlight = 0;
    for (const [clientMsgId, body] of this.pending) {
      report.retried++;
      this.frame(clientMsgId, body);
    }
  }

  /** Writes a send frame; false when there is no open socket (the message stays pending). */
  private frame(clientMsgId: string, body: string): boolean {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify({ type: "send", clientMsgId, body }));
    this.inFlight++;
    return true;
  }

  /** A new message over the socket, waiting while too many are unacked. */
  async sendOnSocket(stop: () => boolean): Promise<void> {
    while (this.inFlight >= IN_FLIGHT && this.socket && !stop()) {
      await new Promise<void>((resolve) => {
        this.wakeSender = resolve;
        setTimeout(resolve, 200);
      });
    }
    if (stop() || !this.socket) return;
    const clientMsgId = this.nextId();
    const body = `crash ${clientMsgId}`;
    report.sent++;
    this.pending.set(clientMsgId, body);
    this.frame(clientMsgId, body);
  }

  /** A send over REST; any answer but 200/201 (or none) leaves it pending. */
  async sendOverRest(clientMsgId: string, body: string): Promise<void> {
    this.pending.set(clientMsgId, body);
    try {
      const res = await api<{ message: Message }>(this.base(), "POST", "/send", this.token, { conversationId: this.conversationId, clientMsgId, body });
      if ((res.status === 200 || res.status === 201) && res.json) this.onAck(clientMsgId, res.json.message);
      else if (res.status === 429 || res.status === 503) report.refusedThenRetried++;
      else {
        if (res.status >= 500) report.fiveHundreds++;
        throw new CrashError(`${this.label}: POST /send ${res.status} ${res.text.slice(0, 300)}`);
      }
    } catch (err) {
      if (err instanceof CrashError) throw err;
      // No answer (the server was killed): the outcome is unknown, the message stays pending.
    }
  }

  async newRestMessage(): Promise<void> {
    const clientMsgId = this.nextId();
    report.sent++;
    await this.sendOverRest(clientMsgId, `crash ${clientMsgId}`);
  }

  /** A burst: frames written back to back and REST sends started, none waited for. */
  burst(): Promise<void>[] {
    for (let i = 0; i < BURST_FRAMES; i++) {
      const clientMsgId = this.nextId();
      const body = `crash ${clientMsgId}`;
      report.sent++;
      this.pending.set(clientMsgId, body);
      this.frame(clientMsgId, body);
    }
    return Array.from({ length: BURST_REQUESTS }, () => this.newRestMessage());
  }

  dropSocket(): void {
    const ws = this.socket;
    this.socket = null;
    this.inFlight = 0;
    try {
      ws?.close();
    } catch {
      // already gone
    }
  }

  /** Resends everything unacked over REST until it is acked. */
  async settle(): Promise<void> {
    const deadline = Date.now() + 60_000;
    while (this.pending.size > 0) {
      if (Date.now() > deadline) throw new CrashError(`${this.label}: ${this.pending.size} messages never acked`);
      for (const [clientMsgId, body] of [...this.pending]) {
        report.retried++;
        await this.sendOverRest(clientMsgId, body);
      }
      if (this.pending.size > 0) await sleep(200);
    }
  }
}

// --- The storm -----------------------------------------------------------------------------------

type KillPoint = "after a burst" | "mid-storm" | "during recovery";
const KILL_POINTS: KillPoint[] = ["after a burst", "mid-storm", "during recovery"];

/**
 * One round: every client sends until the round's trigger; `until` says when to stop (and kill).
 * Each client sends over REST one time in five, else on its socket.
 */
async function storm(clients: Client[], rng: Rng, until: () => boolean): Promise<void> {
  await Promise.all(
    clients.map(async (c) => {
      while (!until()) {
        if (rng.chance(0.2)) await c.newRestMessage();
        else {
          if (!c.socket) {
            await sleep(20);
            continue;
          }
          await c.sendOnSocket(until);
        }
      }
    }),
  );
}

async function killGroup(server: DevServer): Promise<void> {
  const pgid = server.pgid;
  if (pgid === undefined) throw new CrashError("no server to kill");
  signalGroup(pgid, "SIGKILL");
  const deadline = Date.now() + 10_000;
  while (groupAlive(pgid)) {
    if (Date.now() > deadline) throw new CrashError(`process group ${pgid} survived SIGKILL`);
    await sleep(20);
  }
}

async function restart(server: DevServer): Promise<void> {
  const started = Date.now();
  await server.start(START_TIMEOUT_MS);
  report.restartSeconds.push((Date.now() - started) / 1000);
}

// --- The checks ----------------------------------------------------------------------------------

async function history(base: string, token: string, conversationId: string): Promise<Message[]> {
  const out: Message[] = [];
  for (let after = 0; ; ) {
    const page = await expectOk<{ messages: Message[]; hasMore: boolean }>(base, "GET", `/conversations/${conversationId}/messages?after=${after}&limit=500`, token);
    out.push(...page.messages);
    if (!page.hasMore || page.messages.length === 0) return out;
    after = page.messages[page.messages.length - 1]!.seq;
  }
}

async function synced(base: string, token: string, conversationId: string): Promise<Set<string>> {
  const ids = new Set<string>();
  let cursor = "0";
  for (let more = true; more; ) {
    const page = await expectOk<{ messages: Message[]; cursor: string; hasMore: boolean }>(base, "GET", `/messages?since=${cursor}&limit=500`, token);
    for (const m of page.messages) if (m.conversationId === conversationId) ids.add(m.id);
    cursor = page.cursor;
    more = page.hasMore;
  }
  return ids;
}

async function check(base: string, clients: Client[]): Promise<void> {
  for (const conversationId of new Set(clients.map((c) => c.conversationId))) {
    const members = clients.filter((c) => c.conversationId === conversationId);
    const stored = await history(base, members[0]!.token, conversationId);
    stored.forEach((m, i) => {
      if (m.seq !== i + 1) report.seqGaps++;
    });
    const copies = new Map<string, Message[]>();
    for (const m of stored) {
      if (m.clientMsgId === null || m.kind === "system") continue;
      const key = `${m.senderId} ${m.clientMsgId}`;
      copies.set(key, [...(copies.get(key) ?? []), m]);
    }
    const sentKeys = new Set<string>();
    for (const c of members) {
      for (const [clientMsgId, ack] of c.acked) {
        const key = `${c.userId} ${clientMsgId}`;
        sentKeys.add(key);
        report.acked++;
        const found = copies.get(key) ?? [];
        if (found.length === 0) report.lost++;
        if (found.length > 1) report.duplicated += found.length - 1;
        if (found.length >= 1) report.stored++;
        if (found.length === 1 && (found[0]!.id !== ack.id || found[0]!.seq !== ack.seq)) report.changed++;
      }
    }
    for (const key of copies.keys()) if (!sentKeys.has(key)) report.unexpected++;

    // Sync is fed by the index, which catches up after a restart: wait for it, within bounds.
    const deadline = Date.now() + SYNC_TIMEOUT_MS;
    for (const c of members) {
      for (;;) {
        const held = await synced(base, c.token, conversationId);
        const missing = stored.filter((m) => !held.has(m.id));
        if (missing.length === 0 || Date.now() > deadline) {
          report.delivered += stored.length - missing.length;
          report.undelivered += missing.length;
          if (missing.length > 0) log(`${c.label}: sync lacks seqs ${missing.map((m) => m.seq).slice(0, 20).join(", ")}${missing.length > 20 ? ", ..." : ""}`);
          break;
        }
        await sleep(500);
      }
    }
  }
}

// --- Main ----------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const rng = prng(SEED);
  const stateDir = mkdtempSync(join(tmpdir(), "edge-chat-crash-"));
  const [port = 0, inspectorPort = 0] = await freePorts(2);
  const common = {
    port,
    inspectorPort,
    cwd: ROOT,
    persistTo: stateDir,
    localObservability: false,
    onOutput: (text: string) => {
      if (VERBOSE) process.stdout.write(text.replace(/^/gm, "  | "));
    },
  };
  // The storm is about crashes, not rate limits: the send limit is out of its way.
  const vars = ["RATE_LIMIT_PER_SECOND:100000", "RATE_LIMIT_BURST:100000"];
  // The first start through `npm run dev` (it builds the client, migrates D1, writes .dev.vars);
  // restarts run wrangler alone on that state, as `npm run dev` would run it.
  const first = new DevServer({ ...common, name: "the crash test's server", vars });
  const again = new DevServer({ ...common, name: "the crash test's server (restarted)", config: "wrangler.toml", vars: [...vars, `PUBLIC_ORIGIN:http://127.0.0.1:${port}`] });
  let server = first;
  const onSignal = (signal: NodeJS.Signals) => {
    first.killNow();
    again.killNow();
    rmSync(stateDir, { recursive: true, force: true });
    console.log(`crash: interrupted by ${signal}`);
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  let raw: RawFramesReport | null = null;
  let failure: unknown = null;
  try {
    log(`seed ${SEED}, ${KILLS} kills, about ${MESSAGES} messages; server on 127.0.0.1:${port}, state in ${stateDir}`);
    await restart(server);
    const base = () => server.base;

    // Two groups of three members, one device each (6 registrations: the default limit per
    // address is 10 an hour, and every client here is one address).
    const clients: Client[] = [];
    for (let g = 0; g < 2; g++) {
      const users = [];
      for (let u = 0; u < 3; u++) {
        const username = `crash_${g}${u}_${randomBytes(4).toString("hex")}`;
        users.push(await expectOk<{ user: { id: string }; token: string }>(server.base, "POST", "/auth/register", undefined, { username, password: `pw-${randomBytes(12).toString("hex")}` }));
      }
      const conv = await expectOk<{ conversation: { id: string } }>(server.base, "POST", "/group/create", users[0]!.token, { title: `crash ${g}`, memberIds: users.slice(1).map((u) => u.user.id) });
      users.forEach((u, i) => clients.push(new Client(base, `g${g}m${i}`, u.user.id, u.token, conv.conversation.id)));
    }
    for (const c of clients) await c.recover();

    const perRound = Math.ceil(MESSAGES / (KILLS + 1));
    for (let round = 0; round <= KILLS; round++) {
      const point = round < KILLS ? KILL_POINTS[round % KILL_POINTS.length]! : null;
      const startSent = report.sent;
      const sentThisRound = () => report.sent - startSent;
      if (point === null) {
        // The last round sends what the others left of MESSAGES (a kill cuts its round short).
        const rest = Math.max(perRound, MESSAGES - startSent);
        await storm(clients, rng, () => sentThisRound() >= rest);
        log(`last round: ${sentThisRound()} sent`);
        break;
      }
      // A round's sends: about perRound up to a burst or a mid-storm kill; a kill during recovery
      // comes early, and the last round sends the rest.
      let trigger: number;
      if (point === "mid-storm") trigger = Math.floor(perRound * (0.5 + 0.5 * rng.next()));
      else if (point === "during recovery") trigger = 1 + rng.int(Math.min(40, perRound));
      else trigger = Math.max(0, perRound - clients.length * (BURST_FRAMES + BURST_REQUESTS));
      // Mid-storm and during recovery, the SIGKILL goes out from inside the storm, at the send
      // that reaches the trigger, while every client is sending; after a burst, within 20 ms of
      // its last frame and request.
      let killed = false;
      const killHere = () => {
        if (!killed && sentThisRound() >= trigger) {
          signalGroup(server.pgid!, "SIGKILL");
          killed = true;
        }
        return killed;
      };
      let requests: Promise<void>[] = [];
      if (point === "after a burst") {
        await storm(clients, rng, () => sentThisRound() >= trigger);
        requests = clients.flatMap((c) => c.burst());
        // Long enough for the frames and requests to be on the wire, too short for most answers.
        await sleep(rng.int(20));
        signalGroup(server.pgid!, "SIGKILL");
      } else {
        await storm(clients, rng, killHere);
      }
      await killGroup(server);
      await Promise.all(requests);
      bumpKill(point);
      const unknown = clients.reduce((n, c) => n + c.pending.size, 0);
      report.inFlightAtKill += unknown;
      for (const c of clients) c.dropSocket();
      log(`kill ${round + 1} (${point}) after ${sentThisRound()} sends this round; ${unknown} messages unacked; restarting`);
      server = again;
      await restart(server);
      await Promise.all(clients.map((c) => c.recover()));
    }

    log("resending what is unacked, then checking");
    for (const c of clients) await c.settle();
    await check(server.base, clients);
    for (const c of clients) c.dropSocket();
    raw = await rawFrames(server.base, rng, clients[0]!.token, clients[0]!.userId, clients[0]!.conversationId, (status) => {
      if (status >= 500) report.fiveHundreds++;
    });
  } catch (err) {
    failure = err;
  } finally {
    await server.stop({ graceMs: 3_000 }).catch((err: unknown) => console.error("crash: could not stop the server:", err));
    rmSync(stateDir, { recursive: true, force: true });
  }

  printReport(raw);
  if (failure) {
    if (!VERBOSE) console.error(`crash: last server output:\n${server.tail()}`);
    console.error(`crash: FAILED: ${failure instanceof Error ? (failure instanceof CrashError ? failure.message : (failure.stack ?? failure.message)) : String(failure)}`);
    return 1;
  }
  const bad = report.lost + report.duplicated + report.changed + report.unexpected + report.seqGaps + report.undelivered + report.fiveHundreds + (raw?.undocumented ?? 0) + (raw?.ackedNotAsStored ?? 0);
  if (report.acked !== report.sent) {
    console.error(`crash: FAILED: ${report.sent} sent but ${report.acked} acked`);
    return 1;
  }
  if (bad > 0) {
    console.error("crash: FAILED: lost, duplicated, changed, unexpected, out of order, undelivered or 5xx above");
    return 1;
  }
  console.log("crash: passed");
  return 0;
}

function bumpKill(point: KillPoint): void {
  report.kills.set(point, (report.kills.get(point) ?? 0) + 1);
}

process.exitCode = await main();
