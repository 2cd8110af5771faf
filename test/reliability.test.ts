// The reliability suite: a send storm through injected faults, then the invariants of
// ../shared/spec/DESIGN.md checked per conversation (docs/reliability.md). Counts and the seed come
// from RELIABILITY_* (npm run test:reliability sets the long run's); the report is printed at the end.
import { env } from "cloudflare:workers";
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import type { ConversationDO } from "../durable-objects/conversation/ConversationDO";
import type { D1Writer } from "../durable-objects/conversation/d1Outbox";
import { peersOf } from "../durable-objects/contract";
import { conversationStub } from "../kernel/objects";
import type { Conversation, Message } from "../protocol";
import { prng, type Rng } from "../scripts/lib/prng";
import { call, connect, countOnAllShards, d1Of, expectError, group, json, login, openConversation, register, sendRest, TestSocket, unique, waitFor, type Session } from "./helpers";
import { acceptWelcome, addMembers, catchUp, createGroup, newDevice, type Device } from "./mlsDevices";

const count = (value: string, fallback: number) => (/^\d+$/.test(value) ? Number(value) : fallback);
const MESSAGES = count(env.RELIABILITY_MESSAGES, 300);
const SEED = count(env.RELIABILITY_SEED, Date.now() % 2 ** 31);
/** Hostile inputs in all, shared among the endpoints, queries and frames (about 200 each by default). */
const INPUTS = count(env.RELIABILITY_INPUTS, 0);

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
  /** Of the bad inputs, bodies holding ill-formed UTF-8 bytes. */
  illFormedUtf8: 0,
  /** The model-based test: runs, and commands by kind. */
  model: new Map<string, string>(),
};
const bump = (map: Map<string, number>, key: string, by = 1) => map.set(key, (map.get(key) ?? 0) + by);

afterAll(() => {
  const rows: Array<[string, string | number]> = [["seed", SEED]];
  for (const [kind, n] of report.faults) rows.push([`fault: ${kind}`, n]);
  for (const [key, n] of Object.entries(report.messages)) rows.push([`messages ${key}`, n]);
  for (const [target, n] of report.inputs) rows.push([`bad inputs: ${target}`, n]);
  if (report.inputs.size > 0) rows.push(["bad inputs holding ill-formed UTF-8 (of the above)", report.illFormedUtf8]);
  for (const [flood, what] of report.floods) rows.push([`flood: ${flood}`, what]);
  for (const [when, ms] of report.bystander) rows.push([`bystander latency ${when}`, ms]);
  for (const [what, n] of report.model) rows.push([`model: ${what}`, n]);
  rows.push(["5xx answers (other than 503 during a fault)", report.fiveHundreds]);
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log(["", "reliability report", ...rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`)].join("\n"));
});

// ---------------------------------------------------------------------------------------------
// Faults

/** A D1 whose every write fails. */
const failingD1: D1Writer = {
  prepare: (q: string) => d1Of("").prepare(q),
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

const HARD_ABORT = "reliability: hard abort";

/**
 * Runs `fn` inside the conversation's object. A hard abort of that object by another client's
 * fault meanwhile fails the call with the abort's reason; the reset object starts afresh on its
 * real connections, so whatever `fn` was to set or undo no longer matters.
 */
function withInstance(conversationId: string, fn: (instance: ConversationDO) => void): Promise<void> {
  return runInDurableObject(conversationStub(env, conversationId), fn).catch((e: unknown) => {
    if (!String(e).includes(HARD_ABORT)) throw e;
  });
}

/** Puts every conversation object back on its real connections and lets its deferred pass catch up. */
async function heal(conversationId: string): Promise<void> {
  const stub = conversationStub(env, conversationId);
  await withInstance(conversationId, (instance) => {
    instance.useConnections({ d1: d1Of, users: peersOf(env).user });
    instance.deferred.retryNow();
  });
  await runDurableObjectAlarm(stub);
  // Sync reads the members' objects: the fan-out must have reached them, as the outbox D1.
  await waitFor(async () => (await stub.pendingOutbox()) === 0 && (await stub.pendingFanout()) === 0, `the outbox and fan-out of ${conversationId} to drain`, 30_000);
}

// ---------------------------------------------------------------------------------------------
// Clients

/** What a send carries for a text: the text itself, or in an E2EE conversation its MLS ciphertext. */
type Content = (text: string) => Promise<{ body: string } | { ciphertext: string }>;
const plainText: Content = async (body) => ({ body });

/** One member's device in the storm: its sockets (one at a time), what it sent and what it got. */
class Client {
  socket: TestSocket | null = null;
  readonly sockets: TestSocket[] = [];
  /** clientMsgId -> text, sent and not yet acked: resent with the same id. */
  readonly pending = new Map<string, string>();
  /** clientMsgId -> text, of everything this device sent. */
  readonly texts = new Map<string, string>();
  /** clientMsgId -> the stored message its ack carried. */
  readonly acked = new Map<string, Message>();
  private reconnecting: Promise<void> | null = null;

  /**
   * `content`: sealed again for each attempt, as the web client does, so that a ciphertext the
   * server stores is never far behind the sender's ratchet; the server answers a retry of a
   * stored clientMsgId with the first one.
   */
  constructor(
    readonly session: Session,
    readonly conversationId: string,
    private readonly content: Content = plainText,
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
        let s: TestSocket | null = null;
        try {
          s = await connect(`/conversations/${this.conversationId}/ws?after=${this.lastSeq()}`, this.session.token);
          await s.next("ready");
          // Only now: the frames of a socket that never said ready may have a hole before them.
          this.sockets.push(s);
          this.socket = s;
          break;
        } catch (e) {
          // An object reset mid-handshake answers 503, or (a hard abort) accepts the socket and
          // loses its replay and `ready`: the client gives up on it and resumes again, as the web
          // client does (web/src/lib/socket.ts). Anything else fails the run.
          s?.close();
          if (!(String(e).includes(": 503") || String(e).includes("waiting for a ready frame")) || attempt > 20) throw e;
          report.messages.unavailable++;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      for (const [clientMsgId, text] of this.pending) {
        report.messages.retried++;
        this.socket!.send({ type: "send", clientMsgId, ...(await this.content(text)) });
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
  async sendOnSocket(clientMsgId: string, text: string): Promise<void> {
    this.pending.set(clientMsgId, text);
    this.texts.set(clientMsgId, text);
    const s = await this.ensureOpen();
    const content = await this.content(text);
    try {
      s.send({ type: "send", clientMsgId, ...content });
    } catch {
      return; // closed under us: resent on reconnect
    }
    await s.until((frames) => s.closed !== null || frames.some((f) => f.type === "ack" && f.clientMsgId === clientMsgId), "an ack", 3000).catch(() => {});
    this.collectAcks();
  }

  /** Sends over REST; a 503 (an object reset by a fault) or a 429 leaves it pending. */
  async sendOverRest(clientMsgId: string, text: string): Promise<void> {
    this.pending.set(clientMsgId, text);
    this.texts.set(clientMsgId, text);
    const content = await this.content(text);
    const res = await call("/send", { token: this.session.token, body: { conversationId: this.conversationId, clientMsgId, ...content } });
    const answer = await res.text();
    if (res.status === 201 || res.status === 200) {
      this.acked.set(clientMsgId, (JSON.parse(answer) as { message: Message }).message);
      this.pending.delete(clientMsgId);
      return;
    }
    if (res.status === 503 || res.status === 429) {
      report.messages.unavailable++;
      return;
    }
    if (res.status >= 500) report.fiveHundreds++;
    throw new Error(`REST send: ${res.status} ${answer}`);
  }

  /** Resends everything unacked until it is acked (after the faults stopped). */
  async settle(): Promise<void> {
    await waitFor(
      async () => {
        this.collectAcks();
        if (this.pending.size === 0) return true;
        for (const [clientMsgId, text] of [...this.pending]) await this.sendOverRest(clientMsgId, text);
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

const FAULT_KINDS = ["evict", "hard abort", "d1 outage", "user objects unreachable", "dropped socket", "deploy"] as const;

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
      await withInstance(due.conversationId, (instance) => instance.useConnections({ d1: d1Of, users: peersOf(env).user }));
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
          if (!/not currently running|still has active references/.test(String(e)) && !String(e).includes(HARD_ABORT)) throw e;
        });
        break;
      case "hard abort":
        // ctx.abort(): the object is reset at once, whatever it is doing (the other clients' sends
        // in flight, its deferred pass), and its memory is lost; the next call starts it afresh.
        await runInDurableObject(conversationStub(env, conv.id), (_instance, state) => state.abort(HARD_ABORT)).catch((e: unknown) => {
          if (!String(e).includes(HARD_ABORT)) throw e;
        });
        break;
      case "d1 outage":
      case "user objects unreachable": {
        const broken = kind === "d1 outage" ? { d1: () => failingD1 } : { users: unreachableUsers };
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
    // Three groups of three members, and an E2EE group of three whose members send MLS
    // ciphertexts; each member one device, one socket to its conversation.
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
    const devices: Device[] = [await newDevice(), await newDevice(), await newDevice()];
    const encrypted = await createGroup(devices[0]!, devices.slice(1));
    await addMembers(devices[0]!, encrypted.id, devices.slice(1));
    for (const d of devices.slice(1)) await acceptWelcome(d, encrypted.id);
    conversations.push(encrypted);
    members.set(encrypted.id, devices.map((d) => d.session));
    for (const d of devices) {
      clients.push(new Client(d.session, encrypted.id, async (text) => ({ ciphertext: await d.mls.encrypt(encrypted.id, text) })));
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
          const inD1 = await d1Of(conv.id).prepare(`SELECT id, ingest_id AS ingestId FROM messages WHERE id IN (${missing.map(() => "?").join()})`)
            .bind(...missing.map((m) => m.id))
            .all();
          const atSeqs = await d1Of(conv.id).prepare(`SELECT id, seq, client_msg_id AS clientMsgId, ingest_id AS ingestId FROM messages WHERE conversation_id = ? AND seq BETWEEN ? AND ?`)
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
    // Every member of the E2EE group decrypts, in seq order, exactly the texts the others sent.
    const sentTexts = new Map(clients.flatMap((c) => [...c.texts]));
    const stored = await history(devices[0]!.session, encrypted.id);
    for (const d of devices) {
      const expected = stored
        .filter((m) => m.kind === "encrypted" && m.senderId !== d.session.user.id)
        .map((m) => sentTexts.get(m.clientMsgId));
      expect(expected.length).toBeGreaterThan(0);
      expect(await catchUp(d, encrypted.id)).toEqual(expected);
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

/** Ill-formed UTF-8: bytes a UTF-8 decoder must refuse (or replace). */
const BAD_UTF8: ReadonlyArray<readonly number[]> = [[0xff], [0xfe, 0xff], [0xc0, 0xaf], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc3], [0xe2, 0x82], [0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]];

/** `text` as UTF-8 with `bad` in place of the first `marker`. */
function withRawBytes(rng: Rng, text: string, marker: string): Uint8Array {
  const at = text.indexOf(marker);
  const encode = (t: string) => new TextEncoder().encode(t);
  return new Uint8Array([...encode(text.slice(0, at)), ...rng.pick(BAD_UTF8), ...encode(text.slice(at + marker.length))]);
}

/**
 * A bad variant of a valid body, as raw text (or `bytes`: ill-formed UTF-8 inside a string of an
 * otherwise valid body, when `bytes` are allowed): never valid for a strict schema whose every
 * field in `valid` is of the type it has there, and every string of it checked.
 */
function badVariant(rng: Rng, valid: { [key: string]: Json }, allowBytes = true): { kind: string; text: string; bytes?: Uint8Array } {
  const keys = Object.keys(valid);
  const field = rng.pick(keys);
  const stringFields = keys.filter((k) => typeof valid[k] === "string" && k !== "type");
  const withField = (v: Json) => JSON.stringify({ ...valid, [field]: v });
  if (allowBytes && rng.chance(1 / 12)) {
    // In a string field, else in a string inside the field (an array's first element), else
    // in a key: the rest of the body is as valid as it was.
    const marker = "@@BAD@@";
    const f = stringFields.length > 0 ? rng.pick(stringFields) : field;
    const v = valid[f];
    const text =
      typeof v === "string"
        ? JSON.stringify({ ...valid, [f]: v.slice(0, 1) + marker + v.slice(1) })
        : Array.isArray(v) && typeof v[0] === "string"
          ? JSON.stringify({ ...valid, [f]: [marker + v[0], ...v.slice(1)] })
          : JSON.stringify(valid).replace(`"${f}"`, `"${f}${marker}"`);
    return { kind: "ill-formed UTF-8", text, bytes: withRawBytes(rng, text, marker) };
  }
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
  const one = (sql: string, ...args: string[]) => countOnAllShards(sql, ...args);
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
        const { kind, text, bytes } = badVariant(rng, e.valid);
        const headers: Record<string, string> = { "content-type": rng.chance(0.05) ? "text/plain" : "application/json" };
        const res = await call(e.path, { method: e.method, rawBody: bytes ?? text, headers, ...(e.auth ? { token: a.token } : {}) });
        if (bytes) report.illFormedUtf8++;
        // Login and registration are limited per address: a 429 in the error shape is a refusal too.
        await expectRefused(res, `${e.name} (${kind}) ${text.slice(0, 80)}`, failures);
        bump(report.inputs, e.name);
      }
    }

    // POST /upload as a form that sends a media message: ill-formed UTF-8 in a text field or the
    // file name. The file is stored as it streams; a bad field must leave nothing behind.
    const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, ...new TextEncoder().encode("IHDR")];
    for (let i = 0; i < n; i++) {
      const where = rng.pick(["body", "clientMsgId", "conversationId", "filename"]);
      const mark = (field: string, value: string) => (field === where ? value.slice(0, 1) + "@@BAD@@" + value.slice(1) : value);
      const boundary = "fuzzboundary";
      const field = (name: string, value: string) => `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${mark(name, value)}\r\n`;
      const head = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${mark("filename", "photo.png")}"\r\nContent-Type: image/png\r\n\r\n`;
      const fields = field("conversationId", conv.id) + field("clientMsgId", `fuzzform${i}`) + field("body", "a caption") + `--${boundary}--\r\n`;
      const encode = (t: string) => new TextEncoder().encode(t);
      const fieldBytes = fields.includes("@@BAD@@") ? withRawBytes(rng, fields, "@@BAD@@") : encode(fields);
      const headBytes = head.includes("@@BAD@@") ? withRawBytes(rng, head, "@@BAD@@") : encode(head);
      const rawBody = new Uint8Array([...headBytes, ...png, ...encode("\r\n"), ...fieldBytes]);
      const res = await call("/upload", { token: a.token, rawBody, headers: { "content-type": `multipart/form-data; boundary=${boundary}` } });
      await expectRefused(res, `POST /upload form, ill-formed UTF-8 in ${where}`, failures);
      bump(report.inputs, "POST /upload (form)");
      report.illFormedUtf8++;
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
        const { kind, text } = rng.chance(0.03) ? { kind: "binary", text: "" } : badVariant(rng, f.valid, false);
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

describe("abuse: connections and registrations", () => {
  it("limits a flood of sockets from one device and from one user's many devices, and a registration flood from one address, while a bystander keeps working", { timeout: 180_000 }, async () => {
    const [a, b, x, y] = [await register(), await register(), await register(), await register()];
    const conv = await group(a, [b], "connections");
    const quiet = await group(x, [y], "bystander");
    const bystander = await openConversation(x, quiet.id);
    report.bystander.set("quiet (before the connection floods)", percentiles(await bystanderLatencies(bystander, 30, "quiet2")));
    const during: number[] = [];
    const held: TestSocket[] = [];

    /** Opens sockets with `open` until one is refused; the refusal must be a 429 in the error shape. */
    const flood = async (name: string, open: () => Promise<Response>, max: number) => {
      const measuring = bystanderLatencies(bystander, 5, "conn");
      let opened = 0;
      let refusal: Response | null = null;
      for (let i = 0; i < max && refusal === null; i++) {
        const res = await open();
        if (res.status === 101 && res.webSocket) {
          res.webSocket.accept();
          held.push(new TestSocket(res.webSocket));
          opened++;
        } else refusal = res;
      }
      during.push(...(await measuring));
      if (refusal === null) throw new Error(`${name}: ${max} sockets opened, none refused`);
      const { error } = await expectError(refusal, 429, "rate_limited");
      expect(Number(refusal.headers.get("retry-after"))).toBeGreaterThan(0);
      report.floods.set(name, `${opened} opened, then 429 (${error.message})`);
      return { opened, message: error.message };
    };
    const socketOf = (s: Session, path: string) => () => call(path, { token: s.token, headers: { upgrade: "websocket" } });

    try {
      // One device: MAX_SOCKETS_PER_DEVICE (10, the default) on each kind of socket.
      expect((await flood("connections: one device, conversation sockets", socketOf(a, `/conversations/${conv.id}/ws`), 100)).opened).toBe(10);
      expect((await flood("connections: one device, user sockets", socketOf(a, "/ws"), 100)).opened).toBe(10);

      // One user, a new device per login: MAX_SOCKETS_PER_USER (50) in the conversation's object.
      let total = 10;
      let refused = "";
      for (let d = 0; d < 10 && refused === ""; d++) {
        const device = await login(a.user.username);
        const { opened, message } = await flood(`connections: one user, device ${d + 2}`, socketOf(device, `/conversations/${conv.id}/ws`), 100);
        report.floods.delete(`connections: one user, device ${d + 2}`);
        total += opened;
        if (/user/.test(message)) refused = message;
      }
      report.floods.set("connections: one user, a new device per login", `${total} opened, then 429 (${refused})`);
      expect(total).toBe(50);

      // Registrations from one address: REGISTRATIONS_PER_ADDRESS_PER_HOUR at its default (10).
      // The Worker reads its settings from this env on each request; the test config's is a million.
      const configured = env.REGISTRATIONS_PER_ADDRESS_PER_HOUR;
      env.REGISTRATIONS_PER_ADDRESS_PER_HOUR = "10";
      try {
        const measuring = bystanderLatencies(bystander, 5, "reg");
        const address = { "cf-connecting-ip": "203.0.113.90" };
        let created = 0;
        let res: Response | null = null;
        for (let i = 0; i < 100; i++) {
          res = await call("/auth/register", { body: { username: unique("regflood"), password: "correct horse" }, headers: address });
          if (res.status !== 201) break;
          await res.body?.cancel();
          created++;
        }
        during.push(...(await measuring));
        await expectError(res!, 429, "rate_limited");
        expect(Number(res!.headers.get("retry-after"))).toBeGreaterThan(0);
        report.floods.set("registrations from one address", `${created} created, then 429`);
        expect(created).toBe(10);
        // Another address still registers.
        expect((await call("/auth/register", { body: { username: unique("regother"), password: "correct horse" }, headers: { "cf-connecting-ip": "203.0.113.91" } })).status).toBe(201);
      } finally {
        env.REGISTRATIONS_PER_ADDRESS_PER_HOUR = configured;
      }
      report.bystander.set("during connection and registration floods", percentiles(during));
      expect(bystander.closed).toBeNull();
    } finally {
      for (const s of held) s.close();
      bystander.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Model-based

const MODEL_RUNS = count(env.RELIABILITY_MODEL_RUNS, 8);
const MODEL_COMMANDS = 40;

/**
 * The reference model: what ../shared/spec/DESIGN.md's invariants say a group holds. User 0 is
 * the admin and stays; users 1 and 2 come and go.
 */
interface Model {
  members: Set<number>;
  /**
   * Per user: the seqs they may read (docs/api.md, membership spans): from the message that added
   * them (1 for the group's first members) through the one that removed them (`through` null while
   * a member); null for a user never in the group. Added back, only the new span counts.
   */
  spans: Array<{ from: number; through: number | null } | null>;
  /**
   * Every message in seq order (seq = index + 1); `sender` null for a system message. `body` is
   * a sent message's text as it stands after edits; an edit is itself a message (`edit`).
   */
  messages: Array<{ sender: number | null; clientMsgId: string | null; body?: string; edit?: true }>;
  /** Per user: clientMsgId -> the seq of the message it stored. */
  sent: Array<Map<string, number>>;
  /** Per user: the receipt watermarks. */
  receipts: Array<{ deliveredSeq: number; readSeq: number }>;
}

/** The real thing: a fresh group per run, and each user's one device with at most one socket. */
interface Real {
  conversationId: string;
  users: Session[];
  sockets: Array<TestSocket | null>;
  /** Per user: every seq its device got, in order, over all its sockets (message frames and acks of new sends). */
  streams: number[][];
  /** Per user: how many frames of its open socket are already in `streams`. */
  counted: number[];
  /** Acks answering a retry (the stored message again): not a second delivery. */
  retryAcks: WeakSet<Frame>;
}

type Frame = TestSocket["frames"][number];
type ModelCommand = fc.AsyncCommand<Model, Real>;

const isMember = (m: Model, u: number) => m.members.has(u);

/** The seqs a user may read now, in order; empty for one never in the group. */
function readable(m: Model, u: number): number[] {
  const span = m.spans[u];
  if (!span) return [];
  const through = span.through ?? m.messages.length;
  return Array.from({ length: through - span.from + 1 }, (_, i) => span.from + i);
}

/** Moves the open socket's new frames into the user's stream. */
function absorb(r: Real, u: number): void {
  const s = r.sockets[u];
  if (!s) return;
  for (const f of s.frames.slice(r.counted[u])) {
    if ((f.type === "message" || (f.type === "ack" && !r.retryAcks.has(f))) && f.message) r.streams[u]!.push(f.message.seq);
  }
  r.counted[u] = s.frames.length;
}

/** Waits until a member's open socket has everything stored; its stream must be its span, each once. */
async function caughtUp(m: Model, r: Real, u: number): Promise<void> {
  const s = r.sockets[u];
  if (!s || !isMember(m, u)) return;
  await s.until(() => {
    absorb(r, u);
    return (r.streams[u]!.at(-1) ?? 0) >= m.messages.length;
  }, `user ${u}'s socket to reach seq ${m.messages.length}`);
  expect(r.streams[u], `user ${u}'s deliveries, in order, each once`).toEqual(readable(m, u));
}

async function expectHistory(m: Model, r: Real, u: number): Promise<void> {
  const stored = await history(r.users[u]!, r.conversationId);
  expect(stored.map((x) => x.seq), `user ${u}'s history is their span`).toEqual(readable(m, u));
  stored.forEach((x) => {
    const want = m.messages[x.seq - 1]!;
    if (want.sender === null) expect(x.kind).toBe("system");
    else expect({ senderId: x.senderId, clientMsgId: x.clientMsgId }).toEqual({ senderId: r.users[want.sender]!.user.id, clientMsgId: want.clientMsgId });
    if (want.edit) expect(x.kind, "an edit is an action in the sequence").toBe("action");
    else if (want.body !== undefined) expect(x.body, `seq ${x.seq} as last edited`).toBe(want.body);
  });
}

const modelCounts = new Map<string, number>();

class SendCommand implements ModelCommand {
  readonly user: number;
  readonly viaSocket: boolean;
  constructor(user: number, viaSocket: boolean) {
    this.user = user;
    this.viaSocket = viaSocket;
  }
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    bump(modelCounts, "send");
    const u = this.user;
    const clientMsgId = unique(`model${u}`);
    if (!isMember(m, u)) {
      await expectError(await call("/send", { token: r.users[u]!.token, body: { conversationId: r.conversationId, clientMsgId, body: "not mine" } }), 404, "not_found");
      return;
    }
    let message: Message;
    const s = r.sockets[u];
    if (this.viaSocket && s && !s.closed) {
      const seen = s.frames.length;
      s.send({ type: "send", clientMsgId, body: `model ${clientMsgId}` });
      await s.until((fs) => fs.slice(seen).some((f) => f.type === "ack" && f.clientMsgId === clientMsgId), "an ack");
      message = s.frames.slice(seen).find((f) => f.type === "ack" && f.clientMsgId === clientMsgId)!.message!;
    } else {
      message = (await sendRest(r.users[u]!, r.conversationId, `model ${clientMsgId}`, clientMsgId)).message;
    }
    expect(message.seq, "the next seq").toBe(m.messages.length + 1);
    m.messages.push({ sender: u, clientMsgId, body: `model ${clientMsgId}` });
    m.sent[u]!.set(clientMsgId, message.seq);
  }
  toString = () => `send(${this.user}, ${this.viaSocket ? "socket" : "REST"})`;
}

/** A member edits one of its messages (an action, idempotent by its own clientMsgId), and retries it. */
class EditCommand implements ModelCommand {
  readonly user: number;
  readonly pick: number;
  constructor(user: number, pick: number) {
    this.user = user;
    this.pick = pick;
  }
  check = (m: Readonly<Model>) => m.sent[this.user]!.size > 0;
  async run(m: Model, r: Real): Promise<void> {
    bump(modelCounts, "edit");
    const u = this.user;
    const targets = [...m.sent[u]!.values()];
    const targetSeq = targets[this.pick % targets.length]!;
    const clientMsgId = unique(`edit${u}`);
    const body = `edited ${clientMsgId}`;
    const request = { token: r.users[u]!.token, body: { clientMsgId, action: { type: "edit", targetSeq, body } } };
    const path = `/conversations/${r.conversationId}/actions`;
    if (!isMember(m, u)) {
      await expectError(await call(path, request), 404, "not_found");
      return;
    }
    if (targetSeq < m.spans[u]!.from) {
      // Sent in an earlier span: a member added back acts only on what it may read now.
      await expectError(await call(path, request), 400, "bad_request");
      return;
    }
    const first = await json<{ message: Message }>(path, request, 201);
    expect(first.message.seq, "an edit takes the next seq").toBe(m.messages.length + 1);
    m.messages.push({ sender: u, clientMsgId, edit: true });
    m.messages[targetSeq - 1]!.body = body;
    // The same action again (a retry after a lost answer): the stored event, nothing new.
    const again = await json<{ message: Message }>(path, request, 200);
    expect(again.message.seq, "a retried edit answers the stored event").toBe(first.message.seq);
  }
  toString = () => `edit(${this.user}, #${this.pick})`;
}

class RetryCommand implements ModelCommand {
  readonly user: number;
  readonly pick: number;
  readonly viaSocket: boolean;
  constructor(user: number, pick: number, viaSocket: boolean) {
    this.user = user;
    this.pick = pick;
    this.viaSocket = viaSocket;
  }
  check = (m: Readonly<Model>) => m.sent[this.user]!.size > 0;
  async run(m: Model, r: Real): Promise<void> {
    bump(modelCounts, "retry");
    const u = this.user;
    const ids = [...m.sent[u]!.keys()];
    const clientMsgId = ids[this.pick % ids.length]!;
    const body = { conversationId: r.conversationId, clientMsgId, body: "a retry may say anything" };
    if (!isMember(m, u)) {
      await expectError(await call("/send", { token: r.users[u]!.token, body }), 404, "not_found");
      return;
    }
    let message: Message;
    const s = r.sockets[u];
    if (this.viaSocket && s && !s.closed) {
      const seen = s.frames.length;
      s.send({ type: "send", clientMsgId, body: body.body });
      await s.until((fs) => fs.slice(seen).some((f) => f.type === "ack" && f.clientMsgId === clientMsgId), "an ack");
      const ack = s.frames.slice(seen).find((f) => f.type === "ack" && f.clientMsgId === clientMsgId)!;
      r.retryAcks.add(ack);
      message = ack.message!;
    } else {
      message = (await json<{ message: Message }>("/send", { token: r.users[u]!.token, body }, 200)).message;
    }
    expect(message.seq, "a retry answers the stored message").toBe(m.sent[u]!.get(clientMsgId));
    const conv = await json<{ conversation: Conversation }>(`/conversations/${r.conversationId}`, { token: r.users[u]!.token });
    expect(conv.conversation.lastSeq, "a retry stores nothing").toBe(m.messages.length);
  }
  toString = () => `retry(${this.user}, #${this.pick}, ${this.viaSocket ? "socket" : "REST"})`;
}

class ReconnectCommand implements ModelCommand {
  readonly user: number;
  constructor(user: number) {
    this.user = user;
  }
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    bump(modelCounts, "reconnect");
    const u = this.user;
    if (!isMember(m, u)) {
      const res = await call(`/conversations/${r.conversationId}/ws?after=0`, { token: r.users[u]!.token, headers: { upgrade: "websocket" } });
      await expectError(res, 404, "not_found");
      return;
    }
    await caughtUp(m, r, u);
    r.sockets[u]?.close();
    const after = r.streams[u]!.at(-1) ?? 0;
    const s = await openConversation(r.users[u]!, r.conversationId, after);
    r.sockets[u] = s;
    r.counted[u] = 0;
    expect(s.frames.find((f) => f.type === "ready")?.lastSeq).toBe(m.messages.length);
    await caughtUp(m, r, u);
  }
  toString = () => `reconnect(${this.user})`;
}

class EvictCommand implements ModelCommand {
  check = () => true;
  async run(_: Model, r: Real): Promise<void> {
    bump(modelCounts, "evict");
    await evictDurableObject(conversationStub(env, r.conversationId)).catch((e: unknown) => {
      if (!/not currently running|still has active references/.test(String(e))) throw e;
    });
  }
  toString = () => "evict";
}

class AddMemberCommand implements ModelCommand {
  readonly user: number;
  constructor(user: number) {
    this.user = user;
  }
  check = (m: Readonly<Model>) => !m.members.has(this.user);
  async run(m: Model, r: Real): Promise<void> {
    bump(modelCounts, "add member");
    const u = this.user;
    await json(`/conversations/${r.conversationId}/members`, { token: r.users[0]!.token, body: { userIds: [r.users[u]!.user.id] } });
    m.members.add(u);
    m.messages.push({ sender: null, clientMsgId: null });
    // They read from the message that added them; their receipts start just below it.
    const joinedSeq = m.messages.length;
    m.spans[u] = { from: joinedSeq, through: null };
    const receipts = m.receipts[u]!;
    if (joinedSeq - 1 > receipts.readSeq) m.receipts[u] = { deliveredSeq: Math.max(receipts.deliveredSeq, joinedSeq - 1), readSeq: joinedSeq - 1 };
    // A new span: what their device gets from here on starts again.
    r.streams[u] = [];
  }
  toString = () => `add(${this.user})`;
}

class RemoveMemberCommand implements ModelCommand {
  readonly user: number;
  constructor(user: number) {
    this.user = user;
  }
  check = (m: Readonly<Model>) => m.members.has(this.user);
  async run(m: Model, r: Real): Promise<void> {
    bump(modelCounts, "remove member");
    const u = this.user;
    await caughtUp(m, r, u);
    const res = await call(`/conversations/${r.conversationId}/members/${r.users[u]!.user.id}`, { method: "DELETE", token: r.users[0]!.token });
    expect(res.status).toBe(204);
    m.members.delete(u);
    m.messages.push({ sender: null, clientMsgId: null });
    m.spans[u] = { from: m.spans[u]!.from, through: m.messages.length };
    const s = r.sockets[u];
    if (s) {
      // Removed: the socket closes with 4003, and what it got stays within what the user could see.
      expect((await s.waitClosed()).code).toBe(4003);
      absorb(r, u);
      expect(r.streams[u]!.every((seq) => seq <= m.messages.length)).toBe(true);
      r.sockets[u] = null;
    }
    // A former member still reads their span, through the message that removed them.
    await expectHistory(m, r, u);
  }
  toString = () => `remove(${this.user})`;
}

class ReceiptCommand implements ModelCommand {
  readonly user: number;
  readonly read: boolean;
  readonly pick: number;
  constructor(user: number, read: boolean, pick: number) {
    this.user = user;
    this.read = read;
    this.pick = pick;
  }
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    bump(modelCounts, "receipt");
    const u = this.user;
    // 0 .. lastSeq + 1: the last is one past what is stored.
    const seq = this.pick % (m.messages.length + 2);
    const res = await call(`/conversations/${r.conversationId}/receipts`, { token: r.users[u]!.token, body: { type: this.read ? "read" : "delivered", seq } });
    if (!isMember(m, u)) return void (await expectError(res, 404, "not_found"));
    if (seq > m.messages.length) return void (await expectError(res, 400, "bad_request"));
    const want = m.receipts[u]!;
    want.deliveredSeq = Math.max(want.deliveredSeq, seq);
    if (this.read) want.readSeq = Math.max(want.readSeq, seq);
    expect(res.status).toBe(200);
    const { receipt } = (await res.json()) as { receipt: { deliveredSeq: number; readSeq: number } };
    expect({ deliveredSeq: receipt.deliveredSeq, readSeq: receipt.readSeq }, "receipts only move forward").toEqual(want);
  }
  toString = () => `receipt(${this.user}, ${this.read ? "read" : "delivered"}, #${this.pick})`;
}

class SyncCommand implements ModelCommand {
  readonly user: number;
  constructor(user: number) {
    this.user = user;
  }
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    bump(modelCounts, "sync");
    const u = this.user;
    const stub = conversationStub(env, r.conversationId);
    await waitFor(async () => (await stub.pendingOutbox()) === 0 && (await stub.pendingFanout()) === 0, "the outbox and fan-out to drain");
    const got = await synced(r.users[u]!, r.conversationId);
    expect(got.map((x) => x.seq).sort((a, b) => a - b), "sync returns every message of the user's span once").toEqual(readable(m, u));
    if (m.spans[u]) await expectHistory(m, r, u);
  }
  toString = () => `sync(${this.user})`;
}

describe("model-based", () => {
  it(`matches a reference model over random sends, retries, reconnects, evictions, membership changes, receipts and syncs (seed ${SEED})`, { timeout: 120_000 + MODEL_RUNS * MODEL_COMMANDS * 2_000 }, async () => {
    const users = [await register(), await register(), await register()];
    const user = fc.integer({ min: 0, max: 2 });
    const other = fc.integer({ min: 1, max: 2 });
    const send = fc.tuple(user, fc.boolean()).map(([u, s]) => new SendCommand(u, s));
    // Commands are drawn evenly from this list: sends are in it twice, so there is more to retry and deliver.
    const kinds: Array<fc.Arbitrary<ModelCommand>> = [
        send,
        send,
        fc.tuple(user, fc.nat(), fc.boolean()).map(([u, p, s]) => new RetryCommand(u, p, s)),
        fc.tuple(user, fc.nat()).map(([u, p]) => new EditCommand(u, p)),
        user.map((u) => new ReconnectCommand(u)),
        fc.constant(new EvictCommand()),
        other.map((u) => new AddMemberCommand(u)),
        other.map((u) => new RemoveMemberCommand(u)),
        fc.tuple(user, fc.boolean(), fc.nat()).map(([u, read, p]) => new ReceiptCommand(u, read, p)),
        user.map((u) => new SyncCommand(u)),
    ];
    const commands = fc.commands(kinds, { maxCommands: MODEL_COMMANDS, size: "max" });
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(commands, async (cmds) => {
        runs++;
        const conv = await group(users[0]!, [users[1]!], "model");
        const model: Model = { members: new Set([0, 1]), spans: [{ from: 1, through: null }, { from: 1, through: null }, null], messages: [{ sender: null, clientMsgId: null }], sent: [new Map(), new Map(), new Map()], receipts: users.map(() => ({ deliveredSeq: 0, readSeq: 0 })) };
        const real: Real = { conversationId: conv.id, users, sockets: [null, null, null], streams: [[], [], []], counted: [0, 0, 0], retryAcks: new WeakSet() };
        try {
          for (const u of [0, 1]) real.sockets[u] = await openConversation(users[u]!, conv.id, 0);
          await fc.asyncModelRun(() => ({ model, real }), cmds);
          // At the end: every open socket got everything once, in order; the history is the model's.
          for (const u of [0, 1, 2]) await caughtUp(model, real, u);
          await expectHistory(model, real, 0);
        } finally {
          for (const s of real.sockets) s?.close();
        }
      }),
      { numRuns: MODEL_RUNS, seed: SEED, endOnFailure: true },
    );
    report.model.set("runs", String(runs));
    report.model.set("commands", [...modelCounts].map(([k, n]) => `${k} ${n}`).join(", "));
  });
});
