// The deferred pass over a real conversation store (SQLite in memory): D1 first, then the fan-out,
// each with its own backoff when it fails, and nothing lost.
import { afterEach, describe, expect, it } from "vitest";
import { ConversationStore } from "../../../durable-objects/conversation/conversationStore";
import { Outbox, type D1Writer } from "../../../durable-objects/conversation/d1Outbox";
import { DeferredPass, DEFERRED_BACKSTOP_MS } from "../../../durable-objects/conversation/deferredPass";
import { Fanout } from "../../../durable-objects/conversation/fanout";
import type { InboxEvent } from "../../../durable-objects/contract";
import { memorySql } from "../support/sql";

/** A D1 that records each batch's statements, or fails while `down`. */
function recordingD1() {
  const d1 = { down: false, batches: [] as string[][] };
  const writer: D1Writer = {
    prepare: (query: string) => ({ bind: () => ({ query }) }) as unknown as D1PreparedStatement,
    batch: async (statements: D1PreparedStatement[]) => {
      if (d1.down) throw new Error("D1_ERROR: injected outage");
      d1.batches.push(statements.map((s) => (s as unknown as { query: string }).query.split(" (")[0]!));
      return [];
    },
  };
  return { d1, writer };
}

const closers: Array<() => void> = [];
afterEach(() => closers.splice(0).forEach((close) => close()));

function setup() {
  const sql = memorySql();
  closers.push(() => sql.close());
  const store = new ConversationStore(sql);
  store.create({ id: "c1", type: "direct", title: null, e2ee: false, createdAt: 1 });
  for (const userId of ["a", "b"]) store.putMember({ userId, role: "member", joinedAt: 1, joinedSeq: 1 });
  const { d1, writer } = recordingD1();
  const delivered: Array<{ userId: string; events: InboxEvent[] }> = [];
  const users = { reachable: true };
  const fanout = new Fanout(
    store,
    (userId) => ({
      deliver: async (_userId, events) => {
        if (!users.reachable) throw new Error("user object unreachable");
        delivered.push({ userId, events });
        return null;
      },
    }),
    { sendBatch: async () => ({}) as QueueSendBatchResponse },
    50,
    () => new Map(),
  );
  const outbox = new Outbox(store, () => writer, 100);
  const wakes: number[] = [];
  let now = 10_000;
  const pass = new DeferredPass({
    store,
    outbox,
    fanout,
    settings: { batchDelayMs: 25 },
    wakeAt: (at) => void wakes.push(at),
    now: () => now,
    timers: { setTimeout: () => 0, clearTimeout: () => {} },
  });
  const append = (n: number) =>
    store.append({
      id: `m${n}`,
      senderId: "a",
      senderDeviceId: "da",
      clientMsgId: `c${n}`,
      kind: "text",
      body: `hello ${n}`,
      media: [],
      threadRootSeq: null,
      createdAt: now,
    });
  return { store, d1, users, delivered, pass, wakes, append, advance: (ms: number) => (now += ms), now: () => now };
}

const seqsTo = (delivered: Array<{ userId: string; events: InboxEvent[] }>, userId: string) =>
  delivered
    .filter((d) => d.userId === userId)
    .flatMap((d) => d.events)
    .flatMap((e) => (e.type === "message" ? [e.message.seq] : []));

describe("DeferredPass", () => {
  it("asks for the alarm as a backstop when a write defers, and writes D1 before telling the members", async () => {
    const t = setup();
    t.append(1);
    t.pass.defer();
    expect(t.wakes).toEqual([t.now() + DEFERRED_BACKSTOP_MS]);
    await t.pass.run();
    expect(t.d1.batches.flat()).toContain("INSERT OR IGNORE INTO messages");
    expect(seqsTo(t.delivered, "b")).toEqual([1]);
    expect(t.store.outboxSize()).toBe(0);
    expect(t.pass.nextRetry(t.now())).toBeNull();
  });

  it("goes on with the fan-out while D1 is down, retries D1 after its backoff, and writes each message once", async () => {
    const t = setup();
    t.d1.down = true;
    t.append(1);
    await t.pass.run();
    expect(seqsTo(t.delivered, "b")).toEqual([1]);
    const retryAt = t.pass.nextRetry(t.now());
    expect(retryAt).toBeGreaterThan(t.now());
    expect(t.wakes).toContain(retryAt);

    // Before the backoff has run out, a pass does not try D1 again.
    t.append(2);
    t.d1.down = false;
    await t.pass.run();
    expect(t.d1.batches).toEqual([]);
    expect(seqsTo(t.delivered, "b")).toEqual([1, 2]);

    t.advance(60_000);
    await t.pass.run();
    expect(t.d1.batches.flat().filter((q) => q === "INSERT OR IGNORE INTO messages")).toHaveLength(1);
    expect(t.store.d1Seq()).toBe(2);
  });

  it("keeps the fan-out's cursor where the members were last reached, and catches up after its backoff", async () => {
    const t = setup();
    t.users.reachable = false;
    t.append(1);
    await t.pass.run();
    expect(t.store.fanoutSeq()).toBe(0);
    expect(t.pass.nextRetry(t.now())).not.toBeNull();
    t.users.reachable = true;
    t.pass.retryNow();
    t.append(2);
    await t.pass.run();
    expect(seqsTo(t.delivered, "b")).toEqual([1, 2]);
    expect(t.store.fanoutSeq()).toBe(2);
  });

  it("flushNow writes to D1 at once, but adds no attempt while D1's backoff runs", async () => {
    const t = setup();
    t.d1.down = true;
    await t.pass.flushNow();
    const failedBatches = t.d1.batches.length;
    t.d1.down = false;
    await t.pass.flushNow();
    expect(t.d1.batches.length).toBe(failedBatches);
    t.advance(60_000);
    await t.pass.flushNow();
    expect(t.d1.batches.length).toBe(failedBatches + 1);
    expect(t.store.outboxSize()).toBe(0);
  });

  it("settleNow also tells the members' objects before it returns, and keeps the fan-out's backoff", async () => {
    const t = setup();
    t.append(1);
    await t.pass.settleNow();
    expect(t.store.fanoutSeq()).toBe(1);
    expect(seqsTo(t.delivered, "b")).toEqual([1]);
    // While the members' objects fail, one attempt, then none until its backoff ran out.
    t.users.reachable = false;
    t.append(2);
    await t.pass.settleNow();
    await t.pass.settleNow();
    expect(t.store.fanoutSeq()).toBe(1);
    t.users.reachable = true;
    await t.pass.settleNow();
    expect(t.store.fanoutSeq()).toBe(1);
    t.advance(60_000);
    await t.pass.settleNow();
    expect(seqsTo(t.delivered, "b")).toEqual([1, 2]);
  });
});
