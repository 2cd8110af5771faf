// The rules of message actions (durable-objects/conversation/actions.ts): who may take which
// action, what each does to its target, that a refused one changes nothing, the events in the
// sequence, delete for me, the emoji rule (protocol/actions.ts), and the sync slices that read them per reader.
import { describe, expect, it } from "vitest";
import { react } from "../../../durable-objects/conversation/actions";
import { ACTION_LIMITS, ConversationServerFrame, isOneEmoji, type Action, type ActionEvent, type Message } from "../../../protocol";
import { ConversationHarness, expectFailure, expectOk, identity } from "../support/conversation";
import { framesOf, onlyFrame } from "../support/sockets";

/** alice (admin), bob and carol in a group: seq 1 is its "created" message; bob says "hello" at seq 2. */
function setUp() {
  const h = new ConversationHarness();
  h.group("alice", ["bob", "carol"]);
  const hello = expectOk(h.send("bob", { clientMsgId: "hello", body: "hello" })).message;
  return { h, hello };
}

let counter = 0;
const act = (h: ConversationHarness, userId: string, action: Action, clientMsgId = `a${counter++}`) =>
  h.conversation.actions.act(identity(userId), clientMsgId, action, h.clock.now(), null);

const target = (h: ConversationHarness, seq: number): Message => h.store.getMessage(seq)!;

/** The whole log and every table, to show that a refusal changed nothing. */
function snapshot(h: ConversationHarness): string {
  const tables = ["messages", "outbox", "hidden", "pins"];
  return JSON.stringify(tables.map((t) => h.sql.exec(`SELECT * FROM ${t}`).toArray()));
}

describe("message actions", () => {
  it("appends each action as an `action` message whose body is the event, and rewrites the target", () => {
    const { h, hello } = setUp();
    const other = h.room.connect("carol");
    const edit = expectOk(act(h, "bob", { type: "edit", targetSeq: hello.seq, body: "hello, world" })).message;
    expect(edit).toMatchObject({ seq: hello.seq + 1, kind: "action", senderId: "bob" });
    expect(JSON.parse(edit.body!) as ActionEvent).toEqual({ type: "edit", targetSeq: hello.seq, body: "hello, world" });
    expect(ConversationServerFrame.parse(onlyFrame(other, "message"))).toEqual({ type: "message", message: edit });
    expect(target(h, hello.seq)).toMatchObject({ body: "hello, world", editedAt: edit.createdAt });
    // An action is no lastMessage and no unread message.
    const view = h.conversation.viewFor("carol");
    expect(view.lastMessage?.seq).toBe(hello.seq);
    expect(view.unread).toBe(1);
    expect(view.lastMessageAt).toBe(hello.createdAt);
  });

  it("lets only the sender edit, within the edit window, and only a message's text", () => {
    const { h, hello } = setUp();
    const before = snapshot(h);
    expectFailure(act(h, "alice", { type: "edit", targetSeq: hello.seq, body: "x" }), "forbidden");
    expectFailure(act(h, "mallory", { type: "edit", targetSeq: hello.seq, body: "x" }), "not_found");
    expectFailure(act(h, "bob", { type: "edit", targetSeq: 1, body: "x" }), "bad_request");
    expectFailure(act(h, "bob", { type: "edit", targetSeq: 99, body: "x" }), "bad_request");
    const media = expectOk(h.send("bob", { clientMsgId: "pic", mediaIds: ["m1"], media: [{ id: "m1", contentType: "image/png", size: 1, name: "p.png" }] })).message;
    const after = snapshot(h);
    expectFailure(act(h, "bob", { type: "edit", targetSeq: media.seq, body: "a caption" }), "bad_request");
    expect(snapshot(h)).toBe(after);
    h.clock.advance(ACTION_LIMITS.editWindowMs + 1);
    expectFailure(act(h, "bob", { type: "edit", targetSeq: hello.seq, body: "too late" }), "forbidden");
    expect(target(h, hello.seq).body).toBe("hello");
  });

  it("lets the sender or a group admin delete for everyone, erasing body, media, edits, reactions and pin", () => {
    const { h, hello } = setUp();
    const before = snapshot(h);
    expectFailure(act(h, "carol", { type: "delete", targetSeq: hello.seq }), "forbidden");
    expect(snapshot(h)).toBe(before);
    const edit = expectOk(act(h, "bob", { type: "edit", targetSeq: hello.seq, body: "secret words" })).message;
    expectOk(act(h, "carol", { type: "react", targetSeq: hello.seq, emoji: "👍", on: true }));
    expectOk(act(h, "carol", { type: "pin", targetSeq: hello.seq, on: true }));
    const deleted = expectOk(act(h, "alice", { type: "delete", targetSeq: hello.seq })).message;
    expect(JSON.parse(deleted.body!)).toEqual({ type: "delete", targetSeq: hello.seq });
    const erased = target(h, hello.seq);
    expect(erased).toMatchObject({ body: null, media: [], deletedAt: deleted.createdAt });
    expect(erased.reactions).toBeUndefined();
    expect(erased.pinned).toBeUndefined();
    expect(JSON.parse(target(h, edit.seq).body!)).toEqual({ type: "edit", targetSeq: hello.seq });
    expect(JSON.stringify(h.sql.exec("SELECT * FROM messages").toArray())).not.toContain("secret words");
    expect(expectOk(h.conversation.actions.pins("bob")).messages).toEqual([]);
    // The outbox carries the erasure to D1; nothing queued there still holds the text.
    const outbox = h.store.outboxBatch(100);
    expect(outbox.filter((r) => r.kind === "message_update").at(-2)?.payload).toMatchObject({ seq: hello.seq, body: null, payload: null, media: [] });
    expect(JSON.stringify(outbox.filter((r) => r.kind === "message_update").slice(-2))).not.toContain("secret words");
    // Once deleted, nothing more is done to it.
    for (const action of [{ type: "delete", targetSeq: hello.seq }, { type: "react", targetSeq: hello.seq, emoji: "👍", on: true }, { type: "pin", targetSeq: hello.seq, on: true }] as Action[]) {
      expectFailure(act(h, "bob", action), "conflict");
    }
  });

  it("queues a deleted message's media and thumbnails for erasure", () => {
    const { h } = setUp();
    const media = [
      { id: "m1", contentType: "image/png", size: 1, name: "p.png", thumbnailId: "t1" },
      { id: "m2", contentType: "audio/ogg", size: 1, name: "v.ogg" },
    ];
    const sent = expectOk(h.send("bob", { clientMsgId: "pics", mediaIds: ["m1", "m2"], media })).message;
    expectOk(act(h, "bob", { type: "delete", targetSeq: sent.seq }));
    expect(h.store.outboxBatch(100).filter((r) => r.kind === "media_erase").map((r) => r.payload)).toEqual([{ mediaIds: ["m1", "t1", "m2"] }]);
    expect(target(h, sent.seq).media).toEqual([]);
  });

  it("keeps reactions per emoji with who holds them, several per member, up to the limits", () => {
    let reactions = react([], "👍", "a", true);
    reactions = react(reactions, "🎉", "a", true);
    reactions = react(reactions, "👍", "b", true);
    reactions = react(reactions, "👍", "b", true);
    expect(reactions).toEqual([{ emoji: "👍", userIds: ["a", "b"] }, { emoji: "🎉", userIds: ["a"] }]);
    reactions = react(reactions, "🎉", "a", false);
    expect(reactions).toEqual([{ emoji: "👍", userIds: ["a", "b"] }]);
    expect(react(reactions, "🎉", "a", false)).toBe(reactions);

    const { h, hello } = setUp();
    const emoji = ["😀", "😁", "😂", "🤣", "😃", "😄", "😅", "😆", "😉", "😊", "😋"];
    for (const e of emoji.slice(0, ACTION_LIMITS.reactionsPerUser)) expectOk(act(h, "carol", { type: "react", targetSeq: hello.seq, emoji: e, on: true }));
    const before = snapshot(h);
    expectFailure(act(h, "carol", { type: "react", targetSeq: hello.seq, emoji: emoji[10]!, on: true }), "bad_request");
    expect(snapshot(h)).toBe(before);
    // Holding one already is no new reaction.
    expectOk(act(h, "carol", { type: "react", targetSeq: hello.seq, emoji: emoji[0]!, on: true }));
    expect(target(h, hello.seq).reactions).toHaveLength(ACTION_LIMITS.reactionsPerUser);
  });

  it("recognises one emoji, whatever its code points, and nothing else", () => {
    for (const e of ["👍", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "❤️", "1️⃣", "🏳️‍🌈", "✅"]) expect(isOneEmoji(e), e).toBe(true);
    for (const e of ["a", "1", "👍👍", "👍 ", " ", "", ":)", "a👍", "\u200d"]) expect(isOneEmoji(e), e).toBe(false);
  });

  it("pins up to the limit; pinning twice or unpinning what is not pinned changes no message", () => {
    const { h, hello } = setUp();
    expectOk(act(h, "carol", { type: "pin", targetSeq: hello.seq, on: true }));
    const pinned = target(h, hello.seq).pinned;
    h.clock.advance(1000);
    expectOk(act(h, "bob", { type: "pin", targetSeq: hello.seq, on: true }));
    expect(target(h, hello.seq).pinned).toEqual(pinned);
    expect(pinned).toMatchObject({ by: "carol" });
    expectOk(act(h, "bob", { type: "pin", targetSeq: hello.seq, on: false }));
    expect(target(h, hello.seq).pinned).toBeUndefined();
    const others = h.sendMany("alice", ACTION_LIMITS.pinsMax + 1);
    for (const m of others.slice(0, ACTION_LIMITS.pinsMax)) expectOk(act(h, "alice", { type: "pin", targetSeq: m.seq, on: true }));
    const before = snapshot(h);
    expectFailure(act(h, "alice", { type: "pin", targetSeq: others.at(-1)!.seq, on: true }), "bad_request");
    expect(snapshot(h)).toBe(before);
  });

  it("answers a retried action with the stored event and changes nothing", () => {
    const { h, hello } = setUp();
    const first = expectOk(act(h, "bob", { type: "edit", targetSeq: hello.seq, body: "one" }, "same"));
    const again = expectOk(act(h, "bob", { type: "edit", targetSeq: hello.seq, body: "two" }, "same"));
    expect(again).toEqual({ ok: true, message: first.message, duplicate: true });
    expect(target(h, hello.seq).body).toBe("one");
  });

  it("takes actions in an E2EE conversation only to delete, which erases the ciphertext", () => {
    const h = new ConversationHarness();
    expectOk(h.conversation.create({ id: "e1", type: "group", title: "g", e2ee: true, creator: identity("alice"), memberIds: ["bob"], now: h.clock.now() }));
    // A ciphertext stored as the store keeps it (the rules of ciphertexts are mlsDelivery's, tested apart).
    const sent = h.store.append({ id: "x", senderId: "bob", senderDeviceId: "bob-device", clientMsgId: "c", kind: "encrypted", body: null, payload: "AAAA", media: [], threadRootSeq: null, createdAt: h.clock.now() })!;
    const before = snapshot(h);
    expectFailure(act(h, "bob", { type: "edit", targetSeq: sent.seq, body: "x" }), "bad_request");
    expectFailure(act(h, "bob", { type: "react", targetSeq: sent.seq, emoji: "👍", on: true }), "bad_request");
    expect(snapshot(h)).toBe(before);
    expectOk(act(h, "bob", { type: "delete", targetSeq: sent.seq }));
    expect(target(h, sent.seq).ciphertext).toBeUndefined();
    expect(h.sql.exec<{ payload: string | null }>("SELECT payload FROM messages WHERE seq = ?", sent.seq).one().payload).toBeNull();
    expect(h.conversation.actions.invalidAnnotations("bob", { replyToSeq: sent.seq })).toMatchObject({ code: "bad_request" });
    expect(h.conversation.actions.invalidAnnotations("bob", { mentions: ["bob"] })).toBeNull();
  });

  it("hides messages for one member only, keeping their place, and tells that member's sockets", () => {
    const { h, hello } = setUp();
    const bobs = h.room.connect("bob");
    const carols = h.room.connect("carol");
    expectOk(h.conversation.actions.hide("bob", [hello.seq, hello.seq, 1]));
    expect(framesOf(bobs).filter((f) => f.type === "hidden")).toEqual([{ type: "hidden", conversationId: "c1", seqs: [1, hello.seq] }]);
    expect(framesOf(carols).filter((f) => f.type === "hidden")).toEqual([]);
    const bobSees = expectOk(h.conversation.history("bob", { after: 0, limit: 10 })).messages;
    expect(bobSees.map((m) => m.seq)).toEqual([1, hello.seq]);
    expect(bobSees[1]).toMatchObject({ body: null, media: [], hidden: true });
    expect(expectOk(h.conversation.history("carol", { after: 0, limit: 10 })).messages[1]).toMatchObject({ body: "hello" });
    // Hiding again sends nothing and queues nothing.
    const outbox = h.store.outboxBatch(100).length;
    expectOk(h.conversation.actions.hide("bob", [hello.seq]));
    expect(h.store.outboxBatch(100)).toHaveLength(outbox);
    expectFailure(h.conversation.actions.hide("bob", [hello.seq + 1]), "bad_request");
    expectFailure(h.conversation.actions.hide("mallory", [1]), "not_found");
  });

  it("checks a send's reply and mentions", () => {
    const { h, hello } = setUp();
    const reply = expectOk(h.send("carol", { clientMsgId: "r", body: "hi bob", replyToSeq: hello.seq, mentions: ["bob"] })).message;
    expect(reply).toMatchObject({ replyToSeq: hello.seq, mentions: ["bob"] });
    h.reopen();
    expect(target(h, reply.seq)).toMatchObject({ replyToSeq: hello.seq, mentions: ["bob"] });
    const count = h.storedMessages();
    expectFailure(h.send("carol", { clientMsgId: "r2", replyToSeq: 1 }), "bad_request");
    expectFailure(h.send("carol", { clientMsgId: "r3", replyToSeq: 99 }), "bad_request");
    expectFailure(h.send("carol", { clientMsgId: "r4", mentions: ["mallory"] }), "bad_request");
    expect(h.storedMessages()).toBe(count);
  });

  it("keeps a member added later to what they may read: no action on, reply to or pin of an earlier message, and an edit of one reaches them without its text", () => {
    const { h, hello } = setUp();
    expectOk(act(h, "bob", { type: "pin", targetSeq: hello.seq, on: true }));
    expectOk(h.conversation.addMembers(identity("alice"), ["dave"], h.clock.now()));
    const joinedSeq = h.store.requireMeta().lastSeq;
    const daves = h.room.connect("dave");
    const carols = h.room.connect("carol");
    const before = snapshot(h);
    expectFailure(act(h, "dave", { type: "react", targetSeq: hello.seq, emoji: "👍", on: true }), "bad_request");
    expectFailure(h.send("dave", { clientMsgId: "r", body: "re", replyToSeq: hello.seq }), "bad_request");
    expectFailure(h.conversation.actions.hide("dave", [hello.seq]), "bad_request");
    expect(snapshot(h)).toBe(before);
    expect(expectOk(h.conversation.actions.pins("dave")).messages).toEqual([]);
    expect(expectOk(h.conversation.actions.pins("carol")).messages.map((m) => m.seq)).toEqual([hello.seq]);

    const edit = expectOk(act(h, "bob", { type: "edit", targetSeq: hello.seq, body: "a secret" })).message;
    const toDave = ConversationServerFrame.parse(onlyFrame(daves, "message"));
    const toCarol = ConversationServerFrame.parse(onlyFrame(carols, "message"));
    expect(toCarol).toEqual({ type: "message", message: edit });
    expect(toDave).toEqual({ type: "message", message: { ...edit, body: JSON.stringify({ type: "edit", targetSeq: hello.seq }) } });
    const history = expectOk(h.conversation.history("dave", { after: 0, limit: 50 })).messages;
    expect(history.map((m) => m.seq)).toEqual([joinedSeq, edit.seq]);
    expect(JSON.stringify(history)).not.toContain("a secret");
    // Their own messages are theirs to act on.
    const mine = expectOk(h.send("dave", { clientMsgId: "d1", body: "hi all" })).message;
    expectOk(act(h, "carol", { type: "react", targetSeq: mine.seq, emoji: "👍", on: true }));
  });
});

describe("sync slices", () => {
  const decode = (slice: { messages: Array<{ seq: number; json: string }> }) => slice.messages.map((m) => JSON.parse(m.json) as Message);

  it("give each reader what their history gives them: their span, what they hid, edits of messages from before their joining", () => {
    const { h, hello } = setUp();
    // Annotations (a reaction), a thread summary and text that JSON must escape, as SQLite encodes them.
    const quoted = expectOk(h.send("alice", { clientMsgId: "q", body: 'quotes " \\ and\nlines, \u2028, \u0001, é \u{1F600}' })).message;
    expectOk(act(h, "carol", { type: "react", targetSeq: quoted.seq, emoji: "👍", on: true }));
    expectOk(h.send("bob", { clientMsgId: "re", body: "re", threadRootSeq: quoted.seq }));
    expectOk(h.conversation.actions.hide("bob", [hello.seq]));
    expectOk(h.conversation.addMembers(identity("alice"), ["dave"], h.clock.now()));
    expectOk(act(h, "bob", { type: "edit", targetSeq: hello.seq, body: "a secret" }));
    expectOk(h.conversation.removeMember(identity("alice"), "carol", h.clock.now()));
    h.sendMany("alice", 2);
    const last = h.store.requireMeta().lastSeq;
    const everything = [{ from: 0, through: last }];
    for (const reader of ["alice", "bob", "carol", "dave"]) {
      const slice = h.conversation.syncSlice(reader, everything, 0, 100);
      expect(decode(slice), reader).toStrictEqual(expectOk(h.conversation.history(reader, { after: 0, limit: 100 })).messages);
      expect(slice.through).toBe(last);
      expect(h.conversation.syncHead(reader), reader).toBe(reader === "carol" ? last - 2 : last);
    }
    expect(decode(h.conversation.syncSlice("bob", everything, 0, 100))[1]).toMatchObject({ body: null, media: [], hidden: true });
    expect(decode(h.conversation.syncSlice("alice", everything, 0, 100)).find((m) => m.seq === quoted.seq)).toMatchObject({
      body: quoted.body,
      thread: { replyCount: 1 },
      reactions: [{ emoji: "👍", userIds: ["carol"] }],
    });
    expect(JSON.stringify(h.conversation.syncSlice("dave", everything, 0, 100))).not.toContain("a secret");
    // Never a member: nothing, and nothing left to ask about.
    expect(h.conversation.syncSlice("mallory", everything, 0, 100)).toEqual({ messages: [], through: last });
    expect(h.conversation.syncHead("mallory")).toBe(0);
  });

  it("read only the ranges asked, stop at the limit on the last message given, and leave out what was created before minTime", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    h.sendMany("alice", 9);
    const ranges = [
      { from: 0, through: 3 },
      { from: 5, through: 10 },
    ];
    const all = h.conversation.syncSlice("bob", ranges, 0, 100);
    expect(all.messages.map((m) => m.seq)).toEqual([1, 2, 3, 6, 7, 8, 9, 10]);
    expect(all.through).toBe(10);
    const cut = h.conversation.syncSlice("bob", ranges, 0, 4);
    expect(cut.messages.map((m) => m.seq)).toEqual([1, 2, 3, 6]);
    expect(cut.through).toBe(6);
    const since = h.clock.advance(1000);
    h.sendMany("alice", 2, "later");
    const recent = h.conversation.syncSlice("bob", [{ from: 0, through: 12 }], since, 100);
    expect(recent.messages.map((m) => m.seq)).toEqual([11, 12]);
    expect(recent.through).toBe(12);
  });
});
