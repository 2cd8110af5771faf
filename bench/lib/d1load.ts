// S9 and S10 (issue 31's measurements), run against bench/counted/worker.ts: the app with every D1
// query written down (bench/lib/d1count.ts reads the log). Both go through HTTP and sockets only,
// so they measure the app the same way whichever of its parts answers a request.
//
// S9: the D1 queries a message sent and an authenticated request wait for, and leave behind; D1
// writes per message through the outbox; and an authenticated request's cost with the app's signed
// token (its session checked in the user's object) against the D1 token lookup it replaced.
// S10: a user in many conversations syncs after a day away and reads the conversation list: time,
// D1 queries and rows read per page, for each number of conversations.
import { api, closeAll, createGroup, heardFrom, isReadyFrame, openSocket, pool, registerUsers, type User, type WebSocket } from "./clients.ts";
import { answerSpan, byBinding, describe, measureOperation, splitByAnswer, totals, untilD1Quiet, type D1Totals, type OperationD1 } from "./d1count.ts";
import type { Server } from "./proc.ts";
import { now, openAppRoom, type Room } from "./rooms.ts";
import { cpuMeter, percentile, sendAcked, syncAll } from "./scenarios.ts";

// --- S9 -------------------------------------------------------------------------------------------

export interface S9Options {
  /** Requests of each kind, at each concurrency, in the auth comparison. */
  requests: number;
  /** How many times each operation is counted. */
  repeats: number;
  /** Messages of the outbox burst, in each group. */
  burst: number;
}

/** An operation's counts over its repeats, and what its queries were (the first repeat's). */
export interface OperationCounts {
  name: string;
  awaited: D1Totals[];
  notAwaited: D1Totals[];
  after: D1Totals[];
  ms: number[];
  awaitedSql: string[];
  afterSql: string[];
}

/** What an operation of S9 does: the request or send it times. */
type Operation = [name: string, run: (k: number) => Promise<unknown>];

/** Sends the next message of device 0 in `room` and resolves at its ack. */
function sendOne(room: Room): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${room.name}: no ack within 10 s`)), 10_000);
    room.handler = {
      ack(i) {
        if (i !== 0) return;
        clearTimeout(timer);
        resolve();
      },
      deliver() {},
    };
    room.send(0, room.sentBy[0] ?? 0);
  });
}

/** GET `path` with `token`; throws unless it answers `status`. */
async function get(base: string, path: string, token: string, status: number): Promise<void> {
  const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) });
  await res.arrayBuffer();
  if (res.status !== status) throw new Error(`GET ${path}: ${res.status}, expected ${status}`);
}

async function countOperation(server: Server, [name, run]: Operation, repeats: number): Promise<OperationCounts> {
  const runs: OperationD1[] = [];
  for (let k = 0; k < repeats; k++) runs.push(await measureOperation(server, () => run(k)));
  const first = runs[0];
  return {
    name,
    awaited: runs.map((r) => totals(r.awaited)),
    notAwaited: runs.map((r) => totals(r.notAwaited)),
    after: runs.map((r) => totals(r.after)),
    ms: runs.map((r) => r.ms),
    awaitedSql: first ? describe(first.awaited) : [],
    afterSql: first ? describe([...first.notAwaited, ...first.after]) : [],
  };
}

/** The auth comparison's kinds of request: the path, and what it answers. */
const AUTH_KINDS = [
  ["none", "/__bench/auth/none", 204],
  ["signed", "/__bench/auth/signed", 204],
  ["d1", "/__bench/auth/d1", 204],
  ["me", "/me", 200],
] as const;
export type AuthKind = (typeof AUTH_KINDS)[number][0];

export interface AuthCost {
  requests: number;
  p50: number | null;
  p99: number | null;
  meanMs: number;
  perSec: number;
  cpuMsPerRequest: number;
}

/**
 * `requests` of each kind with `concurrency` in flight, in rounds that rotate the kinds' order so
 * that a drift of the machine's speed falls on all of them alike.
 */
async function authCosts(server: Server, token: string, requests: number, concurrency: number): Promise<Record<AuthKind, AuthCost>> {
  const ROUNDS = 5;
  const per = Math.max(1, Math.ceil(requests / ROUNDS));
  const acc = new Map<AuthKind, { latencies: number[]; seconds: number; cpu: number }>(AUTH_KINDS.map(([k]) => [k, { latencies: [], seconds: 0, cpu: 0 }]));
  // A warm-up of each kind, uncounted: the isolate compiles each path on its first requests.
  for (const [, path, status] of AUTH_KINDS) for (let i = 0; i < 20; i++) await get(server.base, path, token, status);
  for (let round = 0; round < ROUNDS; round++) {
    for (let j = 0; j < AUTH_KINDS.length; j++) {
      const [kind, path, status] = AUTH_KINDS[(round + j) % AUTH_KINDS.length] ?? AUTH_KINDS[0];
      const a = acc.get(kind);
      if (!a) continue;
      const cpu = cpuMeter(server);
      const t0 = now();
      await pool(
        Array.from({ length: per }, (_, i) => i),
        concurrency,
        async () => {
          const s = now();
          await get(server.base, path, token, status);
          a.latencies.push(now() - s);
        },
      );
      a.seconds += (now() - t0) / 1000;
      a.cpu += cpu().runtime;
    }
  }
  const out: Partial<Record<AuthKind, AuthCost>> = {};
  for (const [kind, a] of acc) {
    a.latencies.sort((x, y) => x - y);
    out[kind] = {
      requests: a.latencies.length,
      p50: percentile(a.latencies, 50),
      p99: percentile(a.latencies, 99),
      meanMs: a.latencies.reduce((x, y) => x + y, 0) / a.latencies.length,
      perSec: a.latencies.length / a.seconds,
      cpuMsPerRequest: (a.cpu * 1000) / a.latencies.length,
    };
  }
  const complete = (o: Partial<Record<AuthKind, AuthCost>>): o is Record<AuthKind, AuthCost> => AUTH_KINDS.every(([k]) => o[k] !== undefined);
  if (!complete(out)) throw new Error("S9: an auth kind was not measured");
  return out;
}

/** D1 work per message of a burst of socket sends in a group of `members`. */
export interface OutboxCounts {
  members: number;
  messages: number;
  /** Everything the burst made D1 do, per message. */
  all: D1Totals;
  /** What the conversation object's outbox wrote, per message. */
  outbox: D1Totals;
  /** Per binding (a D1 database or shard), everything, per message. */
  perBinding: Record<string, D1Totals>;
  /** Awaited by some ack (began after the burst began and settled before its last ack): should be none. */
  awaitedByAcks: number;
  sql: string[];
}

const perMessage = (t: D1Totals, n: number): D1Totals => ({
  calls: t.calls / n,
  statements: t.statements / n,
  writes: t.writes / n,
  rowsRead: t.rowsRead / n,
  rowsWritten: t.rowsWritten / n,
  unreported: t.unreported / n,
  ms: t.ms / n,
});

async function outboxBurst(server: Server, room: Room, messages: number): Promise<OutboxCounts> {
  await untilD1Quiet(server, { quietMs: 300 });
  const t0 = Date.now();
  await sendAcked(room, [0], messages, 20, `S9 burst in a group of ${room.size}`);
  const t1 = Date.now();
  const { entries } = await untilD1Quiet(server, { quietMs: 1_000, minMs: 1_000, timeoutMs: 120_000 });
  room.handler = { ack() {}, deliver() {} };
  const split = splitByAnswer(entries, t0, t1);
  const mine = [...split.awaited, ...split.notAwaited, ...split.after];
  const perBinding = byBinding(mine);
  return {
    members: room.size,
    messages,
    all: perMessage(totals(mine), messages),
    outbox: perMessage(totals(mine.filter((e) => e.origin === "conversation" && e.writes > 0)), messages),
    perBinding: Object.fromEntries(Object.entries(perBinding).map(([b, t]) => [b, perMessage(t, messages)])),
    // A burst keeps many sends in flight: a query settled before the last ack may have been
    // waited for by none of them, so this bounds what the acks waited for from above.
    awaitedByAcks: split.awaited.length,
    sql: describe(mine),
  };
}

export async function s9(server: Server, tag: string, o: S9Options) {
  const users = await registerUsers(server.base, 10, `c${tag}_`);
  const [a, b] = users;
  if (!a || !b) throw new Error("S9: no users");
  // A conversation of two (most traffic) and a group of ten, each device with its user socket and a
  // conversation socket, as the web client holds them.
  const pair = await openAppRoom(server, [a, b]);
  const group = await openAppRoom(server, users);
  try {
    const { cursor } = await syncAll(server, a, "0");
    // The D1 token lookup's row for this device (bench/counted/worker.ts).
    await api(server.base, "POST", "/__bench/auth/d1", { token: a.token, expect: [204] });
    const ops: Operation[] = [
      ["socket send, 2 members", () => sendOne(pair)],
      ["socket send, 10 members", () => sendOne(group)],
      [
        "POST /send, 2 members",
        (k) => api(server.base, "POST", "/send", { token: a.token, body: { conversationId: pair.conversationId, clientMsgId: `s9rest.${tag}.${k}`, body: `s9 rest ${k}` } }),
      ],
      ["GET /me", () => get(server.base, "/me", a.token, 200)],
      ["GET /conversations", () => get(server.base, "/conversations", a.token, 200)],
      ["GET /messages?since=<cursor>", () => get(server.base, `/messages?since=${encodeURIComponent(cursor)}&limit=100`, a.token, 200)],
      ["POST /auth/ticket", () => api(server.base, "POST", "/auth/ticket", { token: a.token })],
      ["bench: auth by signed token alone", () => get(server.base, "/__bench/auth/signed", a.token, 204)],
      ["bench: auth by D1 token lookup alone", () => get(server.base, "/__bench/auth/d1", a.token, 204)],
    ];
    const operations: OperationCounts[] = [];
    for (const op of ops) operations.push(await countOperation(server, op, o.repeats));
    const outbox = [await outboxBurst(server, pair, o.burst), await outboxBurst(server, group, o.burst)];
    const auth = { sequential: await authCosts(server, a.token, o.requests, 1), concurrent: await authCosts(server, a.token, o.requests, 8) };
    return { operations, outbox, auth, concurrency: 8 };
  } finally {
    await Promise.all([pair.close(), group.close()]);
  }
}

// --- S10 ------------------------------------------------------------------------------------------

export interface S10Seed {
  conversations: number;
  messagesPerConversation: number;
  user: User;
  /** `since` of the sync: a day before the backlog began (GET /messages's epoch-ms form). */
  since: string;
  seconds: number;
  /** Until D1 and the fan-out were quiet after the last send. */
  drainSeconds: number;
}

/**
 * A user in `conversations` groups (each made by a partner, who then sends `perConversation`
 * messages into it over REST, 8 at a time), with the user's device online meanwhile (as a device
 * on the day's other half), so that no push is queued for it.
 */
export async function seedMany(server: Server, conversations: number, perConversation: number, tag: string): Promise<S10Seed> {
  const since = String(Date.now() - 86_400_000);
  const started = now();
  const [user, partner] = await registerUsers(server.base, 2, `m${conversations}${tag}_`);
  if (!user || !partner) throw new Error("S10: no users");
  const sockets: WebSocket[] = await Promise.all(
    [user, partner].map((d) => openSocket(`${server.wsBase}/ws`, { headers: { authorization: `Bearer ${d.token}` }, isReady: isReadyFrame, keepalive: true })),
  );
  try {
    const ids = await pool(
      Array.from({ length: conversations }, (_, i) => i),
      8,
      async (i) => (await createGroup(server.base, partner, [user], `s10 ${i}`)).id,
    );
    const sends = ids.flatMap((id) => Array.from({ length: perConversation }, (_, k) => ({ id, k })));
    // In bouts, each followed by a ping of the sockets: a runtime busy with a stream of requests
    // answers a socket's keep-alive late, and a device not heard from in 60 s counts as offline.
    for (let i = 0; i < sends.length; i += 500) {
      await pool(sends.slice(i, i + 500), 8, ({ id, k }) =>
        api(server.base, "POST", "/send", { token: partner.token, body: { conversationId: id, clientMsgId: `s10.${tag}.${k}`, body: `s10 ${k}` } }),
      );
      await heardFrom(sockets);
    }
    const sent = now();
    await untilD1Quiet(server, { quietMs: 1_500, timeoutMs: 300_000 });
    return {
      conversations,
      messagesPerConversation: perConversation,
      user,
      since,
      seconds: (sent - started) / 1000,
      drainSeconds: (now() - sent) / 1000,
    };
  } finally {
    // Then the device goes away.
    await closeAll(sockets);
    await untilD1Quiet(server, { quietMs: 500 });
  }
}

/** One page: its time and the D1 work its answer waited for. */
export interface PageCost {
  ms: number;
  items: number;
  d1: D1Totals;
}

/** Runs `pages` (each resolves with its item count and whether another page follows) and counts each. */
async function pagesCounted(server: Server, page: (k: number) => Promise<{ items: number; more: boolean }>): Promise<PageCost[]> {
  await untilD1Quiet(server, { quietMs: 300 });
  const windows: { t0: number; t1: number; ms: number; items: number }[] = [];
  for (let k = 0; ; k++) {
    const t0 = Date.now();
    const p0 = performance.now();
    const { items, more } = await page(k);
    windows.push({ t0, t1: Date.now(), ms: performance.now() - p0, items });
    if (!more || k > 10_000) break;
  }
  const { entries, answers } = await untilD1Quiet(server, { quietMs: 300 });
  return windows.map((w) => ({ ms: w.ms, items: w.items, d1: totals(splitByAnswer(entries, ...answerSpan(answers, w.t0, w.t1)).awaited) }));
}

/**
 * The sync after a day away (GET /messages from the time a day before, to the end), checked to
 * bring every message sent once: its pages' costs, its messages, and how long it took.
 */
async function syncAway(server: Server, seed: S10Seed, limit: number) {
  const { user } = seed;
  const expected = seed.conversations * seed.messagesPerConversation;
  let since = seed.since;
  const ids = new Set<string>();
  let ours = 0;
  const t0 = now();
  const pages = await pagesCounted(server, async () => {
    const page = await api<{ messages: { id: string; body?: string | null }[]; cursor: string; hasMore: boolean }>(
      server.base,
      "GET",
      `/messages?since=${encodeURIComponent(since)}&limit=${limit}`,
      { token: user.token },
    );
    for (const m of page.messages) {
      if (ids.has(m.id)) throw new Error(`S10: message ${m.id} came twice`);
      ids.add(m.id);
      if (m.body?.startsWith("s10 ")) ours++;
    }
    since = page.cursor;
    return { items: page.messages.length, more: page.hasMore };
  });
  const seconds = (now() - t0) / 1000;
  if (ours !== expected) throw new Error(`S10: synced ${ours} of the ${expected} messages sent`);
  return { pages, messages: ids.size, seconds };
}

/**
 * S10 on a seeded user: the sync after a day away, `syncRepeats` times (it reads and changes
 * nothing), and the conversation list, `listRepeats` times.
 */
export async function s10(server: Server, seed: S10Seed, { limit = 100, syncRepeats = 3, minPages = 60, listRepeats = 5 } = {}) {
  const { user } = seed;
  // At least `syncRepeats` syncs and `minPages` pages in all, so that a small backlog's few pages
  // give as many times per page as a large one's.
  const syncs = [await syncAway(server, seed, limit)];
  while (syncs.length < syncRepeats || syncs.reduce((a, s) => a + s.pages.length, 0) < minPages) syncs.push(await syncAway(server, seed, limit));
  // The conversation list in pages of `limit` (at most the list's 200), following `cursor` while
  // `hasMore`, `listRepeats` times.
  const listLimit = Math.min(limit, 200);
  const list: PageCost[][] = [];
  for (let r = 0; r < listRepeats; r++) {
    let cursor: string | null = null;
    let seen = 0;
    list.push(
      await pagesCounted(server, async () => {
        const path: string = `/conversations?limit=${listLimit}${cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`}`;
        const page = await api<{ conversations: unknown[]; cursor?: string | null; hasMore?: boolean }>(server.base, "GET", path, { token: user.token });
        seen += page.conversations.length;
        const more = page.hasMore === true && typeof page.cursor === "string";
        cursor = more ? (page.cursor ?? null) : null;
        return { items: page.conversations.length, more };
      }),
    );
    if (seen !== seed.conversations) throw new Error(`S10: the list had ${seen} conversations, expected ${seed.conversations}`);
  }
  return {
    conversations: seed.conversations,
    messages: syncs[0]?.messages ?? 0,
    limit,
    /** Each sync's seconds, and every page of them all. */
    syncSeconds: syncs.map((s) => s.seconds),
    sync: syncs.flatMap((s) => s.pages),
    syncPages: syncs[0]?.pages.length ?? 0,
    list,
  };
}
