// The outbox to D1: what the conversation stored reaches the directory in the order it happened,
// in batches that end only where that order allows, exactly once however D1 fails.
import { describe, expect, it } from "vitest";
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS, MESSAGE_PARAMS, Outbox, backoffDelay } from "../../../durable-objects/conversation/d1Outbox";
import { ConversationHarness, expectOk, identity } from "../support/conversation";
import { memoryD1, type Executed, type MemoryD1 } from "../support/d1";

/** What each statement D1 received writes, in words: `m3`, `member_put:bob`, `receipt:bob`... */
function labels(statement: Executed): string[] {
  const { sql, params } = statement;
  // A member's former span goes with their member_put and member_delete (checked on its own below).
  if (sql.startsWith("INSERT INTO former_members") || sql.startsWith("DELETE FROM former_members")) return [];
  if (sql.startsWith("INSERT OR IGNORE INTO messages")) {
    return Array.from({ length: params.length / MESSAGE_PARAMS }, (_, i) => `m${String(params[i * MESSAGE_PARAMS + 2])}`);
  }
  const kinds: [string, string, number][] = [
    ["INSERT INTO conversations", "conversation", 0],
    ["INSERT INTO members", "member_put", 1],
    ["DELETE FROM members", "member_delete", 1],
    ["UPDATE messages SET reply_count", "thread", 4],
    ["UPDATE members SET delivered_seq", "receipt", 3],
    ["UPDATE conversations SET last_seq", "last_seq", 0],
  ];
  const kind = kinds.find(([prefix]) => sql.startsWith(prefix));
  if (!kind) throw new Error(`unexpected statement: ${sql}`);
  return [kind[1] === "conversation" ? "conversation" : `${kind[1]}:${String(params[kind[2]])}`];
}

/** Each committed batch as its labels, the conversations' last_seq updates left out. */
const batches = (d1: MemoryD1) => d1.batches.map((b) => b.flatMap(labels).filter((l) => !l.startsWith("last_seq")));
const writes = (d1: MemoryD1) => batches(d1).flat();

/** The directory's rows for the conversation, to compare two D1s. */
const directory = (d1: MemoryD1) => ({
  conversations: d1.query("SELECT id, type, title, e2ee, last_seq, last_message_at FROM conversations"),
  members: d1.query("SELECT user_id, role, delivered_seq, read_seq FROM members ORDER BY user_id"),
  messages: d1.query("SELECT seq, sender_id, client_msg_id, kind, thread_root_seq, reply_count, last_reply_seq FROM messages ORDER BY seq"),
});

const member = (user_id: string, role: "admin" | "member", delivered_seq = 0, read_seq = 0) => ({ user_id, role, delivered_seq, read_seq });

/** The last batch D1 got, and the members it then holds. */
const lastBatchAndMembers = (d1: MemoryD1) => ({ batch: batches(d1).at(-1), members: directory(d1).members });

/**
 * A conversation with some history, in this order: created (alice, bob), bob sends 2 and 3,
 * carol is added (4), carol sends 5, carol is removed (6), bob reads 6, bob replies to 2 (7).
 */
function withHistory(batchSize: number) {
  const h = new ConversationHarness();
  h.group("alice", ["bob"]);
  h.sendMany("bob", 2);
  const now = h.clock.now();
  expectOk(h.conversation.addMembers(identity("alice"), ["carol"], now));
  h.sendMany("carol", 1);
  expectOk(h.conversation.removeMember(identity("alice"), "carol", now));
  expectOk(h.read("bob", 6));
  expectOk(h.send("bob", { clientMsgId: "reply", threadRootSeq: 2 }));
  const d1 = memoryD1();
  return { h, d1, outbox: new Outbox(h.store, () => d1.binding, batchSize) };
}

/** alice and bob in a group whose creation D1 already has. */
async function flushedGroup(batchSize: number) {
  const h = new ConversationHarness();
  h.group("alice", ["bob"]);
  const d1 = memoryD1();
  const outbox = new Outbox(h.store, () => d1.binding, batchSize);
  await outbox.flush();
  return { h, d1, outbox };
}

const HISTORY_ORDER = [
  "conversation",
  "member_put:alice",
  "member_put:bob",
  "m1",
  "m2",
  "m3",
  "member_put:carol",
  // carol, added at 4, counts as having read what came before.
  "receipt:carol",
  "m4",
  "m5",
  "member_delete:carol",
  "m6",
  "receipt:bob",
  "m7",
  "thread:2",
];

const HISTORY_DIRECTORY = {
  conversations: [{ id: "c1", type: "group", title: "a group", e2ee: 0, last_seq: 7, last_message_at: expect.any(Number) }],
  members: [member("alice", "admin"), member("bob", "member", 6, 6)],
  messages: [1, 2, 3, 4, 5, 6, 7].map((seq) =>
    expect.objectContaining({ seq, reply_count: seq === 2 ? 1 : 0, thread_root_seq: seq === 7 ? 2 : null }),
  ),
};

describe("Outbox", () => {
  it.each([1, 2, 3, 5, 200])("writes rows and messages in the order they happened, in batches of %i", async (batchSize) => {
    const { h, d1, outbox } = withHistory(batchSize);
    expect(await outbox.flush()).toBe(true);
    expect(writes(d1)).toEqual(HISTORY_ORDER);
    expect(directory(d1)).toEqual(HISTORY_DIRECTORY);
    for (const batch of batches(d1)) {
      expect(batch.filter((l) => !/^m\d/.test(l)).length).toBeLessThanOrEqual(batchSize);
      expect(batch.filter((l) => /^m\d/.test(l)).length).toBeLessThanOrEqual(batchSize);
    }
    expect([h.store.outboxSize(), h.store.d1Seq(), outbox.failures]).toEqual([0, 7, 0]);
  });

  it("makes no call when nothing is queued", async () => {
    const { d1, outbox } = withHistory(200);
    await outbox.flush();
    const calls = d1.calls;
    expect(await outbox.flush()).toBe(true);
    expect(d1.calls).toBe(calls);
    const empty = memoryD1();
    expect(await new Outbox(new ConversationHarness().store, () => empty.binding, 10).flush()).toBe(true);
    expect(empty.calls).toBe(0);
  });

  it.each([
    ["the first batch", 200, 0],
    ["a later batch", 2, 3],
  ])("keeps everything from a failed batch queued (%s), counts failures, then writes it exactly once", async (_, batchSize, before) => {
    const { h, d1, outbox } = withHistory(batchSize);
    d1.failNext(1, before);
    expect(await outbox.flush()).toBe(false);
    expect(outbox.failures).toBe(1);
    expect(d1.batches).toHaveLength(before);
    const written = writes(d1);
    expect(written).toEqual(HISTORY_ORDER.slice(0, written.length));
    expect(h.store.outboxSize()).toBeGreaterThan(0);
    d1.failing();
    expect(await outbox.flush()).toBe(false);
    expect(outbox.failures).toBe(2);
    d1.failing(false);
    expect(await outbox.flush()).toBe(true);
    expect(outbox.failures).toBe(0);
    expect(writes(d1)).toEqual(HISTORY_ORDER);
    expect(directory(d1)).toEqual(HISTORY_DIRECTORY);
  });

  it.each([1, 3, 200])("writes the same directory when D1 applied a batch whose answer was lost (batches of %i)", async (batchSize) => {
    const { h, d1, outbox } = withHistory(batchSize);
    d1.loseNext(1);
    expect(await outbox.flush()).toBe(false);
    expect(await outbox.flush()).toBe(true);
    // The first batch went twice; everything else once.
    expect(writes(d1)).toEqual([...batches(d1)[0]!, ...HISTORY_ORDER]);
    expect(directory(d1)).toEqual(HISTORY_DIRECTORY);
    expect(h.store.outboxSize()).toBe(0);
  });

  it("ends a batch before a row whose messages do not fit, and writes those messages first", async () => {
    const { h, d1, outbox } = await flushedGroup(3);
    h.sendMany("bob", 5);
    expectOk(h.conversation.addMembers(identity("alice"), ["carol"], h.clock.now()));
    await outbox.flush();
    // carol's row follows message 6: the first batch (messages 2 to 4) leaves it for the next.
    expect(batches(d1).slice(1)).toEqual([
      ["m2", "m3", "m4"],
      ["m5", "m6", "member_put:carol", "receipt:carol", "m7"],
    ]);
  });

  it("writes a promoted heir's role and a member who left", async () => {
    const { h, d1, outbox } = await flushedGroup(200);
    expectOk(h.conversation.addMembers(identity("alice"), ["carol"], h.clock.advance(1000)));
    expectOk(h.conversation.removeMember(identity("alice"), "alice", h.clock.now()));
    await outbox.flush();
    expect(lastBatchAndMembers(d1)).toEqual({
      batch: ["member_put:carol", "receipt:carol", "m2", "member_delete:alice", "member_put:bob", "m3"],
      members: [member("bob", "admin"), member("carol", "member", 1, 1)],
    });
  });

  it("writes a former member's span, and ends it when they are added back", async () => {
    const { h, d1, outbox } = await flushedGroup(200);
    h.sendMany("alice", 2);
    expectOk(h.conversation.removeMember(identity("alice"), "bob", h.clock.advance(1000)));
    await outbox.flush();
    const spans = () => d1.query("SELECT user_id, joined_seq, left_seq, left_at FROM former_members");
    const joined = () => d1.query("SELECT user_id, joined_seq FROM members ORDER BY user_id");
    expect(spans()).toEqual([{ user_id: "bob", joined_seq: 1, left_seq: 4, left_at: h.clock.now() }]);
    expect(joined()).toEqual([{ user_id: "alice", joined_seq: 1 }]);
    expectOk(h.conversation.addMembers(identity("alice"), ["bob"], h.clock.advance(1000)));
    await outbox.flush();
    expect(spans()).toEqual([]);
    expect(joined()).toEqual([
      { user_id: "alice", joined_seq: 1 },
      { user_id: "bob", joined_seq: 5 },
    ]);
  });

  it("collapses a member's receipts in one batch to the last, which says all", async () => {
    const { h, d1, outbox } = await flushedGroup(200);
    h.sendMany("alice", 5);
    await outbox.flush();
    for (const [user, type, seq] of [
      ["bob", "delivered", 2],
      ["alice", "read", 3],
      ["bob", "read", 3],
      ["bob", "delivered", 6],
      ["bob", "read", 4],
    ] as const) {
      expectOk(type === "read" ? h.read(user, seq) : h.delivered(user, seq));
    }
    await outbox.flush();
    expect(lastBatchAndMembers(d1)).toEqual({
      batch: ["receipt:alice", "receipt:bob"],
      members: [member("alice", "admin", 3, 3), member("bob", "member", 6, 4)],
    });
  });

  it("binds at most 100 parameters a statement (D1's limit)", async () => {
    const { h, d1, outbox } = await flushedGroup(200);
    h.sendMany("bob", 40);
    await outbox.flush();
    expect(d1.batches.flat().every((s) => s.params.length <= 100)).toBe(true);
    expect(batches(d1).at(-1)!).toHaveLength(40);
  });

  it("runs one flush at a time: two at once write each message once", async () => {
    const { d1, outbox } = withHistory(2);
    expect(await Promise.all([outbox.flush(), outbox.flush()])).toEqual([true, true]);
    expect(writes(d1)).toEqual(HISTORY_ORDER);
  });

  it.each([
    [false, 3],
    [true, 4],
  ])("untilEmpty %s: a message stored during the write is written by the same flush only when asked (d1Seq %i)", async (untilEmpty, d1Seq) => {
    const { h, d1, outbox } = await flushedGroup(3);
    h.sendMany("bob", 2);
    d1.beforeBatch = () => {
      d1.beforeBatch = null;
      h.sendMany("bob", 1, "during");
    };
    expect(await outbox.flush(untilEmpty)).toBe(true);
    expect(h.store.d1Seq()).toBe(d1Seq);
  });

  it("writes a message row queued before messages were fed from the log", async () => {
    const { h, d1, outbox } = await flushedGroup(200);
    d1.db.exec("DELETE FROM messages");
    h.store.queueForD1({ kind: "message", payload: { ...h.store.getMessage(1)!, clientMsgId: "legacy" } });
    await outbox.flush();
    expect(batches(d1).at(-1)).toEqual(["m1"]);
    expect(directory(d1).messages).toEqual([expect.objectContaining({ seq: 1, client_msg_id: "legacy" })]);
  });
});

describe("backoffDelay", () => {
  it.each([0, 1, 2, 5, 7, 16, 17, 100])("after %i failures waits between half and all of min(max, base * 2^n)", (failures) => {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** failures);
    expect(backoffDelay(failures, 0)).toBe(ceiling / 2);
    expect(backoffDelay(failures, 1)).toBe(ceiling);
    const middle = backoffDelay(failures, 0.5);
    expect(middle).toBeGreaterThan(ceiling / 2);
    expect(middle).toBeLessThan(ceiling);
    expect(backoffDelay(failures)).toBeLessThanOrEqual(BACKOFF_MAX_MS);
  });

  it("grows with each failure until the cap", () => {
    const delays = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, 1));
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
  });
});
