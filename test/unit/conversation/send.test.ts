// Sends (seq, idempotency, rate limit, who gets which frame, what is refused), history paging and
// thread summaries.
import { describe, expect, it } from "vitest";
import type { SendRequest } from "../../../durable-objects/conversation/conversation";
import { ConversationServerFrame, type MediaRef, type Message } from "../../../protocol";
import { ConversationHarness, expectFailure, expectOk, identity } from "../support/conversation";
import { framesOf, onlyFrame } from "../support/sockets";

import { MlsDevice } from "../../../web/src/e2ee/engine";

const ref = (id: string): MediaRef => ({ id, contentType: "image/png", size: 10, name: `${id}.png` });
const seqs = (messages: Message[]) => messages.map((m) => m.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** alice (admin) and bob in a group: seq 1 is its "created" message. */
function aliceAndBob(options?: ConstructorParameters<typeof ConversationHarness>[0]): ConversationHarness {
  const h = new ConversationHarness(options);
  h.group("alice", ["bob"]);
  return h;
}

describe("send", () => {
  it("encodes its ack and message frames by hand exactly as the protocol's schema says", () => {
    const h = aliceAndBob();
    const other = h.room.connect("alice");
    const origin = h.room.connect("bob");
    const { message } = expectOk(h.send("bob", { clientMsgId: "m1", body: "hello \"quoted\" \u2028" }, origin));
    const ack = onlyFrame(origin, "ack");
    const relayed = onlyFrame(other, "message");
    expect(ConversationServerFrame.parse(ack)).toEqual({ type: "ack", clientMsgId: "m1", message });
    expect(ConversationServerFrame.parse(relayed)).toEqual({ type: "message", message });
  });

  it("assigns seq contiguous from 1, whoever sends, and keeps counting after a new wake-up", () => {
    const h = aliceAndBob();
    h.sendMany("alice", 3);
    h.sendMany("bob", 3);
    h.reopen();
    h.sendMany("alice", 2, "later");
    const all = expectOk(h.conversation.history("bob", { after: 0, limit: 100 })).messages;
    expect(seqs(all)).toEqual(range(1, 9));
    expect(h.store.requireMeta()).toMatchObject({ lastSeq: 9, lastMessageAt: h.clock.now() });
  });

  it("stores a message with its sender, device, body and time, and asks for the deferred pass", () => {
    const h = aliceAndBob();
    const deferred = h.deferred;
    h.clock.advance(5);
    const { message, duplicate } = expectOk(h.send("bob", { clientMsgId: "m1", body: "hello" }));
    expect(duplicate).toBe(false);
    expect(message).toMatchObject({
      conversationId: "c1",
      seq: 2,
      senderId: "bob",
      senderDeviceId: identity("bob").deviceId,
      clientMsgId: "m1",
      kind: "text",
      body: "hello",
      media: [],
      threadRootSeq: null,
      createdAt: h.clock.now(),
    });
    expect(h.deferred).toBe(deferred + 1);
    expect(h.store.getMessage(2)).toEqual(message);
  });

  it("answers a retry with the stored message and stores, defers and broadcasts nothing", () => {
    const h = aliceAndBob();
    const other = h.room.connect("alice");
    const origin = h.room.connect("bob");
    const first = expectOk(h.send("bob", { clientMsgId: "m1", body: "hello" }, origin)).message;
    const deferred = h.deferred;
    h.clock.advance(60_000);
    // Another body does not make it another message: the key is (sender, clientMsgId).
    const retry = expectOk(h.send("bob", { clientMsgId: "m1", body: "changed" }, origin));
    expect(retry).toEqual({ ok: true, message: first, duplicate: true });
    expect(h.storedMessages()).toBe(2);
    expect(h.deferred).toBe(deferred);
    expect(framesOf(origin, "ack").map((f) => f.message)).toEqual([first, first]);
    expect(framesOf(other, "message").map((f) => f.message)).toEqual([first]);
  });

  it("keys idempotency by sender: the same clientMsgId from another member is another message", () => {
    const h = aliceAndBob();
    const a = expectOk(h.send("alice", { clientMsgId: "same" })).message;
    const b = expectOk(h.send("bob", { clientMsgId: "same" })).message;
    expect([a.seq, b.seq]).toEqual([2, 3]);
    expect(a.id).not.toBe(b.id);
  });

  it("answers a retry after a new wake-up: the key is stored, not remembered", () => {
    const h = aliceAndBob();
    const first = expectOk(h.send("bob", { clientMsgId: "m1" })).message;
    h.reopen();
    expect(expectOk(h.send("bob", { clientMsgId: "m1" }))).toEqual({ ok: true, message: first, duplicate: true });
    expect(h.storedMessages()).toBe(2);
  });

  it("still answers a retry of a stored send that would no longer validate", () => {
    const h = aliceAndBob();
    const first = expectOk(h.send("bob", { clientMsgId: "m1" })).message;
    expect(expectOk(h.send("bob", { clientMsgId: "m1", mediaIds: ["gone"] })).message).toEqual(first);
  });

  it("rate limits new sends, and still answers the retry of a stored one", () => {
    const h = aliceAndBob({ perSecond: 1, burst: 2 });
    const [first] = h.sendMany("bob", 2);
    const limited = expectFailure(h.send("bob", { clientMsgId: "third" }), "rate_limited");
    expect(limited.retryAfterSeconds).toBeGreaterThan(0);
    expect(limited.retryAfterSeconds).toBeLessThanOrEqual(1);
    expect(h.storedMessages()).toBe(3);
    expect(expectOk(h.send("bob", { clientMsgId: first!.clientMsgId }))).toMatchObject({ message: first, duplicate: true });
    // Another member has a bucket of their own.
    expectOk(h.send("alice", { clientMsgId: "a1" }));
    h.clock.advance(1000);
    expect(expectOk(h.send("bob", { clientMsgId: "third" })).message.seq).toBe(5);
  });

  it("acks the origin socket and sends the message to every other socket, the sender's other devices included", () => {
    const h = aliceAndBob();
    const origin = h.room.connect("bob", "phone");
    const laptop = h.room.connect("bob", "laptop");
    const alice = h.room.connect("alice");
    const { message } = expectOk(h.send("bob", { clientMsgId: "m1" }, origin));
    expect(origin.frames).toEqual([{ type: "ack", clientMsgId: "m1", message }]);
    for (const ws of [laptop, alice]) expect(ws.frames).toEqual([{ type: "message", message }]);
  });

  it("sends a REST send (no origin) to every socket as a message", () => {
    const h = aliceAndBob();
    const sockets = [h.room.connect("bob"), h.room.connect("alice")];
    const { message } = expectOk(h.send("bob", { clientMsgId: "m1" }));
    for (const ws of sockets) expect(onlyFrame(ws, "message").message).toEqual(message);
    expect(framesOf(sockets[0]!, "ack")).toEqual([]);
  });

  it.each([
    ["a seq beyond the last", () => 99],
    ["a system message", () => 1],
    ["a reply (threads are one level deep)", (h: ConversationHarness) => expectOk(h.send("alice", { clientMsgId: "reply", threadRootSeq: 2 })).message.seq],
  ])("refuses a thread root that is %s, storing nothing", (_, root) => {
    const h = aliceAndBob();
    h.sendMany("alice", 1);
    const rootSeq = root(h);
    const stored = h.storedMessages();
    const sockets = [h.room.connect("alice"), h.room.connect("bob")];
    expectFailure(h.send("bob", { clientMsgId: "bad", threadRootSeq: rootSeq }), "bad_request");
    expect(h.storedMessages()).toBe(stored);
    for (const ws of sockets) expect(ws.frames).toEqual([]);
    // Refused, not stored: the same clientMsgId is free for a valid send.
    expect(expectOk(h.send("bob", { clientMsgId: "bad" })).duplicate).toBe(false);
  });

  it.each([
    ["more media ids than resolved refs", ["m1", "m2"], [ref("m1")]],
    ["media ids none of which resolved", ["m1"], []],
    ["refs without ids", undefined, [ref("m1")]],
  ])("refuses %s as an unknown media id", (_, mediaIds, media) => {
    const h = aliceAndBob();
    expectFailure(h.send("bob", { clientMsgId: "x", body: "see", ...(mediaIds ? { mediaIds } : {}), media }), "bad_request");
    expect(h.storedMessages()).toBe(1);
  });

  it.each<[Message["kind"], Partial<SendRequest>]>([
    ["text", { body: "hi" }],
    ["media", { mediaIds: ["m1"], media: [ref("m1")] }],
  ])("stores kind %s", (kind, content) => {
    const h = new ConversationHarness();
    expectOk(h.conversation.create({ id: "c1", type: "group", title: "t", e2ee: false, creator: identity("alice"), memberIds: [], now: 0 }));
    const { message } = expectOk(h.send("alice", { clientMsgId: "x", ...content }));
    expect(message.kind).toBe(kind);
    expect(message.media).toEqual(content.media ?? []);
  });

  it("stores an E2EE message as kind encrypted with its ciphertext, never a body, and only octet-stream media", async () => {
    const device = await MlsDevice.create("alice", "d-alice");
    await device.createGroup("c1");
    const ciphertext = await device.encrypt("c1", "secret");
    const blob: MediaRef = { ...ref("m1"), contentType: "application/octet-stream" };
    const h = new ConversationHarness();
    expectOk(h.conversation.create({ id: "c1", type: "group", title: "t", e2ee: true, creator: identity("alice"), memberIds: [], now: 0 }));
    for (const refused of [{ body: "plain" }, { body: "plain", ciphertext }, { ciphertext: "AAAA" }, { ciphertext, mediaIds: ["m1"], media: [ref("m1")] }]) {
      expectFailure(h.send("alice", { clientMsgId: "refused", ...refused }), "bad_request");
    }
    const { message } = expectOk(h.send("alice", { clientMsgId: "x", ciphertext, mediaIds: ["m1"], media: [blob] }));
    expect(message).toMatchObject({ kind: "encrypted", body: null, ciphertext, media: [blob] });
    expect(h.storedMessages()).toBe(2);
  });
});

describe("history", () => {
  /** seq 1 is the group's "created" message, 2 to 11 are bob's. */
  function tenMessages(reopened: boolean): ConversationHarness {
    const h = aliceAndBob();
    h.sendMany("bob", 10);
    // A new wake-up has no recent messages in memory: every page comes from SQLite.
    if (reopened) h.reopen();
    return h;
  }

  it.each([
    [{ after: 0, limit: 5 }, range(1, 5), true],
    [{ after: 5, limit: 5 }, range(6, 10), true],
    [{ after: 8, limit: 5 }, [9, 10, 11], false],
    [{ after: 6, limit: 5 }, range(7, 11), false],
    [{ after: 11, limit: 5 }, [], false],
    [{ after: 50, limit: 5 }, [], false],
    [{ before: 11, limit: 3 }, [8, 9, 10], true],
    [{ before: 4, limit: 3 }, [1, 2, 3], false],
    [{ before: 3, limit: 5 }, [1, 2], false],
    [{ before: 1, limit: 5 }, [], false],
    [{ limit: 3 }, [9, 10, 11], true],
    [{ limit: 11 }, range(1, 11), false],
  ])("%j gives seqs %j, hasMore %s (fresh and after a wake-up)", (query, expected, hasMore) => {
    for (const reopened of [false, true]) {
      const page = expectOk(tenMessages(reopened).conversation.history("alice", query));
      expect(seqs(page.messages)).toEqual(expected);
      expect(page.hasMore).toBe(hasMore);
    }
  });

  it("pages forward and backward through the same messages", () => {
    const h = tenMessages(false);
    const forward: number[] = [];
    for (let after = 0, more = true; more; ) {
      const page = expectOk(h.conversation.history("bob", { after, limit: 4 }));
      forward.push(...seqs(page.messages));
      after = page.messages.at(-1)?.seq ?? after;
      more = page.hasMore;
    }
    const backward: number[] = [];
    for (let before: number | undefined, more = true; more; ) {
      const page = expectOk(h.conversation.history("bob", { before, limit: 4 }));
      backward.unshift(...seqs(page.messages));
      before = page.messages[0]?.seq;
      more = page.hasMore;
    }
    expect(forward).toEqual(range(1, 11));
    expect(backward).toEqual(forward);
  });
});

describe("threads", () => {
  /** Root 2 with replies 4 and 6; 3 and 5 are outside the thread; 7 is a reply to 3. */
  function threaded(): ConversationHarness {
    const h = aliceAndBob();
    h.sendMany("alice", 1, "root");
    h.sendMany("bob", 1, "other");
    h.clock.advance(100);
    expectOk(h.send("bob", { clientMsgId: "r1", threadRootSeq: 2 }));
    h.sendMany("alice", 1, "after");
    h.clock.advance(100);
    expectOk(h.send("alice", { clientMsgId: "r2", threadRootSeq: 2 }));
    expectOk(h.send("bob", { clientMsgId: "r3", threadRootSeq: 3 }));
    return h;
  }

  it("keeps each root's reply count, last reply seq and time; a message without replies has none", () => {
    const h = threaded();
    const bySeq = new Map(expectOk(h.conversation.history("bob", { after: 0, limit: 100 })).messages.map((m) => [m.seq, m]));
    expect(bySeq.get(2)!.thread).toEqual({ replyCount: 2, lastReplySeq: 6, lastReplyAt: h.clock.now() });
    expect(bySeq.get(3)!.thread).toEqual({ replyCount: 1, lastReplySeq: 7, lastReplyAt: h.clock.now() });
    for (const seq of [1, 4, 5, 6, 7]) expect(bySeq.get(seq)!.thread).toBeUndefined();
    expect(bySeq.get(6)!.threadRootSeq).toBe(2);
    // The root as a reply's send sees it.
    expect(h.store.getMessage(2)!.thread?.replyCount).toBe(2);
  });

  it.each([
    [{ thread: 2, after: 0, limit: 10 }, [2, 4, 6], false],
    [{ thread: 2, after: 0, limit: 2 }, [2, 4], true],
    [{ thread: 2, after: 2, limit: 10 }, [4, 6], false],
    [{ thread: 2, before: 6, limit: 10 }, [2, 4], false],
    [{ thread: 2, limit: 1 }, [6], true],
    [{ thread: 3, after: 0, limit: 10 }, [3, 7], false],
    [{ thread: 5, after: 0, limit: 10 }, [5], false],
  ])("%j gives the root and its replies %j, hasMore %s", (query, expected, hasMore) => {
    const page = expectOk(threaded().conversation.history("alice", query));
    expect(seqs(page.messages)).toEqual(expected);
    expect(page.hasMore).toBe(hasMore);
  });
});
