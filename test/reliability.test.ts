// The reliability suite: a send storm through injected faults, then the invariants of
// ../shared/spec/DESIGN.md checked per conversation (docs/reliability.md). Counts and the seed come
// from RELIABILITY_* (npm run test:reliability sets the long run's); the report is printed at the end.
import { env } from "cloudflare:workers";
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import type { ConversationDO } from "../durable-objects/conversation/ConversationDO";
import type { D1Writer } from "../durable-objects/conversation/d1Outbox";
import { peersOf } from "../durable-objects/contract";
import { conversationStub } from "../kernel/objects";
import type { Conversation, Message } from "../protocol";
import { call, connect, expectError, group, json, openConversation, register, unique, waitFor, type Session, type TestSocket } from "./helpers";

const count = (value: string, fallback: number) => (/^\d+$/.test(value) ? Number(value) : fallback);
const MESSAGES = count(env.RELIABILITY_MESSAGES, 300);
const SEED = count(env.RELIABILITY_SEED, Date.now() % 2 ** 31);
/** Hostile inputs in all, shared among the endpoints, queries and frames (about 200 each by default). */
const INPUTS = count(env.RELIABILITY_INPUTS, 0);

/** mulberry32: small, seeded, good enough to choose fault points and inputs. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!,
    chance: (p: number) => next() < p,
  };
}
type Rng = ReturnType<typeof prng>;

/** What the report prints, filled by each part of the suite. */
const report = {
  faults: new Map<string, number>(),
  messages: { sent: 0, acked: 0, stored: 0, delivered: 0, lost: 0, duplicated: 0, retried: 0, unavailable: 0 },
  fiveHundreds: 0,
  /** Floods: what was sent, and what stopped it. */
  floods: new Map<string, string>(),
  /** A bystander's send-to-ack latency in ms (median and 95th percentile), quiet and during the floods. */
  bystander: new Map<string, string>(),
  /** Bad inputs tried, by endpoint, query or frame. */
  inputs: new Map<string, number>(),
};
const bump = (map: Map<string, number>, key: string, by = 1) => map.set(key, (map.get(key) ?? 0) + by);

afterAll(() => {
  const rows: Array<[string, string | number]> = [["seed", SEED]];
  for (const [kind, n] of report.faults) rows.push([`fault: ${kind}`, n]);
  for (const [key, n] of Object.entries(report.messages)) rows.push([`messages ${key}`, n]);
  for (const [target, n] of report.inputs) rows.push([`bad inputs: ${target}`, n]);
  for (const [flood, what] of report.floods) rows.push([`flood: ${flood}`, what]);
  for (const [when, ms] of report.bystander) rows.push([`bystander latency ${when}`, ms]);
  rows.push(["5xx answers (other than 503 during a fault)", report.fiveHundreds]);
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log(["", "reliability report", ...rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`)].join("\n"));
});

// ---------------------------------------------------------------------------------------------
// Faults

/** A D1 whose every write fails. */
const failingD1: D1Writer = {
  prepare: (q: string) => env.DB.prepare(q),
  batch: async () => {
    throw new Error("D1_ERROR: injected outage");
  },
};

/** A user object that cannot be reached. */
const unreachableUsers = () => ({
  deliver: async (): Promise<never> => {
    throw new Error("injected: user object unreachable");
  },
  trackConversationSocket: async (): Promise<never> => {
    throw new Error("injected: user object unreachable");
  },
});

function withInstance(conversationId: string, fn: (instance: ConversationDO) => void): Promise<void> {
  return runInDurableObject(conversationStub(env, conversationId), fn);
}

/** Puts every conversation object back on its real connections and lets its deferred pass catch up. */
async function heal(conversationId: string): Promise<void> {
  const stub = conversationStub(env, conversationId);
  await withInstance(conversationId, (instance) => {
    instance.useConnections({ d1: env.DB, users: peersOf(env).user });
    instance.deferred.retryNow();
  });
  await runDurableObjectAlarm(stub);
  await waitFor(async () => (await stub.pendingOutbox()) === 0, `the outbox of ${conversationId} to drain`, 30_000);
}

// ---------------------------------------------------------------------------------------------
// Clients

/** One member's device in the storm: its sockets (one at a time), what it sent and what it got. */
class Client {
  socket: TestSocket | null = null;
  readonly sockets: TestSocket[] = [];
  /** clientMsgId -> body, sent and not yet acked: resent with the same id. */
  readonly pending = new Map<string, string>();
  /** clientMsgId -> the stored message its ack carried. */
  readonly acked = new Map<string, Message>();
  private reconnecting: Promise<void> | null = null;

  constructor(
    readonly session: Session,
    readonly conversationId: string,
  ) {}

  /** Every message this device got on a socket (messages and its own acks). */
  received(): Message[] {
    return this.sockets.flatMap((s) => s.messages());
  }

  lastSeq(): number {
    return this.received().reduce((max, m) => Math.max(max, m.seq), 0);
  }

  /** Reads acks off every socket so far (a closing socket may still deliver one). */
  collectAcks(): void {
    for (const s of this.sockets) {
      for (const f of s.frames) {
        if (f.type === "ack" && f.clientMsgId && f.message) {
          this.acked.set(f.clientMsgId, f.message);
          this.pending.delete(f.clientMsgId);
        }
      }
    }
  }

  /** Opens a socket resuming after the last seq seen, and resends what is unacked. */
  reconnect(): Promise<void> {
    this.reconnecting ??= (async () => {
      this.socket?.close();
      this.socket = null;
      this.collectAcks();
      for (let attempt = 0; ; attempt++) {
        try {
          const s = await openConversation(this.session, this.conversationId, this.lastSeq());
          this.sockets.push(s);
          this.socket = s;
          break;
        } catch (e) {
          // An object reset mid-handshake answers 503; anything else fails the run.
          if (!String(e).includes(": 503") || attempt > 20) throw e;
          report.messages.unavailable++;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      for (const [clientMsgId, body] of this.pending) {
        report.messages.retried++;
        this.socket!.send({ type: "send", clientMsgId, body });
      }
    })().finally(() => (this.reconnecting = null));
    return this.reconnecting;
  }

  async ensureOpen(): Promise<TestSocket> {
    if (this.reconnecting) await this.reconnecting;
    if (!this.socket || this.socket.closed) await this.reconnect();
    return this.socket!;
  }

  /** Sends on the socket and waits a little for the ack; an unacked send stays pending. */
  async sendOnSocket(clientMsgId: string, body: string): Promise<void> {
    this.pending.set(clientMsgId, body);
    const s = await this.ensureOpen();
    try {
      s.send({ type: "send", clientMsgId, body });
    } catch {
      return; // closed under us: resent on reconnect
    }
    await s.until((frames) => s.closed !== null || frames.some((f) => f.type === "ack" && f.clientMsgId === clientMsgId), "an ack", 3000).catch(() => {});
    this.collectAcks();
  }

  /** Sends over REST; a 503 (an object reset by a fault) or a 429 leaves it pending. */
  async sendOverRest(clientMsgId: string, body: string): Promise<void> {
    this.pending.set(clientMsgId, body);
    const res = await call("/send", { token: this.session.token, body: { conversationId: this.conversationId, clientMsgId, body } });
    const text = await res.text();
    if (res.status === 201 || res.status === 200) {
      this.acked.set(clientMsgId, (JSON.parse(text) as { message: Message }).message);
      this.pending.delete(clientMsgId);
      return;
    }
    if (res.status === 503 || res.status === 429) {
      report.messages.unavailable++;
      return;
    }
    if (res.status >= 500) report.fiveHundreds++;
    throw new Error(`REST send: ${res.status} ${text}`);
  }

  /** Resends everything unacked until it is acked (after the faults stopped). */
  async settle(): Promise<void> {
    await waitFor(
      async () => {
        this.collectAcks();
        if (this.pending.size === 0) return true;
        for (const [clientMsgId, body] of [...this.pending]) await this.sendOverRest(clientMsgId, body);
        return this.pending.size === 0;
      },
      "every send acked",
      30_000,
    );
  }
}

/** A member's devices' sync: every message of the conversation `GET /messages?since=` returns. */
async function synced(s: Session, conversationId: string): Promise<Message[]> {
  const out: Message[] = [];
  let cursor = "0";
  for (let more = true; more; ) {
    const page = await json<{ messages: Message[]; cursor: string; hasMore: boolean }>(`/messages?since=${cursor}&limit=500`, { token: s.token });
    out.push(...page.messages.filter((m) => m.conversationId === conversationId));
    cursor = page.cursor;
    more = page.hasMore;
  }
  return out;
}

/** The conversation's history, oldest first. */
async function history(s: Session, conversationId: string): Promise<Message[]> {
  const out: Message[] = [];
  for (let after = 0; ; ) {
    const page = await json<{ messages: Message[]; hasMore: boolean }>(`/conversations/${conversationId}/messages?after=${after}&limit=100`, { token: s.token });
    out.push(...page.messages);
    if (!page.hasMore || page.messages.length === 0) return out;
    after = page.messages[page.messages.length - 1]!.seq;
  }
}

// ---------------------------------------------------------------------------------------------
// The storm

const FAULT_KINDS = ["evict", "d1 outage", "user objects unreachable", "dropped socket", "deploy"] as const;

/**
 * Injects faults at random points of the storm: before a send, with probability `rate` (the storm is
 * counted in sends rather than time: workerd's clock stands still while nothing waits on I/O).
 * Outages end after a random number of further sends.
 */
class FaultInjector {
  private sends = 0;
  private readonly heals: Array<{ at: number; conversationId: string }> = [];

  constructor(
    private readonly rng: Rng,
    private readonly conversations: Conversation[],
    private readonly clients: Client[],
    private readonly rate: number,
  ) {}

  async tick(): Promise<void> {
    this.sends++;
    for (const due of this.heals.filter((h) => h.at <= this.sends)) {
      this.heals.splice(this.heals.indexOf(due), 1);
      // An eviction in between already gave the object its real connections back.
      await withInstance(due.conversationId, (instance) => instance.useConnections({ d1: env.DB, users: peersOf(env).user }));
    }
    if (!this.rng.chance(this.rate)) return;
    const kind = this.rng.pick(FAULT_KINDS);
    const conv = this.rng.pick(this.conversations);
    bump(report.faults, kind);
    switch (kind) {
      case "evict":
        // An object that is not running (evicted a moment ago, idle) has nothing to evict.
        await evictDurableObject(conversationStub(env, conv.id)).catch((e: unknown) => {
          // One still busy with a call (a fault's runInDurableObject, a send) cannot be evicted at once.
          if (!/not currently running|still has active references/.test(String(e))) throw e;
        });
        break;
      case "d1 outage":
      case "user objects unreachable": {
        const broken = kind === "d1 outage" ? { d1: failingD1 } : { users: unreachableUsers };
        await withInstance(conv.id, (instance) => instance.useConnections(broken));
        this.heals.push({ at: this.sends + 5 + this.rng.int(40), conversationId: conv.id });
        break;
      }
      case "dropped socket":
        this.rng.pick(this.clients).socket?.close();
        break;
      case "deploy":
        for (const c of this.clients) c.socket?.close();
        break;
    }
  }
}

describe("fault suite", () => {
  it(`keeps every acked message exactly once, contiguous and delivered, through faults (seed ${SEED})`, { timeout: 120_000 + MESSAGES * 100 }, async () => {
    const rng = prng(SEED);
    console.log(`reliability: seed ${SEED}, ${MESSAGES} messages`);
    // Three groups of three members; each member one device, one socket to its conversation.
    const conversations: Conversation[] = [];
    const clients: Client[] = [];
    const members = new Map<string, Session[]>();
    for (let g = 0; g < 3; g++) {
      const users = [await register(), await register(), await register()];
      const conv = await group(users[0]!, users.slice(1), `storm ${g}`);
      conversations.push(conv);
      members.set(conv.id, users);
      for (const u of users) clients.push(new Client(u, conv.id));
    }
    for (const c of clients) await c.reconnect();

    const faults = new FaultInjector(rng, conversations, clients, 0.1);
    const perClient = Math.ceil(MESSAGES / clients.length);
    await Promise.all(
      clients.map(async (c, i) => {
        const own = prng(SEED + i + 1);
        for (let n = 0; n < perClient; n++) {
          const clientMsgId = unique(`storm${i}-${n}`);
          const body = `storm ${i} ${n}`;
          report.messages.sent++;
          await faults.tick();
          if (own.chance(0.2)) await c.sendOverRest(clientMsgId, body);
          else await c.sendOnSocket(clientMsgId, body);
        }
      }),
    );
    // Resends first: what they store must reach D1 before the checks read it through sync.
    for (const c of clients) await c.settle();
    for (const conv of conversations) await heal(conv.id);

    for (const conv of conversations) {
      const convClients = clients.filter((c) => c.conversationId === conv.id);
      const stored = await history(members.get(conv.id)![0]!, conv.id);
      // Seq contiguous from 1.
      expect(stored.map((m) => m.seq)).toEqual(stored.map((_, i) => i + 1));
      const byClientMsgId = new Map<string, Message[]>();
      for (const m of stored) if (m.clientMsgId) byClientMsgId.set(m.clientMsgId, [...(byClientMsgId.get(m.clientMsgId) ?? []), m]);
      for (const c of convClients) {
        for (const [clientMsgId, ack] of c.acked) {
          report.messages.acked++;
          const copies = byClientMsgId.get(clientMsgId) ?? [];
          if (copies.length === 0) report.messages.lost++;
          if (copies.length > 1) report.messages.duplicated += copies.length - 1;
          if (copies.length === 1) {
            report.messages.stored++;
            expect(copies[0]).toMatchObject({ id: ack.id, seq: ack.seq });
          }
        }
      }
      // Every member's device holds every message: on its sockets or through sync.
      for (const c of convClients) {
        const held = new Set([...c.received(), ...(await synced(c.session, conv.id))].map((m) => m.id));
        const missing = stored.filter((m) => !held.has(m.id));
        report.messages.delivered += stored.length - missing.length;
        if (missing.length > 0) {
          // What D1 holds of them tells a sync that skipped them from an index that never got them.
          const inD1 = await env.DB.prepare(`SELECT id, ingest_id AS ingestId FROM messages WHERE id IN (${missing.map(() => "?").join()})`)
            .bind(...missing.map((m) => m.id))
            .all();
          const atSeqs = await env.DB.prepare(`SELECT id, seq, client_msg_id AS clientMsgId, ingest_id AS ingestId FROM messages WHERE conversation_id = ? AND seq BETWEEN ? AND ?`)
            .bind(conv.id, missing[0]!.seq - 2, missing[missing.length - 1]!.seq + 2)
            .all();
          const cursors = await runInDurableObject(conversationStub(env, conv.id), (_: ConversationDO, state: DurableObjectState) =>
            state.storage.sql.exec("SELECT d1_seq, fanout_seq, (SELECT max(seq) FROM messages) AS max_seq, (SELECT count(*) FROM outbox) AS outbox FROM conversation").toArray(),
          );
          console.log(`undelivered to ${c.session.user.id}: ${JSON.stringify(missing)}; in D1: ${JSON.stringify(inD1.results)}; D1 around those seqs: ${JSON.stringify(atSeqs.results)}; the object's cursors: ${JSON.stringify(cursors)}`);
        }
        expect(missing.map((m) => m.seq), `messages ${c.session.user.id} never got`).toEqual([]);
      }
      expect(await conversationStub(env, conv.id).pendingOutbox()).toBe(0);
    }
    for (const c of clients) c.socket?.close();
    expect(report.messages.acked).toBe(report.messages.sent);
    expect(report.messages.lost).toBe(0);
    expect(report.messages.duplicated).toBe(0);
    expect(report.fiveHundreds).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Hostile input

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function randomString(rng: Rng, max = 40): string {
  const alphabet = ["a", "Z", "0", " ", "\u0000", "\u202e", "é", "😀", "\ud800", "\udc00", '"', "\\", "{", "%", "\n"];
  return Array.from({ length: rng.int(max) }, () => rng.pick(alphabet)).join("");
}

function randomJson(rng: Rng, depth = 0): Json {
  switch (rng.int(depth > 3 ? 4 : 6)) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick([0, -1, 1.5, 1e308, -0, 2 ** 53 + 1, rng.int(1000)]);
    case 3:
      return randomString(rng);
    case 4:
      return Array.from({ length: rng.int(4) }, () => randomJson(rng, depth + 1));
    default:
      return Object.fromEntries(Array.from({ length: rng.int(4) }, () => [randomString(rng, 8), randomJson(rng, depth + 1)]));
  }
}

/** A value of another JSON type than `v` (so a field that held `v` is now wrong). */
function wrongType(rng: Rng, v: Json): Json {
  const kindOf = (x: Json) => (x === null ? "null" : Array.isArray(x) ? "array" : typeof x);
  for (;;) {
    const w = randomJson(rng, 2);
    if (kindOf(w) !== kindOf(v)) return w;
  }
}

/** Percent-encodes, writing a lone surrogate as its ill-formed UTF-8 bytes (which encodeURIComponent refuses). */
const encodeLoosely = (s: string) => s.split(/([\ud800-\udfff])/).map((part, i) => (i % 2 === 1 ? "%ED%A0%80" : encodeURIComponent(part))).join("");

const nested = (depth: number): string => "[".repeat(depth) + "]".repeat(depth);

/**
 * A bad variant of a valid body, as raw text: never valid for a strict schema whose every field in
 * `valid` is of the type it has there, and every string of it checked.
 */
function badVariant(rng: Rng, valid: { [key: string]: Json }): { kind: string; text: string } {
  const keys = Object.keys(valid);
  const field = rng.pick(keys);
  const stringFields = keys.filter((k) => typeof valid[k] === "string" && k !== "type");
  const withField = (v: Json) => JSON.stringify({ ...valid, [field]: v });
  switch (rng.int(11)) {
    case 0: {
      const v = randomJson(rng);
      // A random object could match by chance only if it had every required key: it has none.
      return { kind: "random JSON", text: JSON.stringify(v !== null && typeof v === "object" && !Array.isArray(v) ? [v] : v) };
    }
    case 1: {
      const full = JSON.stringify(valid);
      return { kind: "truncated JSON", text: full.slice(0, rng.int(full.length - 1)) };
    }
    case 2:
      return { kind: "wrong type", text: withField(wrongType(rng, valid[field]!)) };
    case 3:
      return { kind: "deeply nested", text: rng.chance(0.5) ? nested(20_000) : JSON.stringify({ ...valid, [field]: "@" }).replace('"@"', nested(5_000)) };
    case 4:
      return { kind: "huge string", text: withField("x".repeat(rng.pick([70_000, 300_000, 2_000_000]))) };
    case 5: {
      const f = stringFields.length > 0 ? rng.pick(stringFields) : field;
      const base = typeof valid[f] === "string" ? String(valid[f]) : "";
      const at = rng.int(base.length + 1);
      return { kind: "lone surrogate", text: JSON.stringify({ ...valid, [f]: base.slice(0, at) + rng.pick(["\ud800", "\udfff", "\udbff"]) + base.slice(at) }) };
    }
    case 6: {
      const key = rng.pick(["__proto__", "constructor", "prototype"]);
      return { kind: "prototype key", text: JSON.stringify(valid).replace(/^\{/, `{"${key}":${JSON.stringify({ isAdmin: true, toString: 1 })},`) };
    }
    case 7:
      return { kind: "extra field", text: JSON.stringify({ ...valid, [`x${randomString(rng, 6).replace(/[^a-z0-9]/gi, "")}extra`]: randomJson(rng) }) };
    case 8:
      return { kind: "empty", text: rng.pick(["", "{}", "[]", "null", " "]) };
    case 9: {
      const { [field]: _, ...rest } = valid;
      // Only fields every valid sample must have are removed (see the endpoints' `required`).
      return { kind: "missing field", text: JSON.stringify(rest) };
    }
    default:
      return { kind: "null field", text: withField(null) };
  }
}

interface Endpoint {
  name: string;
  method: string;
  path: string;
  /** A valid body whose every field is required (optional fields are tried through `extra field`). */
  valid: { [key: string]: Json };
  auth: boolean;
}

/**
 * Counts of what a bad input must not change: the caller's messages (in the conversation object
 * and D1), conversations and uploads, and the users bad registrations would have created. Scoped to
 * the caller so that what another test leaves running does not count.
 */
async function stateCounts(s: Session, conversationId: string) {
  await waitFor(async () => (await conversationStub(env, conversationId).pendingOutbox()) === 0, "the outbox to drain");
  const one = (sql: string, ...args: string[]) => env.DB.prepare(`SELECT count(*) AS n FROM ${sql}`).bind(...args).first<{ n: number }>("n");
  const conv = await json<{ conversation: Conversation }>(`/conversations/${conversationId}`, { token: s.token });
  return {
    lastSeq: conv.conversation.lastSeq,
    messages: await one("messages WHERE sender_id = ?", s.user.id),
    conversations: await one("members WHERE user_id = ?", s.user.id),
    uploads: await one("media WHERE uploader_id = ?", s.user.id),
    users: await one("users WHERE username LIKE 'fuzz%'"),
  };
}

/** Asserts an answer to a bad input: a 4xx in the error shape. A 5xx is counted, and fails the test. */
async function expectRefused(res: Response, what: string, failures: string[]): Promise<void> {
  const text = await res.text();
  if (res.status >= 500) {
    report.fiveHundreds++;
    failures.push(`${what}: ${res.status} ${text.slice(0, 200)}`);
    return;
  }
  const body = ((): { error?: { code?: unknown; message?: unknown } } | null => {
    try {
      return JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    } catch {
      return null; // reported below
    }
  })();
  if (res.status < 400 || typeof body?.error?.code !== "string" || typeof body.error.message !== "string") {
    failures.push(`${what}: ${res.status} ${text.slice(0, 200)}`);
  }
}

describe("hostile input", () => {
  const perTarget = (targets: number) => (INPUTS > 0 ? Math.ceil(INPUTS / targets) : 200);

  it(`refuses bad bodies, queries and frames with the error shape and changes nothing (seed ${SEED})`, { timeout: 300_000 + INPUTS * 20 }, async () => {
    const rng = prng(SEED ^ 0x5eed);
    const [a, b, c] = [await register(), await register(), await register()];
    const conv = await group(a, [b], "hostile");
    const id = "01HZZZZZZZZZZZZZZZZZZZZZZZ";
    const endpoints: Endpoint[] = [
      { name: "POST /auth/register", method: "POST", path: "/auth/register", auth: false, valid: { username: "fuzz_user", password: "correct horse" } },
      { name: "POST /auth/login", method: "POST", path: "/auth/login", auth: false, valid: { username: a.user.username, password: "correct horse" } },
      { name: "POST /conversations", method: "POST", path: "/conversations", auth: true, valid: { type: "direct", userId: c.user.id } },
      { name: "POST /group/create", method: "POST", path: "/group/create", auth: true, valid: { title: "fuzz", memberIds: [b.user.id] } },
      { name: "POST /conversations/:id/members", method: "POST", path: `/conversations/${conv.id}/members`, auth: true, valid: { userIds: [c.user.id] } },
      { name: "POST /send", method: "POST", path: "/send", auth: true, valid: { conversationId: conv.id, clientMsgId: "fuzz", body: "fuzz" } },
      { name: "POST /group/send", method: "POST", path: "/group/send", auth: true, valid: { groupId: conv.id, clientMsgId: "fuzz", body: "fuzz" } },
      { name: "POST /conversations/:id/receipts", method: "POST", path: `/conversations/${conv.id}/receipts`, auth: true, valid: { type: "read", seq: 1 } },
      { name: "PUT /devices/me/mls", method: "PUT", path: "/devices/me/mls", auth: true, valid: { signatureKey: "A".repeat(43) } },
      { name: "POST /mls/key-packages", method: "POST", path: "/mls/key-packages", auth: true, valid: { keyPackages: ["AAAA"] } },
      { name: "POST /mls/key-packages/claim", method: "POST", path: "/mls/key-packages/claim", auth: true, valid: { userIds: [b.user.id] } },
      { name: "POST /conversations/:id/mls/commits", method: "POST", path: `/conversations/${conv.id}/mls/commits`, auth: true, valid: { clientMsgId: "fuzz", epoch: 0, commit: "AAAA", groupInfo: "AAAA" } },
      // Seq 1 is the group's `created` message, which no action takes: every variant is refused.
      { name: "POST /conversations/:id/actions", method: "POST", path: `/conversations/${conv.id}/actions`, auth: true, valid: { clientMsgId: "fuzz", action: { type: "react", targetSeq: 1, emoji: "👍", on: true } } },
      { name: "POST /conversations/:id/hidden", method: "POST", path: `/conversations/${conv.id}/hidden`, auth: true, valid: { seqs: [1] } },
    ];
    const queries: Array<{ name: string; path: (q: string) => string; params: string[] }> = [
      { name: "GET /messages?", path: (q) => `/messages?${q}`, params: ["since", "limit"] },
      { name: "GET /conversations/:id/messages?", path: (q) => `/conversations/${conv.id}/messages?${q}`, params: ["after", "before", "limit", "thread"] },
      { name: "GET /users?", path: (q) => `/users?${q}`, params: ["q", "ids"] },
      { name: "GET /search?", path: (q) => `/search?${q}`, params: ["q", "conversationId", "limit", "before"] },
      { name: "GET /conversations/:id/ws?", path: (q) => `/conversations/${conv.id}/ws?${q}`, params: ["after", "dedupe", "ticket", "v"] },
      { name: "GET /ws?", path: (q) => `/ws?${q}`, params: ["ticket", "v"] },
    ];
    const frames: Array<{ name: string; socket: "conversation" | "user"; valid: { [key: string]: Json } }> = [
      { name: "frame send", socket: "conversation", valid: { type: "send", clientMsgId: "fuzz", body: "fuzz" } },
      { name: "frame typing", socket: "conversation", valid: { type: "typing", on: true } },
      { name: "frame read", socket: "conversation", valid: { type: "read", seq: 1 } },
      { name: "frame delivered", socket: "conversation", valid: { type: "delivered", seq: 1 } },
      { name: "frame action", socket: "conversation", valid: { type: "action", clientMsgId: "fuzz", action: { type: "pin", targetSeq: 1, on: true } } },
      { name: "frame presence.watch", socket: "user", valid: { type: "presence.watch", userIds: [b.user.id] } },
    ];
    const n = perTarget(endpoints.length + queries.length + frames.length);
    const failures: string[] = [];
    const before = await stateCounts(a, conv.id);

    for (const e of endpoints) {
      for (let i = 0; i < n; i++) {
        const { kind, text } = badVariant(rng, e.valid);
        const headers: Record<string, string> = { "content-type": rng.chance(0.05) ? "text/plain" : "application/json" };
        const res = await call(e.path, { method: e.method, rawBody: text, headers, ...(e.auth ? { token: a.token } : {}) });
        // Login and registration are limited per address: a 429 in the error shape is a refusal too.
        await expectRefused(res, `${e.name} (${kind}) ${text.slice(0, 80)}`, failures);
        bump(report.inputs, e.name);
      }
    }

    for (const q of queries) {
      for (let i = 0; i < n; i++) {
        const pairs = Array.from({ length: 1 + rng.int(3) }, () => {
          const key = rng.chance(0.8) ? rng.pick(q.params) : randomString(rng, 6);
          const value = rng.pick([randomString(rng), "-1", "1e3", "99999999999999999", "0x10", "", "%ED%A0%80", "%FF", "%", "1".repeat(5000)]);
          return `${encodeLoosely(key)}=${value.startsWith("%") ? value : encodeLoosely(value)}`;
        });
        const res = await call(q.path(pairs.join("&")), { token: a.token, headers: q.name.includes("ws") ? { upgrade: "websocket" } : {} });
        if (res.status === 101) {
          // A query that happens to be valid opens a socket: nothing to refuse.
          res.webSocket?.accept();
          res.webSocket?.close(1000, "done");
        } else if (res.status !== 200) {
          await expectRefused(res, `${q.name}${pairs.join("&").slice(0, 80)}`, failures);
        } else await res.body?.cancel();
        bump(report.inputs, q.name);
      }
    }

    for (const f of frames) {
      let socket: TestSocket | null = null;
      for (let i = 0; i < n; i++) {
        if (!socket || socket.closed) {
          socket = f.socket === "conversation" ? await openConversation(a, conv.id) : await connect("/ws", a.token);
          if (f.socket === "user") await socket.next("ready");
        }
        const { kind, text } = rng.chance(0.03) ? { kind: "binary", text: "" } : badVariant(rng, f.valid);
        const seen = socket.frames.length;
        if (kind === "binary") socket.ws.send(new Uint8Array([0xff, 0xfe, rng.int(256)]));
        else socket.send(text === "ping" ? "ping " : text);
        bump(report.inputs, f.name);
        // The answer: an error frame, or a close with a documented code (rate limited, too big).
        await socket.until((fs) => socket!.closed !== null || fs.slice(seen).some((x) => x.type === "error"), `an answer to ${f.name} (${kind})`);
        if (socket.closed) {
          if (![4008, 1009].includes(socket.closed.code)) failures.push(`${f.name} (${kind}) ${text.slice(0, 80)}: closed ${socket.closed.code} ${socket.closed.reason}`);
        } else {
          const error = socket.frames.slice(seen).find((x) => x.type === "error")!;
          if (typeof error.code !== "string" || typeof error.message !== "string") failures.push(`${f.name} (${kind}): ${JSON.stringify(error)}`);
        }
      }
      socket?.close();
    }

    expect(failures.slice(0, 20)).toEqual([]);
    expect(await stateCounts(a, conv.id)).toEqual(before);
  });
});

// ---------------------------------------------------------------------------------------------
// Abuse

/** Median and 95th percentile of latencies, in ms. */
function percentiles(ms: number[]): string {
  const sorted = [...ms].sort((x, y) => x - y);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
  return `p50 ${at(0.5).toFixed(1)} ms, p95 ${at(0.95).toFixed(1)} ms (${ms.length} sends)`;
}

/** A bystander in its own conversation: sends one message at a time and times each ack. */
async function bystanderLatencies(socket: TestSocket, sends: number, tag: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < sends; i++) {
    const clientMsgId = unique(`bystander-${tag}`);
    const start = performance.now();
    socket.send({ type: "send", clientMsgId, body: "still here" });
    await socket.next("ack", (f) => f.clientMsgId === clientMsgId);
    out.push(performance.now() - start);
    // The runtime's clock moves on I/O only: a short wait spreads the sends over the flood.
    await new Promise((r) => setTimeout(r, 5));
  }
  return out;
}

describe("abuse", () => {
  it("limits a flood of each frame type and a login brute force while a bystander keeps working", { timeout: 120_000 }, async () => {
    const [a, b, x, y] = [await register(), await register(), await register(), await register()];
    const conv = await group(a, [b], "flooded");
    const quiet = await group(x, [y], "bystander");
    const bystander = await openConversation(x, quiet.id);
    report.bystander.set("quiet", percentiles(await bystanderLatencies(bystander, 30, "quiet")));

    const floods: Array<{ name: string; frame: (i: number) => unknown; socket: () => Promise<TestSocket> }> = [
      { name: "frame send", frame: (i) => ({ type: "send", clientMsgId: `flood-${i}`, body: "flood" }), socket: () => openConversation(a, conv.id) },
      { name: "frame typing", frame: (i) => ({ type: "typing", on: i % 2 === 0 }), socket: () => openConversation(a, conv.id) },
      { name: "frame read", frame: () => ({ type: "read", seq: 1 }), socket: () => openConversation(a, conv.id) },
      { name: "frame delivered", frame: () => ({ type: "delivered", seq: 1 }), socket: () => openConversation(a, conv.id) },
      { name: "frame presence.watch", frame: () => ({ type: "presence.watch", userIds: [b.user.id] }), socket: async () => {
        const s = await connect("/ws", a.token);
        await s.next("ready");
        return s;
      } },
      { name: "bad frames", frame: () => "{not json", socket: () => openConversation(a, conv.id) },
    ];
    const during: number[] = [];
    for (const f of floods) {
      const socket = await f.socket();
      const measuring = bystanderLatencies(bystander, 5, f.name);
      let sent = 0;
      try {
        for (; sent < 2000 && socket.closed === null; sent++) {
          socket.send(typeof f.frame(sent) === "string" ? String(f.frame(sent)) : f.frame(sent));
          if (sent % 50 === 49) await new Promise((r) => setTimeout(r, 0));
        }
      } catch {
        // the socket closed under the flood
      }
      const closed = await socket.waitClosed(20_000);
      during.push(...(await measuring));
      report.floods.set(f.name, `close ${closed.code} (${closed.reason}); ${sent} frames sent before the client saw it`);
      expect(closed.code).toBe(4008);
    }
    report.bystander.set("during floods", percentiles(during));

    // Login brute force from one address: refused with 429 after the free failures.
    const address = { "cf-connecting-ip": "203.0.113.77" };
    let tries = 0;
    let status = 0;
    for (; tries < 100 && status !== 429; tries++) {
      const res = await call("/auth/login", { body: { username: a.user.username, password: `guess ${tries}` }, headers: address });
      status = res.status;
      if (status !== 429) await expectError(res, 401, "unauthorized");
      else await expectError(res, 429, "rate_limited");
    }
    report.floods.set("login brute force", `${tries} wrong passwords, then 429`);
    expect(status).toBe(429);

    // The bystander was never cut off.
    expect(bystander.closed).toBeNull();
    bystander.close();
  });
});
