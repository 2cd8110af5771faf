#!/usr/bin/env node
// `npm run smoke`: a black-box smoke test of the whole stack as a client sees it.
//
// It starts `npm run dev` on free ports with fresh local state, then, over plain HTTP and
// WebSockets (Node 22's global fetch and WebSocket, no test framework):
//   - registers two users, A creates a direct conversation with B,
//   - both open conversation sockets (single-use tickets) and exchange messages (ack / message),
//   - B disconnects, A sends more (socket and POST /send), B reconnects with ?after=<last seen seq>
//     and must receive exactly the missed messages, in seq order, no gaps, no duplicates,
//   - GET /messages?since=0 paged by cursor returns every message exactly once,
//   - the web app's documents (/, a client-side route, /sw.js) come through the Worker with its
//     Content-Security-Policy, and its bundles, icons and manifest straight from the platform's
//     assets, without the Worker (wrangler.toml run_worker_first, web/public/_headers).
// The server's whole process group is always stopped and the temp dir removed at the end.
//
// SMOKE_VERBOSE=1 streams the server's output; otherwise its tail is printed on failure.
import { randomBytes } from "node:crypto";
import { connect as tcpConnect } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DevServer, freePorts } from "./lib/dev-server.ts";
import { apiRequest } from "./lib/http.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const VERBOSE = process.env.SMOKE_VERBOSE === "1";
const START_TIMEOUT_MS = 60_000;
const FRAME_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 15_000;
const INDEX_TIMEOUT_MS = 10_000;
const KILL_GRACE_MS = 5_000;

const T0 = Date.now();
const log = (msg: string) => console.log(`smoke: [${((Date.now() - T0) / 1000).toFixed(1).padStart(5)} s] ${msg}`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

class SmokeError extends Error {}
function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new SmokeError(message);
}
function assertEqual(actual: unknown, expected: unknown, what: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new SmokeError(`${what}: expected ${e}, got ${a}`);
}

// --- The server ----------------------------------------------------------------------------------

// What the scenario reads of the API's answers (protocol/schemas.ts has the whole shapes).
interface User {
  id: string;
  username: string;
}
interface Message {
  id: string;
  seq: number;
  conversationId: string;
  senderId: string;
  body: string;
  clientMsgId?: string;
}
interface Conversation {
  id: string;
  type: string;
  lastSeq: number;
  members: { userId: string }[];
}
/** A frame from a conversation socket (or `__unparsable__` with what came). */
interface Frame {
  type: string;
  clientMsgId?: string;
  message?: Message;
  lastSeq?: number;
  data?: string;
}
interface Closed {
  code: number;
  reason: string;
}

// --- HTTP ----------------------------------------------------------------------------------------

interface ApiOptions {
  token?: string;
  body?: unknown;
  /** The status(es) expected; default 200, 201 or 204. */
  expect?: number | number[];
}

/** A request to the API; `T` is what its JSON answer is taken to be (null when it has no body). */
async function api<T>(base: string, method: string, path: string, { token, body, expect }: ApiOptions = {}): Promise<{ status: number; json: Partial<T> | null }> {
  const { status, text } = await apiRequest(base, method, path, { token, body, timeoutMs: REQUEST_TIMEOUT_MS });
  let json: Partial<T> | null = null;
  try {
    json = text ? (JSON.parse(text) as Partial<T>) : null;
  } catch {
    // not JSON; reported below if the status is unexpected
  }
  const expected = expect === undefined ? [200, 201, 204] : [expect].flat();
  if (!expected.includes(status)) {
    throw new SmokeError(`${method} ${path}: expected ${expected.join("/")}, got ${status} ${text.slice(0, 500)}`);
  }
  return { status, json };
}

// --- WebSockets ----------------------------------------------------------------------------------

/** A conversation socket that buffers every frame, so a test can wait for the one it expects. */
class Socket {
  readonly name: string;
  frames: Frame[] = [];
  /** Arrival order of each frame, so frames taken out of the middle keep their place. */
  readonly arrival = new WeakMap<Frame, number>();
  received = 0;
  waiters: (() => void)[] = [];
  closed: Closed | null = null;
  readonly ws: WebSocket;
  readonly closedPromise: Promise<Closed>;
  readonly opened: Promise<void>;

  constructor(url: string, name: string) {
    this.name = name;
    this.ws = new WebSocket(url);
    let markClosed: (closed: Closed) => void = () => {};
    this.closedPromise = new Promise((resolve) => {
      markClosed = (closed: Closed) => {
        if (this.closed) return;
        this.closed = closed;
        this.wake();
        resolve(closed);
      };
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.addEventListener("open", () => resolve(), { once: true });
      this.ws.addEventListener(
        "error",
        () => {
          // Node's WebSocket fires no `close` after a failed handshake (it stays CONNECTING).
          markClosed({ code: 1006, reason: "handshake failed" });
          reject(new SmokeError(`${name}: WebSocket failed to open`));
        },
        { once: true },
      );
    });
    this.opened.catch(() => {});
    this.ws.addEventListener("message", (event) => {
      let frame: Frame;
      try {
        frame = JSON.parse(typeof event.data === "string" ? event.data : String(event.data)) as Frame;
      } catch {
        frame = { type: "__unparsable__", data: String(event.data) };
      }
      this.arrival.set(frame, this.received++);
      this.frames.push(frame);
      this.wake();
    });
    this.ws.addEventListener("close", (event) => markClosed({ code: event.code, reason: event.reason }));
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  /** Removes and returns the first buffered frame matching `predicate`, waiting up to `timeoutMs`. */
  next(predicate: (frame: Frame) => boolean, what: string, timeoutMs = FRAME_TIMEOUT_MS): Promise<Frame> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = this.frames.findIndex(predicate);
        if (i >= 0) {
          done();
          resolve(this.frames.splice(i, 1)[0]!);
          return;
        }
        if (this.closed) {
          done();
          reject(new SmokeError(`${this.name}: socket closed (${this.closed.code} ${this.closed.reason}) while waiting for ${what}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new SmokeError(
            `${this.name}: no ${what} within ${timeoutMs} ms; buffered frames: ${JSON.stringify(this.frames).slice(0, 800)}`,
          ),
        );
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      this.waiters.push(check);
      check();
    });
  }

  /** Waits for `ready` and returns it with the frames the server sent before it (the replay). */
  async untilReady(): Promise<{ ready: Frame; replay: Frame[] }> {
    await this.opened;
    const ready = await this.next((f) => f.type === "ready", "ready frame");
    const before = this.frames.filter((f) => (this.arrival.get(f) ?? 0) < (this.arrival.get(ready) ?? 0));
    this.frames = this.frames.filter((f) => !before.includes(f));
    return { ready, replay: before };
  }

  send(frame: unknown): void {
    this.ws.send(JSON.stringify(frame));
  }

  assertNoErrors() {
    const errors = this.frames.filter((f) => f.type === "error");
    assert(errors.length === 0, `${this.name}: server sent error frames: ${JSON.stringify(errors)}`);
  }

  async close(): Promise<Closed | null> {
    if (this.closed) return this.closed;
    try {
      this.ws.close(1000, "bye");
    } catch {
      // not open
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), FRAME_TIMEOUT_MS);
    });
    try {
      return await Promise.race([this.closedPromise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

// --- Invalid UTF-8 in a text frame ---------------------------------------------------------------

/**
 * RFC 6455 wants close 1007 for a text frame that is not UTF-8, but workerd decodes text frames
 * with replacement before the object sees them, so the object cannot tell invalid bytes from a
 * real U+FFFD (docs/api.md, WebSockets). This pins down what happens over a raw connection: the
 * frame is taken, with each bad byte as U+FFFD in the ack as in what is stored. Should workerd
 * start to refuse such frames itself, this fails and the docs must change.
 */
async function invalidUtf8(base: string): Promise<void> {
  log("a text frame of invalid UTF-8 reaches the object with U+FFFD for each bad byte");
  const [a, b] = [await register(base, "utf8a"), await register(base, "utf8b")];
  const { json } = await api<{ conversation: Conversation }>(base, "POST", "/conversations", { token: a.token, body: { type: "direct", userId: b.id } });
  const ticket = (await api<{ ticket: string }>(base, "POST", "/auth/ticket", { token: a.token, expect: 200 })).json?.ticket;
  assert(json?.conversation && typeof ticket === "string", "invalid UTF-8: a conversation and a ticket");
  const url = new URL(base);
  const socket = tcpConnect(Number(url.port), url.hostname);
  const key = randomBytes(16).toString("base64");
  socket.write(
    `GET /conversations/${encodeURIComponent(json.conversation.id)}/ws?ticket=${encodeURIComponent(ticket)} HTTP/1.1\r\nHost: ${url.host}\r\n` +
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const payload = Buffer.concat([Buffer.from('{"type":"send","clientMsgId":"utf8","body":"a'), Buffer.from([0xff, 0xc3]), Buffer.from('b"}')]);
  const mask = randomBytes(4);
  const frame = Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, Buffer.from(payload.map((x, i) => x ^ mask[i % 4]!))]);
  type RawFrame = { opcode: number; text: string };
  const texts = await new Promise<RawFrame[]>((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    let upgraded = false;
    const found: RawFrame[] = [];
    const timer = setTimeout(() => reject(new Error(`invalid UTF-8: no ack; got ${JSON.stringify(found)}`)), REQUEST_TIMEOUT_MS);
    socket.on("error", reject);
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!upgraded) {
        const end = buffer.indexOf("\r\n\r\n");
        if (end < 0) return;
        assert(buffer.subarray(0, end).toString().startsWith("HTTP/1.1 101"), `invalid UTF-8: handshake ${buffer.subarray(0, end).toString()}`);
        buffer = buffer.subarray(end + 4);
        upgraded = true;
        socket.write(frame);
      }
      // Server frames are unmasked; these are short (a 16-bit length at most).
      while (buffer.length >= 2) {
        const short = buffer[1]! & 127;
        const [length, offset] = short === 126 ? [buffer.length >= 4 ? buffer.readUInt16BE(2) : Infinity, 4] : [short, 2];
        if (buffer.length < offset + length) return;
        found.push({ opcode: buffer[0]! & 15, text: buffer.subarray(offset, offset + length).toString() });
        buffer = buffer.subarray(offset + length);
      }
      if (found.some((f) => f.opcode === 1 && f.text.includes('"ack"')) || found.some((f) => f.opcode === 8)) {
        clearTimeout(timer);
        resolve(found);
      }
    });
  });
  socket.destroy();
  const ack = texts.find((f) => f.opcode === 1 && f.text.includes('"ack"'));
  assert(ack, `invalid UTF-8: expected an ack, got ${JSON.stringify(texts)}`);
  assertEqual((JSON.parse(ack.text) as { message: Message }).message.body, "a\ufffd\ufffdb", "invalid UTF-8: acked body");
}

// --- The scenario ----------------------------------------------------------------------------------

const rand = (n = 6) => randomBytes(n).toString("hex");

interface SmokeUser {
  label: string;
  username: string;
  id: string;
  token: string;
  status: number;
}

async function register(base: string, label: string): Promise<SmokeUser> {
  const username = `smoke_${label}_${rand(6)}`;
  const { status, json } = await api<{ user: User; token: string }>(base, "POST", "/auth/register", {
    body: { username, password: `pw-${rand(12)}`, deviceName: `smoke ${label}` },
    expect: 201,
  });
  assert(json?.user?.id && json.token, `register ${label}: missing user.id or token in ${JSON.stringify(json)}`);
  assertEqual(json.user.username, username, `register ${label}: username`);
  return { label, username, id: json.user.id, token: json.token, status };
}

async function openSocket(base: string, user: SmokeUser, conversationId: string, after: number): Promise<{ socket: Socket; ready: Frame; replay: Message[] }> {
  const { json } = await api<{ ticket: string }>(base, "POST", "/auth/ticket", { token: user.token, expect: 200 });
  assert(typeof json?.ticket === "string", `ticket for ${user.label}: ${JSON.stringify(json)}`);
  const url = `${base.replace(/^http/, "ws")}/conversations/${encodeURIComponent(conversationId)}/ws?ticket=${encodeURIComponent(json.ticket)}&after=${after}`;
  const socket = new Socket(url, `socket ${user.label}`);
  const { ready, replay } = await socket.untilReady();
  for (const f of replay) {
    assert(f.type === "message", `${socket.name}: unexpected frame before ready: ${JSON.stringify(f)}`);
  }
  return { socket, ready, replay: replay.map((f) => f.message).filter((m) => m !== undefined) };
}

/** Asserts that `seqs` is exactly from+1 .. to, ascending, no gaps, no duplicates. */
function assertContiguous(seqs: number[], from: number, to: number, what: string): void {
  const expected: number[] = [];
  for (let s = from + 1; s <= to; s++) expected.push(s);
  assertEqual(seqs, expected, what);
}

async function scenario(base: string): Promise<void> {
  log("registering users A and B");
  const a = await register(base, "a");
  const b = await register(base, "b");
  log(`  A=${a.username} (${a.id}), B=${b.username} (${b.id})`);

  log("A creates a direct conversation with B");
  const created = await api<{ conversation: Conversation }>(base, "POST", "/conversations", { token: a.token, body: { type: "direct", userId: b.id }, expect: 201 });
  const conversation = created.json?.conversation;
  assert(conversation?.id, `POST /conversations: no conversation in ${JSON.stringify(created.json)}`);
  assertEqual(conversation.type, "direct", "conversation type");
  assertEqual(
    conversation.members.map((m) => m.userId).sort(),
    [a.id, b.id].sort(),
    "conversation members",
  );
  const again = await api<{ conversation: Conversation }>(base, "POST", "/conversations", { token: b.token, body: { type: "direct", userId: a.id }, expect: 200 });
  assertEqual(again.json?.conversation?.id, conversation.id, "the pair's existing conversation (created again by B)");
  const convId = conversation.id;
  log(`  conversation ${convId}, lastSeq ${conversation.lastSeq}`);

  /** Every message of the conversation by seq, as the senders' acks and responses report them. */
  const bySeq = new Map<number, Message>();
  function record(message: Message | undefined, what: string): asserts message is Message {
    assert(message && Number.isInteger(message.seq), `${what}: no message with a seq: ${JSON.stringify(message)}`);
    assertEqual(message.conversationId, convId, `${what}: conversationId`);
    const known = bySeq.get(message.seq);
    assert(!known || known.id === message.id, `${what}: seq ${message.seq} reused (${known?.id} and ${message.id})`);
    bySeq.set(message.seq, message);
  }

  log("A and B open conversation sockets with single-use tickets (after=0)");
  const sa = await openSocket(base, a, convId, 0);
  const sb = await openSocket(base, b, convId, 0);
  const socketA = sa.socket;
  let socketB = sb.socket;
  assert(typeof sa.ready.lastSeq === "number" && typeof sb.ready.lastSeq === "number", "ready frames without lastSeq");
  assertEqual(sa.ready.lastSeq, conversation.lastSeq, "A's ready.lastSeq");
  assertEqual(sb.ready.lastSeq, conversation.lastSeq, "B's ready.lastSeq");
  assertContiguous(sa.replay.map((m) => m.seq), 0, sa.ready.lastSeq, "A's replay from after=0");
  assertContiguous(sb.replay.map((m) => m.seq), 0, sb.ready.lastSeq, "B's replay from after=0");
  for (const m of sb.replay) record(m, "replay");
  let bLastSeen = sb.ready.lastSeq;

  log("a used ticket is refused");
  {
    const { json } = await api<{ ticket: string }>(base, "POST", "/auth/ticket", { token: a.token, expect: 200 });
    assert(typeof json?.ticket === "string", `ticket for ${a.label}: ${JSON.stringify(json)}`);
    const url = `${base.replace(/^http/, "ws")}/conversations/${encodeURIComponent(convId)}/ws?ticket=${encodeURIComponent(json.ticket)}`;
    const first = new Socket(url, "ticket check (first use)");
    await first.untilReady();
    await first.close();
    const second = new Socket(url, "ticket check (second use)");
    const opened = await second.opened.then(
      () => true,
      () => false,
    );
    await second.close();
    assert(!opened, "a ticket worked twice");
  }

  /** Sends over a socket; the sender gets the ack, every other open socket the message. */
  async function sendOverSocket(from: SmokeUser, fromSocket: Socket, others: Socket[], body: string): Promise<Message> {
    const clientMsgId = `smoke-${from.label}-${rand(8)}`;
    fromSocket.send({ type: "send", clientMsgId, body });
    const ack = await fromSocket.next((f) => f.type === "ack" && f.clientMsgId === clientMsgId, `ack for ${clientMsgId}`);
    const acked = ack.message;
    record(acked, `ack for ${clientMsgId}`);
    assertEqual(acked.body, body, "acked body");
    assertEqual(acked.senderId, from.id, "acked senderId");
    for (const other of others) {
      const frame = await other.next(
        (f) => f.type === "message" && f.message?.clientMsgId === clientMsgId,
        `message ${clientMsgId}`,
      );
      assertEqual(frame.message?.id, acked.id, `${other.name}: message id`);
      assertEqual(frame.message?.seq, acked.seq, `${other.name}: message seq`);
    }
    return acked;
  }

  log("A and B exchange messages over their sockets");
  const exchanged: Message[] = [];
  exchanged.push(await sendOverSocket(a, socketA, [socketB], "hello B"));
  exchanged.push(await sendOverSocket(b, socketB, [socketA], "hi A"));
  exchanged.push(await sendOverSocket(a, socketA, [socketB], "how are you? 🙂"));
  exchanged.push(await sendOverSocket(b, socketB, [socketA], "fine, thanks"));
  exchanged.push(await sendOverSocket(a, socketA, [socketB], "great"));
  assertContiguous(
    exchanged.map((m) => m.seq),
    conversation.lastSeq,
    conversation.lastSeq + exchanged.length,
    "seqs of the exchanged messages",
  );
  bLastSeen = exchanged.at(-1)?.seq ?? bLastSeen;
  socketA.assertNoErrors();
  socketB.assertNoErrors();
  log(`  ${exchanged.length} messages, seqs ${exchanged[0]?.seq}..${bLastSeen}`);

  log("B disconnects");
  const closeB = await socketB.close();
  assert(closeB, "B's socket did not close");

  log("A sends while B is away (socket and POST /send)");
  const missed: Message[] = [];
  missed.push(await sendOverSocket(a, socketA, [], "are you there?"));
  missed.push(await sendOverSocket(a, socketA, [], "message 2 while away"));
  for (let i = 1; i <= 3; i++) {
    const clientMsgId = `smoke-a-rest-${rand(8)}`;
    const body = `REST message ${i} while away`;
    const res = await api<{ message: Message }>(base, "POST", "/send", {
      token: a.token,
      body: { conversationId: convId, clientMsgId, body },
      expect: 201,
    });
    const sent = res.json?.message;
    record(sent, `POST /send ${clientMsgId}`);
    assertEqual(sent.body, body, "POST /send body");
    missed.push(sent);
    // A's own socket sees the REST send too (it is another "device view" of the conversation).
    await socketA.next((f) => f.type === "message" && f.message?.clientMsgId === clientMsgId, `message ${clientMsgId} on A`);
    if (i === 2) {
      // An idempotent retry: same message, nothing new stored.
      const retry = await api<{ message: Message }>(base, "POST", "/send", {
        token: a.token,
        body: { conversationId: convId, clientMsgId, body },
        expect: 200,
      });
      assertEqual(retry.json?.message?.id, sent.id, "idempotent retry: id");
      assertEqual(retry.json?.message?.seq, sent.seq, "idempotent retry: seq");
    }
  }
  missed.push(await sendOverSocket(a, socketA, [], "last one while away"));
  assertContiguous(missed.map((m) => m.seq), bLastSeen, bLastSeen + missed.length, "seqs sent while B was away");
  const lastSeq = missed.at(-1)?.seq ?? bLastSeen;
  log(`  ${missed.length} messages, seqs ${missed[0]?.seq}..${lastSeq}`);

  log(`B reconnects with after=${bLastSeen} and receives exactly what it missed`);
  const rb = await openSocket(base, b, convId, bLastSeen);
  socketB = rb.socket;
  assertEqual(rb.ready.lastSeq, lastSeq, "B's ready.lastSeq after reconnect");
  assertContiguous(rb.replay.map((m) => m.seq), bLastSeen, lastSeq, "seqs replayed to B");
  assertEqual(
    rb.replay.map((m) => m.id),
    missed.map((m) => m.id),
    "ids replayed to B",
  );
  assertEqual(
    rb.replay.map((m) => m.body),
    missed.map((m) => m.body),
    "bodies replayed to B",
  );
  log(`  replayed ${rb.replay.length} messages, seqs ${rb.replay[0]?.seq}..${rb.replay[rb.replay.length - 1]?.seq}`);

  log("live traffic still flows after the reconnect");
  const live = await sendOverSocket(a, socketA, [socketB], "welcome back");
  assertEqual(live.seq, lastSeq + 1, "seq after reconnect");
  const finalSeq = live.seq;
  socketA.assertNoErrors();
  socketB.assertNoErrors();
  await socketA.close();
  await socketB.close();

  for (const user of [a, b]) {
    log(`GET /messages?since=0 paged by cursor returns every message exactly once (${user.label})`);
    const deadline = Date.now() + INDEX_TIMEOUT_MS;
    let synced = await syncAll(base, user, 3);
    while (synced.messages.length < finalSeq && Date.now() <= deadline) {
      await sleep(250);
      synced = await syncAll(base, user, 3);
    }
    const seqs = synced.messages.map((m) => m.seq).sort((x, y) => x - y);
    const ids = synced.messages.map((m) => m.id);
    assertEqual(new Set(ids).size, ids.length, `${user.label}: /messages ids are unique`);
    for (const m of synced.messages) assertEqual(m.conversationId, convId, `${user.label}: /messages conversationId`);
    assertContiguous(seqs, 0, finalSeq, `${user.label}: seqs from /messages (within ${INDEX_TIMEOUT_MS} ms)`);
    for (const m of synced.messages) {
      const known = bySeq.get(m.seq);
      if (known) assertEqual(m.id, known.id, `${user.label}: /messages id of seq ${m.seq}`);
    }
    log(`  ${synced.messages.length} messages in ${synced.pages} pages`);
  }
}

/** Pages GET /messages from since=0 with `cursor` until hasMore is false. */
async function syncAll(base: string, user: SmokeUser, limit: number): Promise<{ messages: Message[]; pages: number }> {
  const messages: Message[] = [];
  let since = "0";
  let pages = 0;
  for (;;) {
    pages++;
    assert(pages <= 1000, "/messages paging does not end");
    const { json } = await api<{ messages: Message[]; hasMore: boolean; cursor: string }>(base, "GET", `/messages?since=${encodeURIComponent(since)}&limit=${limit}`, {
      token: user.token,
      expect: 200,
    });
    assert(Array.isArray(json?.messages) && typeof json.hasMore === "boolean", `/messages: ${JSON.stringify(json)}`);
    assert(json.messages.length <= limit, `/messages returned ${json.messages.length} > limit ${limit}`);
    messages.push(...json.messages);
    if (!json.hasMore) break;
    assert(typeof json.cursor === "string" && json.cursor !== since, `/messages: cursor did not advance (${json.cursor})`);
    since = json.cursor;
  }
  return { messages, pages };
}

// --- The web app's files ---------------------------------------------------------------------------

async function getFile(base: string, path: string): Promise<{ status: number; body: string; header: (name: string) => string }> {
  const res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS), redirect: "manual" });
  const body = await res.text();
  const header = (name: string) => res.headers.get(name) ?? "";
  return { status: res.status, body, header };
}

/**
 * Documents must carry the Worker's security headers; every other file of the app must be served
 * by the platform alone, so that loading the app costs no Worker invocation per file. The Worker
 * sets a Content-Security-Policy on every script, style, manifest and icon it hands out
 * (worker/lib/security.ts), so a file without one was not served through it.
 */
async function appFiles(base: string): Promise<void> {
  log("the web app's files: documents through the Worker, the rest from assets");
  const documents = ["/", "/c/no-such-conversation", "/settings", "/sw.js"];
  let indexHtml = "";
  for (const path of documents) {
    const file = await getFile(base, path);
    if (path === "/") indexHtml = file.body;
    assertEqual(file.status, 200, `GET ${path}: status`);
    const csp = file.header("content-security-policy");
    assert(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"), `GET ${path}: no Content-Security-Policy from the Worker (got "${csp}")`);
    assertEqual(file.header("x-content-type-options"), "nosniff", `GET ${path}: x-content-type-options`);
  }
  const bundles = [...indexHtml.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1] ?? "");
  assert(bundles.some((b) => b.endsWith(".js")) && bundles.some((b) => b.endsWith(".css")), `index.html names no script and style bundle: ${bundles.join(", ")}`);
  const statics = [...bundles, "/icons/icon-192.png", "/manifest.webmanifest"];
  for (const path of statics) {
    const file = await getFile(base, path);
    assertEqual(file.status, 200, `GET ${path}: status`);
    assert(!file.header("content-type").startsWith("text/html"), `GET ${path}: answered with HTML (${file.header("content-type")})`);
    assertEqual(file.header("content-security-policy"), "", `GET ${path}: served through the Worker (it set a Content-Security-Policy)`);
    assertEqual(file.header("x-content-type-options"), "nosniff", `GET ${path}: x-content-type-options (web/public/_headers)`);
  }
  // Only a client-side route falls back to index.html: a missing file is a 404, whether the
  // platform serves its path (/assets/*) or the Worker does.
  const missing = ["/assets/no-such-bundle.js", "/icons/no-such-icon.png", "/no-such-file.js"];
  for (const path of missing) {
    const file = await getFile(base, path);
    assertEqual(file.status, 404, `GET ${path}: status`);
    assert(!file.body.includes("<html"), `GET ${path}: answered with the app's HTML`);
  }
  const headersFile = await getFile(base, "/_headers");
  assert(!headersFile.body.includes("X-Content-Type-Options"), "GET /_headers: the headers file itself is served");
  log(`  ${documents.length} documents with the Worker's headers, ${statics.length} files straight from assets, ${missing.length} missing files 404`);
}

// --- Main ----------------------------------------------------------------------------------------

async function main(): Promise<void> {
  let server: DevServer | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    server?.killNow();
    console.log(`smoke: interrupted by ${signal}`);
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  let failure: unknown = null;
  try {
    const [port = 0, inspectorPort = 0] = await freePorts(2);
    // `npm run dev` on these ports with fresh state in a temp dir of its own.
    server = new DevServer({
      name: "the dev server",
      port,
      inspectorPort,
      cwd: ROOT,
      onOutput: (text) => {
        if (VERBOSE) process.stdout.write(text.replace(/^/gm, "  | "));
      },
    });
    log(`starting the dev server on 127.0.0.1:${port} (inspector ${inspectorPort}, state in ${server.persistTo})`);
    const started = Date.now();
    await server.start(START_TIMEOUT_MS);
    log(`server answers after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    await scenario(server.base);
    await invalidUtf8(server.base);
    await appFiles(server.base);
  } catch (err) {
    failure = err;
  } finally {
    if (server) {
      log("stopping the server's process group");
      const stopping = Date.now();
      await server
        .stop({ graceMs: KILL_GRACE_MS, killWaitMs: 2_000, onKill: () => log("server still running after SIGTERM; sending SIGKILL") })
        .catch((err: unknown) => console.error("smoke: could not stop the server:", err));
      log(`server stopped after ${((Date.now() - stopping) / 1000).toFixed(1)} s`);
      if (server.alive()) {
        failure ??= new SmokeError(`the server's process group ${server.pgid} is still running`);
      }
    }
  }

  if (failure) {
    if (server && !VERBOSE) console.error(`smoke: last server output:\n${server.tail()}`);
    console.error(`smoke: FAILED: ${failure instanceof SmokeError ? failure.message : failure instanceof Error ? (failure.stack ?? failure.message) : String(failure)}`);
    console.log("smoke: 0 passed, 1 failed");
    process.exitCode = 1;
  } else {
    console.log("smoke: 1 passed, 0 failed");
  }
}

await main();
