// The scenarios S1-S5 of issue 7. Each takes what it needs and returns plain numbers.
import {
  api,
  closeAll,
  heardFrom,
  isReadyFrame,
  KEEPALIVE_MS,
  openSocket,
  openSocketRetrying,
  pool,
  retrying,
  ticketUrl,
  type Conversation,
  type RetryStats,
  type User,
  type WebSocket,
} from "./clients.ts";
import { liveHeapBytes } from "./inspector.ts";
import { cpuSeconds, type Reachable, type Server } from "./proc.ts";
import { now, openAppRoom, openBaselineRoom, openRelayRoom, waitQuiet, type AppRoomOptions, type Room, type RoomKind } from "./rooms.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** What a scenario runs against: a kind of room on a server (the baseline server has three kinds). */
export interface Target {
  kind: RoomKind;
  server: Server;
  /** The runtime's inspector port (wrangler's --inspector-port). */
  inspector: number;
  /** Whether --profile profiles it (the app, alone and before). */
  profiled?: boolean;
  /** alone: whether its devices hold user sockets (its users' objects are real). */
  userSockets?: boolean;
  /** alone and before: their own users. */
  users?: User[];
}

/** Around a measured stretch: a CPU profile, a GC watch, a thread sampler, a timeline. */
export interface Hooks {
  start?(): Promise<void>;
  stop?(): Promise<void>;
}

/** The `p`th percentile of ascending `sorted`, or null when it is empty. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? null;
}

export interface CpuUsed {
  runtime: number;
  runtimeSystem: number;
  proxy: number;
  client: number;
}

/** CPU seconds of the server's runtime and proxy workerd and of this client, between two calls. */
export function cpuMeter(server: Server): () => CpuUsed {
  const { runtime, proxy } = server.workerdProcesses();
  const read = () => ({
    runtime: cpuSeconds(runtime),
    runtimeSystem: cpuSeconds(runtime, "system"),
    proxy: cpuSeconds(proxy),
    client: process.cpuUsage(),
  });
  const start = read();
  return () => {
    const end = read();
    // A process that is gone (or never was) counts as no CPU.
    const delta = (a: number | null, b: number | null) => (a ?? 0) - (b ?? 0);
    return {
      runtime: delta(end.runtime, start.runtime),
      runtimeSystem: delta(end.runtimeSystem, start.runtimeSystem),
      proxy: delta(end.proxy, start.proxy),
      client: (end.client.user + end.client.system - start.client.user - start.client.system) / 1e6,
    };
  };
}

async function openRoom(target: Target, devices: User[], opts: AppRoomOptions): Promise<Room> {
  if (target.kind === "app" || target.kind === "before") return openAppRoom(target.server, devices, { ...opts, kind: target.kind });
  if (target.kind === "alone") return openAppRoom(target.server, devices, { ...opts, userSockets: target.userSockets ?? false, kind: "alone" });
  if (target.kind === "relay") return openRelayRoom(target.server, devices.length);
  if (target.kind === "store") return openBaselineRoom(target.server, devices.length, "store");
  return openBaselineRoom(target.server, devices.length);
}

// --- S1: latency at offered loads ---------------------------------------------------------------

/**
 * One conversation, `devices.length` devices, device 0 sends at each offered rate: a warm-up,
 * then a measured window. Latency is one-way, send call to arrival at each receiver (one clock:
 * all clients live in this process).
 */
export interface S1Options {
  rates: number[];
  warmupMs: number;
  windowMs: number;
  receiptMs: number;
  /** Hooks around each rate. */
  profile?: (rate: number) => Hooks | undefined;
}

/** A run of messages sent close together that all arrived late somewhere. */
export interface Stall {
  at: number;
  lastSentAt: number;
  messages: number;
  maxMs: number;
}

export async function s1(target: Target, devices: User[], { rates, warmupMs, windowMs, receiptMs, profile }: S1Options) {
  const room = await openRoom(target, devices, { receiptMs });
  const receivers = room.size - 1;
  const results = [];
  let n = 0;
  try {
    for (const rate of rates) {
      let measuredFrom = Infinity;
      let measuredTo = Infinity;
      let windowStart = Infinity;
      let windowEnd = Infinity;
      const latencies: number[] = [];
      // Per measured message: when it was sent and its worst latency at any receiver (for stalls).
      const worst = new Map<number, { sentAt: number; latency: number }>();
      // One-way latency to the other devices' user sockets: the fan-out's relay (app and relay rooms).
      const relayLatencies: number[] = [];
      let deliveredInWindow = 0;
      let deliveredMeasured = 0;
      room.handler = {
        ack() {},
        deliver(_i, _sender, msgN, sentAt, at) {
          if (at >= windowStart && at < windowEnd) deliveredInWindow++;
          if (msgN >= measuredFrom && msgN < measuredTo) {
            deliveredMeasured++;
            latencies.push(at - sentAt);
            const w = worst.get(msgN);
            if (!w) worst.set(msgN, { sentAt, latency: at - sentAt });
            else if (at - sentAt > w.latency) w.latency = at - sentAt;
          }
        },
        relayed(_i, _sender, msgN, sentAt, at) {
          if (msgN >= measuredFrom && msgN < measuredTo) relayLatencies.push(at - sentAt);
        },
      };
      const hooks = profile?.(rate);
      await hooks?.start?.();
      const cpu = cpuMeter(target.server);
      const start = now();
      let sent = 0;
      const total = Math.round(((warmupMs + windowMs) / 1000) * rate);
      const warm = Math.round((warmupMs / 1000) * rate);
      await new Promise<void>((resolve) => {
        const tick = () => {
          const due = Math.min(total, Math.floor(((now() - start) / 1000) * rate) + 1);
          while (sent < due) {
            if (sent === warm) {
              measuredFrom = n;
              windowStart = now();
              windowEnd = windowStart + windowMs;
            }
            room.send(0, n++);
            sent++;
          }
          if (sent >= total) {
            measuredTo = n;
            clearInterval(timer);
            resolve();
          }
        };
        const timer = setInterval(tick, 2);
      });
      const expected = (measuredTo - measuredFrom) * receivers;
      const drainDeadline = now() + 5_000;
      while ((deliveredMeasured < expected || !room.fanoutCaughtUp()) && now() < drainDeadline) await sleep(20);
      // The app's outbox and fan-out of these messages count too: wait for them (bounded).
      const quiet = await waitQuiet(target.server, [room], 30_000);
      const used = cpu();
      await hooks?.stop?.();
      latencies.sort((a, b) => a - b);
      relayLatencies.sort((a, b) => a - b);
      const stalls = stallsOf(worst);
      results.push({
        rate,
        sent: measuredTo - measuredFrom,
        deliveredPerSec: deliveredInWindow / receivers / (windowMs / 1000),
        p50: percentile(latencies, 50),
        p95: percentile(latencies, 95),
        p99: percentile(latencies, 99),
        max: latencies.length ? latencies[latencies.length - 1] : null,
        loss: expected > 0 ? 1 - deliveredMeasured / expected : 0,
        // Stalls: p99 over 5 s at 500 msg/s is 25 messages, so one pause of the runtime that
        // delays 25 messages decides it. Each stall is a run of messages sent close together
        // that all arrived late somewhere; `longestStall` is how many messages the worst one held.
        stalls,
        longestStall: Math.max(0, ...stalls.map((st) => st.messages)),
        windowStart,
        relayP50: percentile(relayLatencies, 50),
        relayP99: percentile(relayLatencies, 99),
        cpu: used,
        // All the runtime did for this rate (warm-up and window), outbox and fan-out included.
        cpuMsPerMessage: (used.runtime * 1000) / total,
        quietSeconds: quiet,
      });
      await sleep(300);
    }
    const quietSeconds = await waitQuiet(target.server, [room]);
    return { rates: results, errors: room.errors, firstError: room.firstError, closedEarly: room.closedEarly, quietSeconds };
  } finally {
    await room.close();
  }
}

/** A message counts as stalled at STALL_MS or more; stalled messages sent within STALL_GAP_MS of each other are one stall. */
export const STALL_MS = 15;
const STALL_GAP_MS = 30;

/**
 * The stalls among measured messages ({ sentAt, latency } by message): when the first and last of
 * each were sent, how many messages, its worst latency.
 */
function stallsOf(worst: Map<number, { sentAt: number; latency: number }>): Stall[] {
  const late = [...worst.values()].filter((m) => m.latency >= STALL_MS).sort((a, b) => a.sentAt - b.sentAt);
  const stalls: Stall[] = [];
  for (const m of late) {
    const last = stalls.at(-1);
    if (last && m.sentAt - last.lastSentAt < STALL_GAP_MS) {
      last.messages++;
      last.lastSentAt = m.sentAt;
      last.maxMs = Math.max(last.maxMs, m.latency);
    } else {
      stalls.push({ at: m.sentAt, lastSentAt: m.sentAt, messages: 1, maxMs: m.latency });
    }
  }
  return stalls;
}

// --- S2 and S3: throughput with a bounded window of unacked messages ------------------------------

/**
 * `rooms` rooms of `perRoom` devices; in each, the devices listed by `senders(room)` keep `window`
 * messages unacked until the time is up. Counts what arrives inside the measured window.
 */
export interface WindowOptions {
  window: number;
  warmupMs: number;
  durationMs: number;
  receiptMs: number;
  hooks?: Hooks | undefined;
}

async function windowed(
  target: Target,
  roomDevices: User[][],
  {
    senders,
    window,
    warmupMs,
    durationMs,
    receiptMs,
    hooks,
    conversationId = null,
    ciphertexts = null,
  }: WindowOptions & { senders: (room: Room) => number[]; conversationId?: string | null; ciphertexts?: string[] | null },
) {
  const rooms = await Promise.all(roomDevices.map((devices) => openRoom(target, devices, { receiptMs, conversationId, ciphertexts })));
  let windowStart = Infinity;
  let windowEnd = Infinity;
  let sendUntil = Infinity;
  let acked = 0;
  let delivered = 0;
  let receivers = 0;
  const ackLatencies: number[] = [];
  // Acks per 500 ms from the first send: shows a slow start, stalls, or a steady rate.
  const timeline: number[] = [];
  let t0 = now();
  // How each room starts sending.
  const starts: (() => void)[] = [];
  try {
    for (const room of rooms) {
      const sending = senders(room);
      receivers += room.size - 1;
      const next = new Array<number>(room.size).fill(0);
      const sendNext = (i: number) => room.send(i, (next[i] = (next[i] ?? 0) + 1) - 1);
      room.handler = {
        ack(i, _n, sentAt, at) {
          const bucket = Math.floor((at - t0) / 500);
          timeline[bucket] = (timeline[bucket] ?? 0) + 1;
          if (at >= windowStart && at < windowEnd) {
            acked++;
            if (ackLatencies.length < 200_000) ackLatencies.push(at - sentAt);
          }
          if (at < sendUntil) sendNext(i);
        },
        deliver(_i, _sender, _n, _sentAt, at) {
          if (at >= windowStart && at < windowEnd) delivered++;
        },
      };
      starts.push(() => {
        for (const i of sending) for (let k = 0; k < window; k++) sendNext(i);
      });
    }
    // The inspector only answers while the isolate has a moment to spare: start profiling first.
    await hooks?.start?.();
    t0 = now();
    sendUntil = t0 + warmupMs + durationMs;
    const cpuAll = cpuMeter(target.server);
    for (const start of starts) start();
    await sleep(warmupMs);
    const cpu = cpuMeter(target.server);
    windowStart = now();
    windowEnd = windowStart + durationMs;
    await sleep(durationMs);
    const used = cpu();
    await hooks?.stop?.();
    // Let the last acks land (bounded), then wait for the app's outbox and fan-out to catch up.
    await sleep(1_000);
    const quietSeconds = await waitQuiet(target.server, rooms);
    // Everything the runtime did for every message sent, the outbox and fan-out included: a
    // number that noise on a shared machine moves far less than a rate.
    const usedAll = cpuAll();
    const sentAll = rooms.reduce((a, r) => a + r.sentBy.reduce((x, y) => x + y, 0), 0);
    ackLatencies.sort((a, b) => a - b);
    const seconds = durationMs / 1000;
    const senderCount = rooms.reduce((a, r) => a + senders(r).length, 0);
    return {
      ackedPerSec: acked / seconds,
      // Per receiver: the rate each receiving device saw (deliveries/s divided by receivers).
      deliveredPerSec: delivered / (receivers / rooms.length) / rooms.length / seconds,
      deliveriesPerSec: delivered / seconds,
      ackP50: percentile(ackLatencies, 50),
      ackP99: percentile(ackLatencies, 99),
      senders: senderCount,
      errors: rooms.reduce((a, r) => a + r.errors, 0),
      firstError: rooms.find((r) => r.firstError)?.firstError ?? null,
      closedEarly: rooms.reduce((a, r) => a + r.closedEarly, 0),
      receipts: rooms.reduce((a, r) => a + r.receiptsSent, 0),
      quietSeconds,
      cpu: used,
      cpuMsPerMessage: {
        runtime: acked ? (used.runtime * 1000) / acked : null,
        proxy: acked ? (used.proxy * 1000) / acked : null,
        runtimeAll: sentAll ? (usedAll.runtime * 1000) / sentAll : null,
        runtimeAllSystem: sentAll ? (usedAll.runtimeSystem * 1000) / sentAll : null,
      },
      sentAll,
      // E2EE rooms: how many distinct ciphertexts the sender had, and how many it sent.
      ciphertextPool: rooms[0]?.ciphertexts?.length ?? null,
      ciphertextsSent: rooms.reduce((a, r) => a + r.ciphertextsSent, 0),
      ackTimeline: Array.from(timeline, (x) => x ?? 0),
    };
  } finally {
    await Promise.all(rooms.map((r) => r.close()));
  }
}

export function s2(target: Target, devices: User[], o: WindowOptions) {
  return windowed(target, [devices], { ...o, senders: () => [0] });
}

export function s3(target: Target, pairs: User[][], o: WindowOptions) {
  return windowed(target, pairs, { ...o, senders: (room) => room.sockets.map((_, i) => i) });
}

/**
 * Sends up to `quota` messages in `room` as clients send them: each of `senders` keeps `window`
 * unacked and sends the next on each ack, until `quota` are sent or `forMs` has passed. Resolves
 * with the number sent, once all of them are acked; `what` names a stall. Each device numbers its
 * messages on from what it sent before in this room, so a later call never repeats a clientMsgId.
 */
export function sendAcked(room: Room, senders: number[], quota: number, window: number, what: string, forMs = Number.POSITIVE_INFINITY): Promise<number> {
  return new Promise((resolve, reject) => {
    if (quota === 0) return resolve(0);
    const until = now() + forMs;
    let sent = 0;
    let acked = 0;
    const sendOne = (i: number) => {
      if (sent >= quota || now() > until) return;
      sent++;
      room.send(i, room.sentBy[i] ?? 0);
    };
    room.handler = {
      ack(i) {
        acked++;
        sendOne(i);
        if (acked === sent) resolve(sent);
      },
      deliver() {},
    };
    for (let k = 0; k < window; k++) for (const i of senders) sendOne(i);
    setTimeout(() => reject(new Error(`${what}: stalled at ${acked}/${sent} acked`)), 600_000).unref();
  });
}

/**
 * How long seeding sends without a break. Under `wrangler dev` a steady stream of socket messages
 * keeps the runtime's one thread from answering the devices' idle user sockets (their "ping" was
 * answered only once the stream stopped), and a user object counts a device offline once it has
 * not been heard from for PRESENCE_TIMEOUT_MS (60 s). Seeding 100,000 messages in one stream took
 * about 60 s: every member went offline, and each later message queued a push job for each of
 * the nine others (hundreds of thousands of jobs in the local queue, whose consumer then held the
 * runtime for minutes, past 1.8 GB, while D1 and the next scenario waited). A client keeps its
 * sockets live, and so does the bench: it seeds in bouts, and hears from every user socket
 * between them.
 */
const SEED_BOUT_MS = 20_000;

/**
 * Sends `quotas[r]` messages in `rooms[r]` (all rooms at once; see sendAcked), in bouts of at most
 * SEED_BOUT_MS, after each of which every socket of `userSockets` is heard from.
 */
async function seedInBouts(rooms: Room[], userSockets: WebSocket[], quotas: number[], senders: number[], window: number, what: string): Promise<void> {
  const left = [...quotas];
  while (left.some((n) => n > 0)) {
    const sent = await Promise.all(rooms.map((room, r) => sendAcked(room, senders, left[r] ?? 0, window, `${what}: room ${r}`, SEED_BOUT_MS)));
    for (const [r, n] of sent.entries()) left[r] = (left[r] ?? 0) - n;
    await heardFrom(userSockets);
  }
}

// --- S6: what a send costs against the conversation's history ---------------------------------------

/**
 * A group of `devices` holding `total` messages: device 0 sends them with `window` unacked, as S2
 * does, with every device connected; then waits until D1 and the fan-out have all of them.
 * Returns the conversation's id and the seconds it took.
 */
export async function seedHistory(server: Reachable, devices: User[], total: number, { window = 100 } = {}) {
  const room = await openAppRoom(server, devices);
  const started = now();
  try {
    await seedInBouts([room], room.userSockets, [total], [0], window, "S6 seeding");
    const sentSeconds = (now() - started) / 1000;
    const drainSeconds = await waitQuiet(server, [room], 600_000);
    if (drainSeconds === null) throw new Error("S6 seeding: the outbox did not drain to D1 within 10 minutes");
    return { conversationId: room.conversationId, stored: total, sentSeconds, drainSeconds };
  } finally {
    await room.close();
  }
}

/**
 * S2 in the group `conversationId` (its history seeded by seedHistory), or in a fresh group of the
 * same devices when it is null: the same load, so the two differ only in what the log holds.
 */
export function s6(target: Target, devices: User[], conversationId: string | null, o: WindowOptions) {
  return windowed(target, [devices], { ...o, senders: () => [0], conversationId });
}

// --- S7: a send in an E2EE conversation ----------------------------------------------------------

/**
 * S2 in the E2EE group `group` (made by bench/lib/mls.ts: every device added, at epoch 1), whose
 * sender sends its pool of ciphertexts, or in a fresh plaintext group of the same devices when it
 * is null: the same load, so the two differ only in what a message is.
 */
export function s7(target: Target, devices: User[], group: { conversationId: string; ciphertexts: string[] } | null, o: WindowOptions) {
  return windowed(target, [devices], { ...o, senders: () => [0], conversationId: group?.conversationId ?? null, ciphertexts: group?.ciphertexts ?? null });
}

// --- S4: sync through GET /messages?since= ---------------------------------------------------------

/**
 * Stores `total` messages in `pairs.length` conversations of two devices each, the first device of
 * every pair being the syncing user (the same user in every pair), through parallel socket sends
 * with a window, exactly as clients send; then waits until the outbox has put all of them in D1.
 */
export async function seedS4(server: Reachable, syncUser: User, others: User[], total: number, { window = 20 } = {}) {
  const perRoom = Math.ceil(total / others.length);
  const started = now();
  // Every device holds one user socket, as a client does (a device without one counts as
  // offline and each message would queue a push for it); the rooms open conversation sockets only.
  const userSockets = await Promise.all(
    [syncUser, ...others].map((d) =>
      openSocket(`${server.wsBase}/ws`, { headers: { authorization: `Bearer ${d.token}` }, isReady: isReadyFrame, keepalive: true }),
    ),
  );
  const rooms = await Promise.all(others.map((o) => openAppRoom(server, [syncUser, o], { userSockets: false })));
  const quotas = rooms.map((_, i) => Math.max(0, Math.min(perRoom, total - i * perRoom)));
  await seedInBouts(rooms, userSockets, quotas, [0, 1], window, "S4 seeding");
  const sentSeconds = (now() - started) / 1000;
  const quietSeconds = await waitQuiet(server, rooms, 600_000);
  await Promise.all(rooms.map((r) => r.close()));
  await closeAll(userSockets);
  if (quietSeconds === null) throw new Error("S4 seeding: the outbox did not drain to D1 within 10 minutes");
  return { stored: quotas.reduce((a, b) => a + b, 0), conversations: rooms.length, sentSeconds, drainSeconds: quietSeconds };
}

/** Pages GET /messages?since=0 to the end; checks that every message came exactly once. */
/** A page of GET /messages, as far as the bench reads it. */
interface MessagesPage {
  messages: { id: string; body?: string }[];
  cursor: string;
  hasMore: boolean;
}

export async function s4(server: Reachable, syncUser: User, expectedAtLeast: number, { limit = 500, hooks }: { limit?: number; hooks?: Hooks | undefined } = {}) {
  await hooks?.start?.();
  const ids = new Set<string>();
  let since = "0";
  let pages = 0;
  let count = 0;
  const t0 = now();
  for (;;) {
    const page = await api<MessagesPage>(server.base, "GET", `/messages?since=${encodeURIComponent(since)}&limit=${limit}`, { token: syncUser.token });
    pages++;
    for (const m of page.messages) ids.add(m.id);
    count += page.messages.length;
    since = page.cursor;
    if (!page.hasMore) break;
  }
  const seconds = (now() - t0) / 1000;
  await hooks?.stop?.();
  if (ids.size !== count) throw new Error(`S4: ${count - ids.size} messages came twice`);
  if (count < expectedAtLeast) throw new Error(`S4: synced ${count}, expected at least ${expectedAtLeast}`);
  return { messages: count, pages, seconds, perSec: count / seconds };
}

// --- S5: idle hibernating sockets: memory, and everyone reconnecting at once ----------------------

const HIBERNATE_WAIT_MS = 20_000;

/**
 * RSS and live-heap deltas per socket. The proxy's number only means something when the sockets
 * go through it (`viaProxy`); otherwise it is null (the table says it was not measured). The
 * heap's is null without an inspector port. `again`: the runtime's RSS once every socket has
 * been dropped and has reconnected. Dropping the first set gives the runtime's memory back to its
 * allocator, not to the system (RSS stays at its high-water mark), and the reconnected set
 * reuses it, so `again - after` is neither what the sockets keep nor a bound on it, while
 * `after - before` also counts everything the first connect used and freed. `kept`: the RSS once
 * a second set of sockets has connected while the first stays open (`connectKeptOpen`). What the
 * second connect used and freed can reuse what the first one freed, while what the first set's
 * open sockets hold cannot, so `kept - after` per socket is close to what an idle socket keeps
 * (a floor: the second set's own sockets may also reuse memory the first connect freed), as
 * `after - before` is a ceiling. (`again` comes after the second set was closed, so it may reuse
 * that memory too.)
 */
interface Rss {
  runtime: number | null;
  proxy: number | null;
}

interface Memory extends Rss {
  heap: number | null;
}

function perSocket(before: Memory, after: Memory, again: Rss, kept: Rss & { count: number }, total: number, viaProxy: boolean) {
  // As in JavaScript arithmetic, a reading that is missing (null) counts as 0.
  const delta = (a: number | null, b: number | null) => (a ?? 0) - (b ?? 0);
  return {
    runtime: delta(after.runtime, before.runtime) / total,
    proxy: viaProxy ? delta(after.proxy, before.proxy) / total : null,
    heap: before.heap === null ? null : delta(after.heap, before.heap) / total,
    reconnected: delta(again.runtime, after.runtime) / total,
    keptOpen: delta(kept.runtime, after.runtime) / kept.count,
  };
}

/** Opens the first `share` of a scenario's sockets, `concurrency` handshakes at a time. */
type ConnectAll = (concurrency: number, stats: RetryStats, share?: number) => Promise<WebSocket[]>;

/**
 * S5's ConnectAll: `perOwner` sockets for each of the first `share` of `owners` (the whole set by
 * default), each opened by `open` and kept in `sockets`.
 */
function connector<T>(owners: T[], perOwner: number, sockets: WebSocket[], open: (owner: T, stats: RetryStats) => Promise<WebSocket>): ConnectAll {
  return (concurrency, stats, share = 1) =>
    pool(
      owners.slice(0, Math.ceil(owners.length * share)).flatMap((owner) => Array.from({ length: perOwner }, () => owner)),
      concurrency,
      async (owner) => {
        const ws = await open(owner, stats);
        sockets.push(ws);
        return ws;
      },
    );
}

/**
 * Right after the first set connected: connects a second set while the first stays open, reads
 * the RSS once they hibernated, then closes the second set (they are the last of `sockets`). Half
 * as many as the first set: the runtime holds two file descriptors per socket, and two full sets
 * of 5,000 reached this machine's limit of 20,000 (`ulimit -n`).
 */
async function connectKeptOpen(server: Server, connectAll: ConnectAll, stats: RetryStats, sockets: WebSocket[]): Promise<Rss & { count: number }> {
  const first = sockets.length;
  const count = (await connectAll(256, stats, 0.5)).length;
  await settle();
  const rss = server.rss();
  await closeAll(sockets.splice(first));
  return { ...rss, count };
}

function settle(): Promise<void> {
  return sleep(HIBERNATE_WAIT_MS);
}

/**
 * Connects every socket (256 handshakes at a time) between two memory readings, each taken once
 * the objects have had time to hibernate: the runtime's RSS, then (given the runtime's inspector
 * port) its isolate's live heap after a full GC. `connectAll(concurrency, stats)` opens them all.
 */
async function connectMeasured(server: Server, connectAll: ConnectAll, stats: RetryStats, inspector: number | undefined) {
  const memory = async (): Promise<Memory> => {
    const rss = server.rss();
    return { ...rss, heap: inspector ? await liveHeapBytes(inspector) : null };
  };
  await settle();
  const before = await memory();
  const connectStart = now();
  await connectAll(256, stats);
  const connectSeconds = (now() - connectStart) / 1000;
  await settle();
  return { before, after: await memory(), connectSeconds };
}

/**
 * App: `devices` (one per user, in groups created by `poster`), `perDevice` user sockets each.
 * Measures the workerd RSS delta per socket once every object has had time to hibernate, then
 * drops every socket at once, sends `outage` messages per group while they are down, and times
 * how long it takes until every socket is back (`ready`) and every device has synced the missed
 * messages with GET /messages?since=<its cursor>; then checks a live message reaches every socket,
 * and reads the RSS again once the objects have hibernated. Before the drop, a second set of
 * sockets connects and is read while the first stays open (`connectKeptOpen`).
 * All its traffic goes to `via` ({ base, wsBase }: the runtime's entry socket, or the server itself
 * to go through wrangler's proxy). Handshakes reset or refused are retried and counted.
 */
/** Handshake retries of S5's three connects. */
function handshakeRetries(): { connect: RetryStats; resume: RetryStats; kept: RetryStats } {
  return { connect: {}, resume: {}, kept: {} };
}

export interface S5AppOptions {
  devices: User[];
  groups: { conversation: Conversation; members: User[] }[];
  poster: User;
  perDevice: number;
  via?: Reachable;
  inspector?: number;
  tickets?: boolean;
  hooks?: Hooks | undefined;
}

export async function s5App(server: Server, { devices, groups, poster, perDevice, via = server, inspector, tickets = true, hooks }: S5AppOptions) {
  const total = devices.length * perDevice;
  const sockets: WebSocket[] = [];
  // Per socket: how many "live" messages it got.
  const live = new WeakMap<WebSocket, { live: number }>();
  const url = `${via.wsBase}/ws`;
  // As the web client does, each socket first takes a single-use ticket (POST /auth/ticket), so a
  // resume costs a request and a handshake per socket; `tickets: false` sends the bearer token in
  // the handshake instead (--s5-bearer).
  const connection = (d: User): { url: string | (() => Promise<string>); headers: Record<string, string> } =>
    tickets ? { url: ticketUrl(via.base, url, d.token), headers: {} } : { url, headers: { authorization: `Bearer ${d.token}` } };
  const retries = handshakeRetries();
  const connectAll = connector(devices, perDevice, sockets, async (d, stats) => {
    const counter = { live: 0 };
    const { url: socketUrl, headers } = connection(d);
    const ws = await openSocketRetrying(
      socketUrl,
      {
        headers,
        isReady: isReadyFrame,
        timeoutMs: 120_000,
        onFrame: (buf) => {
          if (Buffer.isBuffer(buf) && buf.indexOf('"body":"live') >= 0) counter.live++;
        },
      },
      stats,
    );
    live.set(ws, counter);
    return ws;
  });

  // Cursors: where each device's sync stands before the drop.
  const cursors = new Map<User, string>();
  await pool(devices, 32, async (d) => cursors.set(d, (await syncAll(via, d, "0")).cursor));

  const { before, after, connectSeconds } = await connectMeasured(server, connectAll, retries.connect, inspector);
  // Half the devices then hold twice `perDevice` sockets (the bench raises MAX_SOCKETS_PER_DEVICE).
  const kept = await connectKeptOpen(server, connectAll, retries.kept, sockets);
  const keepAlive = setInterval(() => {
    for (const ws of sockets) if (ws.readyState === 1) ws.send("ping");
  }, KEEPALIVE_MS);

  try {
    // Everyone drops at once (a deploy, a network blip), as abruptly as a dead connection.
    await closeAll(sockets.splice(0), { abrupt: true });
    // While they are away, every group gets messages; they must not be lost.
    const outage = 2;
    const outageFrom = Date.now();
    const missed = new Map<User, number>();
    for (const g of groups) {
      for (let k = 0; k < outage; k++) {
        await api(via.base, "POST", "/send", {
          token: poster.token,
          body: { conversationId: g.conversation.id, clientMsgId: `outage.${g.conversation.id}.${k}.${Date.now()}`, body: `outage ${k}` },
        });
      }
      for (const d of g.members) missed.set(d, outage);
    }
    // Sync reads D1: start the clock once the outbox has put the outage messages there.
    await waitIndexed(via, poster, outageFrom, groups.length * outage);

    await hooks?.start?.();
    const t0 = now();
    const cpu = cpuMeter(server);
    // A sync's request can fail at its connection in the storm of reconnects: it is asked
    // again and counted, as a handshake is (connectAll).
    const syncRetries: RetryStats = {};
    const resumed = await Promise.all([
      connectAll(total, retries.resume),
      pool(devices, 64, async (d) => {
        const { count } = await syncAll(via, d, cursors.get(d) ?? "0", syncRetries);
        if (count !== missed.get(d)) throw new Error(`S5: device synced ${count} messages, expected ${missed.get(d)}`);
        return count;
      }),
    ]);
    const resumeSeconds = (now() - t0) / 1000;
    const resumeCpu = cpu();
    await hooks?.stop?.();
    const synced = resumed[1].reduce((a, b) => a + b, 0);

    // Live traffic reaches every socket again.
    for (const g of groups) {
      await api(via.base, "POST", "/send", {
        token: poster.token,
        body: { conversationId: g.conversation.id, clientMsgId: `live.${g.conversation.id}.${Date.now()}`, body: "live after resume" },
      });
    }
    const deadline = now() + 60_000;
    const received = () => sockets.filter((ws) => (live.get(ws)?.live ?? 0) >= 1).length;
    while (received() < total && now() < deadline) await sleep(100);
    const liveReceived = received();
    await settle();
    return {
      ...s5Readings(server, via, devices.length, { before, after, kept, connectSeconds, resumeSeconds, resumeCpu, retries, total }),
      tickets,
      syncRetries,
      synced,
      syncedExpected: [...missed.values()].reduce((a, b) => a + b, 0),
      liveReceived,
    };
  } finally {
    clearInterval(keepAlive);
    await closeAll(sockets.splice(0));
  }
}

/**
 * What S5 reports on either target, with the runtime's RSS read now (`again`: once every socket
 * dropped and reconnected, and the objects had time to hibernate).
 */
function s5Readings(
  server: Server,
  via: Reachable,
  objects: number,
  r: {
    before: Memory;
    after: Memory;
    kept: Rss & { count: number };
    connectSeconds: number;
    resumeSeconds: number;
    resumeCpu: CpuUsed;
    retries: ReturnType<typeof handshakeRetries>;
    total: number;
  },
) {
  const again = server.rss();
  return {
    sockets: r.total,
    objects,
    viaProxy: via === server,
    memoryPerSocket: perSocket(r.before, r.after, again, r.kept, r.total, via === server),
    rssBefore: r.before,
    rssAfter: r.after,
    rssReconnected: again,
    connectSeconds: r.connectSeconds,
    resumeSeconds: r.resumeSeconds,
    resumeCpu: r.resumeCpu,
    handshakeRetries: r.retries,
  };
}

/**
 * Baseline: the same number of sockets over the same number of rooms; memory (the same readings
 * as the app's) and reconnect time.
 */
export async function s5Baseline(server: Server, { rooms, perRoom, via = server, inspector }: { rooms: number; perRoom: number; via?: Reachable; inspector?: number }) {
  const total = rooms * perRoom;
  const sockets: WebSocket[] = [];
  const names = Array.from({ length: rooms }, (_, r) => `s5r${r}`);
  const retries = handshakeRetries();
  const connectAll = connector(names, perRoom, sockets, (name, stats) => openSocketRetrying(`${via.wsBase}/ws/${name}`, { timeoutMs: 120_000 }, stats));
  const { before, after, connectSeconds } = await connectMeasured(server, connectAll, retries.connect, inspector);
  const kept = await connectKeptOpen(server, connectAll, retries.kept, sockets);
  try {
    await closeAll(sockets.splice(0), { abrupt: true });
    const t0 = now();
    const cpu = cpuMeter(server);
    await connectAll(total, retries.resume);
    const resumeSeconds = (now() - t0) / 1000;
    const resumeCpu = cpu();
    await settle();
    return s5Readings(server, via, rooms, { before, after, kept, connectSeconds, resumeSeconds, resumeCpu, retries, total });
  } finally {
    await closeAll(sockets.splice(0));
  }
}

/**
 * Pages GET /messages from `since` to the end; returns the count and the final cursor. With
 * `stats`, a page whose request fails at its connection is asked for again from the same cursor
 * (`retrying`), as the web client syncs again after a failure, and counted there.
 */
export async function syncAll(server: Reachable, device: User, since: string, stats: RetryStats | null = null): Promise<{ count: number; cursor: string }> {
  let count = 0;
  let cursor = since;
  const get = (path: string) => api<MessagesPage>(server.base, "GET", path, { token: device.token });
  for (;;) {
    const path = `/messages?since=${encodeURIComponent(cursor)}&limit=500`;
    const page = await (stats ? retrying(() => get(path), stats) : get(path));
    count += page.messages.length;
    cursor = page.cursor;
    if (!page.hasMore) return { count, cursor };
  }
}

/** Waits until the poster (a member of every group) can sync at least `n` messages with "outage" bodies. */
async function waitIndexed(server: Reachable, poster: User, fromMs: number, n: number): Promise<void> {
  const deadline = now() + 120_000;
  while (now() < deadline) {
    let count = 0;
    let cursor = String(fromMs);
    for (;;) {
      const page = await api<MessagesPage>(server.base, "GET", `/messages?since=${cursor}&limit=500`, { token: poster.token });
      count += page.messages.filter((m) => m.body?.startsWith("outage")).length;
      cursor = page.cursor;
      if (!page.hasMore) break;
    }
    if (count >= n) return;
    await sleep(200);
  }
  throw new Error("S5: the outage messages did not reach D1 within 2 minutes");
}
