// The conversation's store where the rules do not reach it: unread counts, the senders a
// watermark passed, the cursors of the deferred pass, and the recent-message cache, which must
// answer exactly as SQLite does whatever happened to it.
import { describe, expect, it } from "vitest";
import { ConversationStore, type NewMessage } from "../../../durable-objects/conversation/conversationStore";
import type { Message } from "../../../protocol";
import { memorySql } from "../support/sql";

let ids = 0;

function newStore() {
  const sql = memorySql();
  const store = new ConversationStore(sql);
  store.create({ id: "c1", type: "group", title: "t", e2ee: false, createdAt: 0 });
  for (const userId of ["alice", "bob", "carol"]) store.putMember({ userId, role: "member", joinedAt: 0, joinedSeq: 1 });
  const append = (senderId: string, extra: Partial<NewMessage> = {}): Message =>
    store.append({
      id: `id${++ids}`,
      senderId,
      senderDeviceId: `${senderId}-device`,
      clientMsgId: `cm${ids}`,
      kind: "text",
      body: "hi",
      media: [],
      threadRootSeq: null,
      createdAt: ids,
      ...extra,
    })!;
  /** The same storage as a new wake-up sees it: nothing in memory. */
  const reloaded = () => new ConversationStore(sql);
  return { sql, store, append, reloaded };
}

/** 1 system by alice, 2 bob, 3 alice, 4 carol, 5 bob (a reply to 2), 6 system by bob. */
function sixMessages() {
  const s = newStore();
  s.append("alice", { kind: "system", body: "{}" });
  s.append("bob");
  s.append("alice");
  s.append("carol");
  s.append("bob", { threadRootSeq: 2 });
  s.append("bob", { kind: "system", body: "{}" });
  return s;
}

describe("ConversationStore", () => {
  it("keeps a commit's Welcome once for all the devices it adds, until the last is handed over", () => {
    const { sql, store, reloaded } = newStore();
    const welcome = "W".repeat(1000);
    for (const [i, deviceId] of ["b1", "b2", "c1"].entries()) store.queueWelcome({ id: `w${i}`, seq: 7, userId: deviceId.startsWith("b") ? "bob" : "carol", deviceId, welcome });
    store.queueWelcome({ id: "w3", seq: 9, userId: "bob", deviceId: "b1", welcome: "other" });
    const stored = () => sql.exec<{ n: number }>("SELECT coalesce(sum(length(welcome)), 0) AS n FROM mls_welcome_texts").one().n + sql.exec<{ n: number }>("SELECT coalesce(sum(length(welcome)), 0) AS n FROM mls_welcomes").one().n;
    expect(stored()).toBe(1000 + "other".length);
    expect(reloaded().pendingWelcomes().map((w) => [w.id, w.deviceId, w.welcome])).toEqual([
      ["w0", "b1", welcome],
      ["w1", "b2", welcome],
      ["w2", "c1", welcome],
      ["w3", "b1", "other"],
    ]);
    store.deleteWelcomes(["w0", "w2"]);
    expect(store.pendingWelcomes().map((w) => [w.id, w.welcome])).toEqual([["w1", welcome], ["w3", "other"]]);
    store.deleteWelcomes(["w1"]);
    expect(stored()).toBe("other".length);
    // A row from before the texts were shared still carries its own copy.
    sql.exec("INSERT INTO mls_welcomes (id, seq, user_id, device_id, welcome) VALUES ('old', 3, 'bob', 'b2', 'legacy')");
    expect(store.pendingWelcomes().map((w) => [w.id, w.welcome])).toEqual([["old", "legacy"], ["w3", "other"]]);
  });

  it.each([
    ["alice", 0, 2, 1],
    ["bob", 0, 2, 0],
    ["carol", 0, 2, 1],
    ["alice", 3, 1, 1],
    ["carol", 4, 0, 1],
    ["bob", 5, 0, 0],
    ["bob", 6, 0, 0],
  ])("counts %s's unread above readSeq %i: %i top-level, %i thread replies (others' messages, system messages not)", (userId, readSeq, unread, threadUnread) => {
    const { store, reloaded } = sixMessages();
    expect(store.unreadCounts(userId, readSeq)).toEqual({ unread, threadUnread });
    expect(reloaded().unreadCounts(userId, readSeq)).toEqual({ unread, threadUnread });
  });

  it("counts only up to `through`, and its lastMessage is the latest top-level message up to it", () => {
    const { store } = sixMessages();
    expect(store.unreadCounts("alice", 0, 4)).toEqual({ unread: 2, threadUnread: 0 });
    // 6 is a system message (shown), 5 a reply (not the preview).
    expect(store.lastMessage()?.seq).toBe(6);
    expect(store.lastMessage(5)?.seq).toBe(4);
    expect(store.lastMessage(2)?.seq).toBe(2);
  });

  it.each([
    [0, 6, "alice", ["bob", "carol"]],
    [0, 6, "bob", ["alice", "carol"]],
    [1, 3, "carol", ["alice", "bob"]],
    [2, 3, "carol", ["alice"]],
    [3, 3, "carol", []],
    [0, 1, "bob", []],
    [4, 6, "alice", ["bob"]],
  ])("names the senders in (%i, %i] other than %s, system messages aside: %j", (from, to, except, senders) => {
    const { store } = sixMessages();
    expect(store.sendersBetween(from, to, except).sort()).toEqual(senders);
  });

  it("loads what a wake-up needs from SQLite: meta, lastSeq, members, receipts", () => {
    const { store, reloaded } = sixMessages();
    store.putReceipt({ userId: "bob", deliveredSeq: 5, readSeq: 4, updatedAt: 9 });
    store.deleteMember("carol", 2, 5);
    const again = reloaded();
    expect(again.meta).toEqual(store.meta);
    expect(again.meta).toMatchObject({ lastSeq: 6, lastMessageAt: ids });
    expect([...again.members.keys()].sort()).toEqual(["alice", "bob"]);
    expect(again.formerMember("carol")).toEqual({ userId: "carol", joinedSeq: 1, leftSeq: 2, joinedAt: 0, leftAt: 5 });
    expect(again.members.get("bob")).toEqual({ userId: "bob", role: "member", joinedAt: 0, joinedSeq: 1 });
    expect(again.receipt("bob")).toEqual(store.receipt("bob"));
    expect(again.receipt("carol")).toEqual({ userId: "carol", deliveredSeq: 0, readSeq: 0, updatedAt: 0 });
  });

  it("writes nothing for a duplicate (sender, clientMsgId), and seq stays contiguous", () => {
    const { store, append } = newStore();
    const first = append("bob", { clientMsgId: "same" });
    expect(append("bob", { clientMsgId: "same" })).toBeNull();
    expect(store.findByClientMsgId("bob", "same")).toEqual(first);
    expect(append("alice", { clientMsgId: "same" }).seq).toBe(2);
    expect(store.meta!.lastSeq).toBe(2);
  });

  it("queues each directory change after the messages before it (at_seq)", () => {
    const { store, append } = newStore();
    append("bob");
    append("bob");
    store.putMember({ userId: "dave", role: "member", joinedAt: 1, joinedSeq: 1 });
    append("dave");
    store.putReceipt({ userId: "dave", deliveredSeq: 3, readSeq: 3, updatedAt: 1 });
    append("alice", { threadRootSeq: 1 });
    expect(store.outboxBatch(100).map((r) => [r.kind, r.atSeq])).toEqual([
      ["conversation", 0],
      ["member_put", 0],
      ["member_put", 0],
      ["member_put", 0],
      ["member_put", 2],
      ["receipt", 3],
      ["thread", 4],
    ]);
    expect(store.outboxBatch(2).map((r) => r.kind)).toEqual(["conversation", "member_put"]);
  });

  it("moves the D1 and fan-out cursors only forward, and counts what D1 has yet to get", () => {
    const { store, append } = newStore();
    for (let i = 0; i < 5; i++) append("bob");
    expect(store.outboxSize()).toBe(4 + 5);
    store.setD1Seq(3);
    store.setD1Seq(2);
    store.setFanoutSeq(4);
    store.setFanoutSeq(1);
    expect([store.d1Seq(), store.fanoutSeq()]).toEqual([3, 4]);
    store.deleteOutboxThrough(store.outboxBatch(100).at(-2)!.id);
    expect(store.outboxSize()).toBe(1 + 2);
  });

  it.each<[string, [string, boolean, number][], boolean[]]>([
    ["a start is a change, a refresh is not", [["start", true, 0], ["start", true, 1000]], [true, false]],
    ["a start after the lapse is a change", [["start", true, 0], ["start", true, 6000]], [true, true]],
    ["a stop while typing is a change, a second is not", [["start", true, 0], ["stop", false, 10], ["stop", false, 20]], [true, true, false]],
    // The others were told `on` and, until the alarm runs, not `off`: the stop tells them.
    ["a stop after the lapse, before the alarm ends it, is a change", [["start", true, 0], ["stop", false, 6000]], [true, true]],
  ])("typing: %s", (_, events, changes) => {
    const { store } = newStore();
    const lapse = 6000;
    expect(events.map(([op, , at]) => (op === "start" ? store.startTyping("bob", at + lapse, at) : store.stopTyping("bob")))).toEqual(changes);
  });
});

/** A small deterministic generator, so a failing sequence can be replayed. */
function random(seed: number) {
  let s = seed;
  return (n: number) => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s % n;
  };
}

describe("the recent-message cache", () => {
  /** Pages at every `after` as this store answers them, and as SQLite answers them. */
  function expectPagesAsSqlite(store: ConversationStore, reloaded: () => ConversationStore) {
    const fresh = reloaded();
    const queries: [number, number][] = [[0, 100]];
    for (let after = 0; after <= store.meta!.lastSeq; after += 3) queries.push([after, 1 + (after % 4)]);
    expect(queries.map(([after, limit]) => store.messagesAfter(after, limit))).toEqual(queries.map(([after, limit]) => fresh.messagesAfter(after, limit)));
  }

  it.each([1, 2, 3])("answers as SQLite does through appends, replies and the cursors moving (seed %i)", (seed) => {
    const next = random(seed);
    const { store, append, reloaded } = newStore();
    for (let step = 0; step < 60; step++) {
      const lastSeq = store.meta!.lastSeq;
      const op = next(10);
      if (op < 5 || lastSeq === 0) append(["alice", "bob"][next(2)]!);
      else if (op < 7) {
        // A reply to a message that is not itself a reply.
        const root = 1 + next(lastSeq);
        if (store.getMessage(root)!.threadRootSeq === null) append("carol", { threadRootSeq: root });
      } else if (op === 7) store.setD1Seq(next(lastSeq + 1));
      else if (op === 8) store.setFanoutSeq(next(lastSeq + 1));
      else store.keepRecentFor(next(2) ? "d1" : "fanout", next(2) === 1);
      expectPagesAsSqlite(store, reloaded);
    }
  });

  it("shows a root's new reply count at once, though the root was cached before the reply", () => {
    const { store, append } = newStore();
    const root = append("alice");
    expect(store.messagesAfter(0, 10).messages[0]).toEqual(root);
    append("bob", { threadRootSeq: root.seq });
    expect(store.messagesAfter(0, 10).messages[0]!.thread).toEqual({ replyCount: 1, lastReplySeq: 2, lastReplyAt: ids });
  });

  it("serves a page from memory while it holds it, from SQLite once both cursors passed it", () => {
    const { sql, store, append } = newStore();
    for (let i = 0; i < 4; i++) append("bob");
    // A change behind the store's back shows which answered.
    sql.exec("UPDATE messages SET body = 'on disk'");
    const bodies = () => store.messagesAfter(0, 4).messages.map((m) => m.body);
    expect(bodies()).toEqual(["hi", "hi", "hi", "hi"]);
    store.setD1Seq(2);
    expect(bodies()).toEqual(["hi", "hi", "hi", "hi"]);
    store.setFanoutSeq(2);
    expect(bodies()).toEqual(["on disk", "on disk", "on disk", "on disk"]);
    expect(store.messagesAfter(2, 2).messages.map((m) => m.body)).toEqual(["hi", "hi"]);
    // While D1 waits out a failure the cache keeps only what the fan-out has not passed.
    store.keepRecentFor("d1", false);
    store.setFanoutSeq(3);
    expect(store.messagesAfter(2, 2).messages.map((m) => m.body)).toEqual(["on disk", "on disk"]);
    expect(store.messagesAfter(3, 1).messages.map((m) => m.body)).toEqual(["hi"]);
  });

  it("forgets the oldest messages beyond its byte bound, and answers them from SQLite", () => {
    const { sql, store, append } = newStore();
    const body = "x".repeat(8192);
    // About 16 KiB each against 8 MiB: the first ones no longer fit.
    for (let i = 0; i < 600; i++) append("bob", { body });
    sql.exec("UPDATE messages SET body = 'on disk'");
    expect(store.messagesAfter(0, 1).messages[0]!.body).toBe("on disk");
    expect(store.messagesAfter(599, 1).messages[0]!.body).toBe(body);
  });
});
