// The web client's state logic, without a browser: the offline outbox (behind its storage
// interface, here in memory), ordering and merging by seq, gap detection, sync paging, ticks and
// timeline grouping. Plain modules, run in Node by the unit suite.
import { describe, expect, it } from "vitest";
import type { Message } from "../../protocol";
import { MemoryOutboxStorage, Outbox, type OutboxItem, type SendOutcome } from "../src/state/offlineOutbox";
import { applyReceipt, tickFor, tickLabel } from "../src/state/receipts";
import { byConversation, syncSince, type SincePage } from "../src/state/sync";
import { buildTimeline, findGaps, mergeMessages, opensGap, resumePoint } from "../src/state/timeline";
import { initials, lastActive, lastSeen, peaks, shownUserName } from "../src/state/format";
import { message } from "./fakes";

const msg = (seq: number, extra: Partial<Message> = {}): Message => message("c1", seq, "u1", extra);

/** A transport that answers from a script, records every attempt, and acts like the server's dedup. */
class ScriptedServer {
  readonly attempts: string[] = [];
  readonly stored = new Map<string, Message>();
  script: Array<"ok" | "offline" | "refuse" | "429"> = [];
  private seq = 0;

  async deliver(item: OutboxItem): Promise<SendOutcome> {
    this.attempts.push(item.clientMsgId);
    const step = this.script.shift() ?? "ok";
    if (step === "offline") return { ok: false, retry: true, error: "offline" };
    if (step === "429") return { ok: false, retry: true, error: "rate limited", retryAfterMs: 2000 };
    if (step === "refuse") return { ok: false, retry: false, error: "body too long" };
    const existing = this.stored.get(item.clientMsgId);
    if (existing) return { ok: true, message: existing };
    const created = msg(++this.seq, { clientMsgId: item.clientMsgId, body: item.body ?? null, conversationId: item.conversationId });
    this.stored.set(item.clientMsgId, created);
    return { ok: true, message: created };
  }
}

function setup(options: { storage?: MemoryOutboxStorage; server?: ScriptedServer } = {}) {
  let now = 10_000;
  let ids = 0;
  const storage = options.storage ?? new MemoryOutboxStorage();
  const server = options.server ?? new ScriptedServer();
  const sent: Message[] = [];
  const outbox = new Outbox(storage, server, {
    now: () => now,
    newId: () => `cm${++ids}`,
    backoff: (n) => 1000 * n,
    onSent: (_item, message) => sent.push(message),
  });
  return { outbox, storage, server, sent, advance: (ms: number) => (now += ms), now: () => now };
}

describe("outbox", () => {
  it("stores a message before sending, sends it once and forgets it", async () => {
    const { outbox, storage, server, sent } = setup();
    const item = await outbox.add({ conversationId: "c1", body: "hello" });
    expect(storage.rows.get(item.clientMsgId)?.status).toBe("pending");
    await outbox.flush();
    expect(server.attempts).toEqual([item.clientMsgId]);
    expect(sent.map((m) => m.body)).toEqual(["hello"]);
    expect(outbox.list()).toEqual([]);
    expect(storage.rows.size).toBe(0);
  });

  it("keeps messages written offline pending, then sends each once with its first clientMsgId", async () => {
    const { outbox, server, advance, sent } = setup();
    server.script = ["offline"];
    const a = await outbox.add({ conversationId: "c1", body: "one" });
    await outbox.add({ conversationId: "c1", body: "two" });
    await outbox.flush();
    // The first failed; the second waits behind it so the other side never sees them reordered.
    expect(server.attempts).toEqual([a.clientMsgId]);
    expect(outbox.list().map((i) => [i.body, i.status])).toEqual([["one", "pending"], ["two", "pending"]]);
    expect(outbox.nextAttemptAt()).toBe(11_000);
    await outbox.flush();
    expect(server.attempts).toHaveLength(1); // still backing off
    advance(1000);
    await outbox.flush();
    expect(sent.map((m) => m.body)).toEqual(["one", "two"]);
    expect(server.attempts.filter((id) => id === a.clientMsgId)).toHaveLength(2);
    expect(server.stored.size).toBe(2);
  });

  it("comes back online: resetBackoff makes waiting items due at once", async () => {
    const { outbox, server, sent } = setup();
    server.script = ["offline"];
    await outbox.add({ conversationId: "c1", body: "x" });
    await outbox.flush();
    expect(sent).toHaveLength(0);
    await outbox.resetBackoff();
    await outbox.flush();
    expect(sent.map((m) => m.body)).toEqual(["x"]);
  });

  it("a resend after a lost answer returns the stored message: delivered exactly once", async () => {
    const storage = new MemoryOutboxStorage();
    const server = new ScriptedServer();
    const first = setup({ storage, server });
    const item = await first.outbox.add({ conversationId: "c1", body: "once" });
    // The page dies mid-send: the server stored it, the row still says "sending".
    await server.deliver({ ...item, status: "sending" });
    await storage.put({ ...item, status: "sending", attempts: 1 });
    const second = setup({ storage, server });
    await second.outbox.load();
    expect(second.outbox.list()[0]?.status).toBe("pending");
    await second.outbox.flush();
    expect(server.stored.size).toBe(1);
    expect(second.sent.map((m) => m.clientMsgId)).toEqual([item.clientMsgId]);
    expect(storage.rows.size).toBe(0);
  });

  it("a refused message is failed, does not block the next, and can be retried with the same id", async () => {
    const { outbox, server, sent } = setup();
    server.script = ["refuse"];
    const bad = await outbox.add({ conversationId: "c1", body: "bad" });
    await outbox.add({ conversationId: "c1", body: "good" });
    await outbox.flush();
    expect(outbox.get(bad.clientMsgId)?.status).toBe("failed");
    expect(outbox.get(bad.clientMsgId)?.error).toBe("body too long");
    expect(sent.map((m) => m.body)).toEqual(["good"]);
    await outbox.retry(bad.clientMsgId);
    expect(outbox.get(bad.clientMsgId)?.status).toBe("pending");
    await outbox.flush();
    expect(sent.map((m) => m.clientMsgId)).toContain(bad.clientMsgId);
    expect(outbox.list()).toEqual([]);
  });

  it("discard drops a failed message without sending", async () => {
    const { outbox, server } = setup();
    server.script = ["refuse"];
    const item = await outbox.add({ conversationId: "c1", body: "nope" });
    await outbox.flush();
    await outbox.discard(item.clientMsgId);
    await outbox.flush();
    expect(server.attempts).toHaveLength(1);
    expect(outbox.list()).toEqual([]);
  });

  it("honours Retry-After on 429, and one blocked conversation does not hold up another", async () => {
    const { outbox, server, sent, advance } = setup();
    server.script = ["429"];
    await outbox.add({ conversationId: "c1", body: "a" });
    await outbox.add({ conversationId: "c2", body: "b" });
    await outbox.flush();
    expect(sent.map((m) => m.body)).toEqual(["b"]);
    expect(outbox.nextAttemptAt()).toBe(12_000);
    advance(2000);
    await outbox.flush();
    expect(sent.map((m) => m.body)).toEqual(["b", "a"]);
  });

  it("concurrent flushes never send an item twice at once", async () => {
    const { outbox, server } = setup();
    for (let i = 0; i < 5; i++) await outbox.add({ conversationId: "c1", body: `m${i}` });
    await Promise.all([outbox.flush(), outbox.flush(), outbox.flush()]);
    expect(server.attempts).toHaveLength(5);
    expect(new Set(server.attempts).size).toBe(5);
  });

  it("an item enqueued during a flush is sent by that flush's rerun", async () => {
    const { outbox, server } = setup();
    await outbox.add({ conversationId: "c1", body: "first" });
    const running = outbox.flush();
    await outbox.add({ conversationId: "c1", body: "second" });
    const again = outbox.flush();
    await running;
    await again;
    expect(server.attempts).toHaveLength(2);
  });
});

describe("ordering and merging by seq", () => {
  it("appends newer messages and sorts older ones in", () => {
    const a = mergeMessages([msg(3), msg(4)], [msg(5), msg(6)]);
    expect(a.map((m) => m.seq)).toEqual([3, 4, 5, 6]);
    const b = mergeMessages(a, [msg(1), msg(2)]);
    expect(b.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it("a message seen twice (ack, socket, sync) is kept once; the later copy wins", () => {
    const merged = mergeMessages([msg(1), msg(2)], [msg(2, { body: "edited" }), msg(2), msg(3)]);
    expect(merged.map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(merged[1]?.body).toBe("message 2");
  });

  it("out-of-order arrival ends up in seq order", () => {
    let list: Message[] = [];
    for (const seq of [5, 2, 9, 1, 3, 4, 8, 6, 7]) list = mergeMessages(list, [msg(seq)]);
    expect(list.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("a new thread reply bumps its root's summary once", () => {
    const root = msg(1);
    let list = mergeMessages([], [root]);
    list = mergeMessages(list, [msg(2, { threadRootSeq: 1, createdAt: 5000 })]);
    expect(list[0]?.thread).toEqual({ replyCount: 1, lastReplySeq: 2, lastReplyAt: 5000 });
    list = mergeMessages(list, [msg(2, { threadRootSeq: 1 })]);
    expect(list[0]?.thread?.replyCount).toBe(1);
    // A root fetched later already counts the reply.
    const fresh = mergeMessages([msg(1, { thread: { replyCount: 1, lastReplySeq: 2, lastReplyAt: 5000 } })], [msg(2, { threadRootSeq: 1 })]);
    expect(fresh[0]?.thread?.replyCount).toBe(1);
  });
});

describe("gap detection", () => {
  it("finds missing ranges", () => {
    expect(findGaps([msg(1), msg(2), msg(5), msg(6), msg(9)])).toEqual([[3, 4], [7, 8]]);
    expect(findGaps([msg(1), msg(2), msg(3)])).toEqual([]);
    expect(findGaps([])).toEqual([]);
  });

  it("resumes after the contiguous prefix", () => {
    expect(resumePoint([])).toBe(0);
    expect(resumePoint([msg(4), msg(5), msg(6)])).toBe(6);
    expect(resumePoint([msg(4), msg(5), msg(8)])).toBe(5);
  });

  it("a live message that skips seqs opens a gap; the next one does not", () => {
    expect(opensGap([msg(1), msg(2)], 3)).toBe(false);
    expect(opensGap([msg(1), msg(2)], 2)).toBe(false);
    expect(opensGap([msg(1), msg(2)], 5)).toBe(true);
    expect(opensGap([], 7)).toBe(false);
  });
});

describe("sync since", () => {
  it("pages until hasMore is false and returns the last cursor", async () => {
    const pages: Record<string, SincePage> = {
      "0": { messages: [msg(1), msg(2)], cursor: "c2", hasMore: true },
      c2: { messages: [msg(3)], cursor: "c3", hasMore: true },
      c3: { messages: [], cursor: "c3", hasMore: false },
    };
    const seen: number[] = [];
    const result = await syncSince("0", async (since) => pages[since]!, (ms) => void seen.push(...ms.map((m) => m.seq)));
    expect(result).toEqual({ cursor: "c3", complete: true });
    expect(seen).toEqual([1, 2, 3]);
  });

  it("stops at maxPages with the cursor to continue from", async () => {
    let n = 0;
    const result = await syncSince("0", async () => ({ messages: [msg(++n)], cursor: `c${n}`, hasMore: true }), () => undefined, 3);
    expect(result).toEqual({ cursor: "c3", complete: false });
  });

  it("groups a page by conversation in seq order", () => {
    const groups = byConversation([msg(2, { conversationId: "b" }), msg(3), msg(1, { conversationId: "b" }), msg(1)]);
    expect([...groups.keys()].sort()).toEqual(["b", "c1"]);
    expect(groups.get("b")?.map((m) => m.seq)).toEqual([1, 2]);
  });
});

describe("ticks and receipts", () => {
  const receipt = (userId: string, deliveredSeq: number, readSeq: number) => ({ userId, deliveredSeq, readSeq, updatedAt: 1 });

  it("direct: sent, delivered, read", () => {
    const members = ["me", "you"];
    expect(tickFor(5, "me", members, new Map()).tick).toBe("sent");
    expect(tickFor(5, "me", members, new Map([["you", receipt("you", 5, 0)]])).tick).toBe("delivered");
    expect(tickFor(5, "me", members, new Map([["you", receipt("you", 5, 5)]])).tick).toBe("read");
    // read implies delivered even if a stale copy says otherwise
    expect(tickFor(5, "me", members, new Map([["you", receipt("you", 0, 7)]])).tick).toBe("read");
  });

  it("group: read by N of M, read when all have read", () => {
    const members = ["me", "a", "b", "c"];
    const r = new Map([["a", receipt("a", 9, 9)], ["b", receipt("b", 9, 3)], ["me", receipt("me", 9, 9)]]);
    const info = tickFor(5, "me", members, r);
    expect(info).toEqual({ tick: "sent", readBy: 1, deliveredTo: 2, others: 3 });
    expect(tickLabel(info, true)).toBe("Read by 1 of 3");
    r.set("c", receipt("c", 9, 9));
    r.set("b", receipt("b", 9, 9));
    expect(tickFor(5, "me", members, r).tick).toBe("read");
    expect(tickLabel(tickFor(5, "me", members, r), true)).toBe("Read by all 3");
  });

  it("receipts only move forward", () => {
    let r = applyReceipt(new Map(), receipt("a", 5, 3));
    r = applyReceipt(r, receipt("a", 2, 1));
    expect(r.get("a")).toMatchObject({ deliveredSeq: 5, readSeq: 3 });
    r = applyReceipt(r, receipt("a", 4, 8));
    expect(r.get("a")).toMatchObject({ deliveredSeq: 8, readSeq: 8 });
  });
});

describe("timeline grouping", () => {
  const entry = (key: string, senderId: string, createdAt: number, kind = "text") => ({ key, senderId, createdAt, kind });
  const dayOf = (t: number) => `d${Math.floor(t / 86_400_000)}`;

  it("groups consecutive messages of a sender, splits by day, gap in time and system messages", () => {
    const items = buildTimeline(
      [
        entry("1", "a", 1000),
        entry("2", "a", 2000),
        entry("3", "b", 3000),
        entry("4", "b", 3000 + 6 * 60_000),
        entry("5", "x", 500_000, "system"),
        entry("6", "b", 510_000),
        entry("7", "b", 86_400_000 + 1),
      ],
      { dayOf },
    );
    const shape = items.map((i) => (i.type === "entry" ? `${i.key}${i.first ? "F" : ""}${i.last ? "L" : ""}` : i.type));
    expect(shape).toEqual(["day", "1F", "2L", "3FL", "4FL", "5FL", "6FL", "day", "7FL"]);
  });

  it("puts the unread divider before the first unread entry and starts a group there", () => {
    const items = buildTimeline([entry("1", "a", 1), entry("2", "a", 2), entry("3", "a", 3)], { dayOf, firstUnreadKey: "2" });
    const shape = items.map((i) => (i.type === "entry" ? `${i.key}${i.first ? "F" : ""}${i.last ? "L" : ""}` : i.type));
    expect(shape).toEqual(["day", "1FL", "unread", "2F", "3L"]);
  });
});

describe("format", () => {
  it("initials and last seen", () => {
    expect(initials("Ann Lee")).toBe("AL");
    expect(initials("bob")).toBe("B");
    expect(initials("  ")).toBe("?");
    const now = 10 * 3_600_000;
    expect(lastSeen({ userId: "u", status: "online", lastSeen: null }, now)).toBe("online");
    expect(lastSeen({ userId: "u", status: "offline", lastSeen: now - 5 * 60_000 }, now)).toBe("last seen 5 min ago");
    expect(lastActive(null, now)).toBe("");
    expect(lastActive(now - 30_000, now)).toBe("active just now");
    expect(lastActive(now - 5 * 60_000, now)).toBe("active 5 min ago");
    expect(lastSeen({ userId: "u", status: "unknown", lastSeen: null }, now)).toBe("");
  });
});

describe("names that imitate a username", () => {
  const alice = { id: "a", username: "alice", displayName: "Alice" };
  const known = [alice, { id: "b", username: "bob_smith", displayName: "Bob" }];
  it("shows @username beside a display name that reads as another user's username", () => {
    for (const displayName of ["alice", "ALICE", "@alice", "аlice" /* Cyrillic а */, "al\u200bice", "a1ice"]) {
      expect(shownUserName({ id: "m", username: "mallory", displayName }, known)).toBe(`${displayName} (@mallory)`);
    }
    // Or reads as a handle not its owner's.
    expect(shownUserName({ id: "m", username: "mallory", displayName: "@admin" }, known)).toBe("@admin (@mallory)");
  });
  it("leaves ordinary and own names alone", () => {
    expect(shownUserName(alice, known)).toBe("Alice");
    expect(shownUserName({ id: "b", username: "bob_smith", displayName: "Bob" }, known)).toBe("Bob");
    expect(shownUserName({ id: "m", username: "mallory", displayName: "Mallory M." }, known)).toBe("Mallory M.");
    expect(shownUserName({ id: "m", username: "mallory", displayName: "@mallory" }, known)).toBe("@mallory");
  });
});

describe("voice note waveform", () => {
  it("takes each slice's loudest sample, scaled to the loudest slice", () => {
    expect(peaks([0, 0.1, -0.5, 0.2, 0.25, -0.1, 0, 0], 4)).toEqual([0.2, 1, 0.5, 0]);
    expect(peaks([0, 0, 0], 3)).toEqual([0, 0, 0]);
    expect(peaks(new Float32Array(10).fill(0.5), 4)).toHaveLength(4);
  });
});

describe("message actions", () => {
  const event = (seq: number, senderId: string, action: object, createdAt = 5000 + seq) =>
    message("c1", seq, senderId, { kind: "action", body: JSON.stringify(action), createdAt });

  it("applies live action events to their targets, in order", () => {
    let list = mergeMessages([], [msg(1, { body: "helo" }), msg(2, { body: "two" })]);
    list = mergeMessages(list, [event(3, "u1", { type: "edit", targetSeq: 1, body: "hello" })]);
    expect(list[0]).toMatchObject({ body: "hello", editedAt: 5003 });
    list = mergeMessages(list, [
      event(4, "u2", { type: "react", targetSeq: 1, emoji: "👍", on: true }),
      event(5, "u3", { type: "react", targetSeq: 1, emoji: "👍", on: true }),
      event(6, "u2", { type: "pin", targetSeq: 2, on: true }),
    ]);
    expect(list[0]!.reactions).toEqual([{ emoji: "👍", userIds: ["u2", "u3"] }]);
    expect(list[1]!.pinned).toEqual({ by: "u2", at: 5006 });
    list = mergeMessages(list, [event(7, "u2", { type: "react", targetSeq: 1, emoji: "👍", on: false }), event(8, "u1", { type: "delete", targetSeq: 1 })]);
    expect(list[0]).toMatchObject({ body: null, media: [], deletedAt: 5008 });
    expect(list[0]!.reactions).toBeUndefined();
    // The events keep their place in the sequence (the view skips them when it draws).
    expect(list.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it("leaves targets the server answered as they are when older events arrive with them", () => {
    // A history page: the target is already current, its events come along; applying the
    // reaction again would add it back after it was taken away.
    const current = msg(1, { body: "hi" });
    const page = [current, event(2, "u2", { type: "react", targetSeq: 1, emoji: "👍", on: true }), event(3, "u2", { type: "react", targetSeq: 1, emoji: "👍", on: false })];
    const list = mergeMessages([msg(4)], page);
    expect(list[0]).toEqual(current);
  });

  it("keeps the later revision when an older copy of a message arrives late, and never shows a hidden one again", () => {
    let list = mergeMessages([], [msg(1, { body: "helo" }), msg(2, { body: "forget me" })]);
    list = mergeMessages(list, [event(3, "u1", { type: "edit", targetSeq: 1, body: "hello" })]);
    expect(list[0]).toMatchObject({ body: "hello", revisedSeq: 3 });
    // A sync page from the lagging index, or the other socket's relay, with the copies as they were.
    list = mergeMessages(list, [msg(1, { body: "helo" }), msg(2, { body: "forget me" })]);
    expect(list[0]).toMatchObject({ body: "hello", revisedSeq: 3 });
    list = mergeMessages(list, [msg(2, { hidden: true, body: null })]);
    list = mergeMessages(list, [msg(2, { body: "forget me" }), msg(1, { body: "hello again", editedAt: 9000, revisedSeq: 9 })]);
    expect(list[1]).toMatchObject({ seq: 2, body: null, media: [], hidden: true });
    // A newer copy wins, and an event it already holds is not applied on top of it.
    expect(list[0]).toMatchObject({ body: "hello again", revisedSeq: 9 });
    // The page's copy already holds a reaction taken back at 11: the event at 10 is not applied again.
    list = mergeMessages(list, [msg(1, { body: "hello again", revisedSeq: 11 }), event(10, "u2", { type: "react", targetSeq: 1, emoji: "👍", on: true })]);
    expect(list[0]!.reactions).toBeUndefined();
  });
});
