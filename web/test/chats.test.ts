// Conversations, timelines and receipts (chats.ts): one entry for messages from every path,
// receipts that only move forward, read and delivered sent once, gaps filled in order.
import { describe, expect, it } from "vitest";
import { conversation, message, settle } from "./fakes";
import { ME, YOU, startSignedIn } from "./storeSetup";

const live = async (path = "/c/c1") => {
  const s = await startSignedIn({ path });
  const chat = s.chatSocket("c1");
  chat.open();
  chat.deliver({ type: "ready", lastSeq: 0, protocolVersion: 1 });
  await settle();
  return { ...s, chat };
};

describe("conversations", () => {
  it("loads the list in pages: the first shown at once over what was there, the rest in the background, then only what the pages held", async () => {
    const s = await startSignedIn({ list: [conversation("old", [ME.id, YOU.id], { lastMessageAt: 1 })] });
    expect([...s.store.state.conversations.keys()]).toEqual(["old"]);
    const first = [conversation("c9", [ME.id, YOU.id], { lastMessageAt: 90 }), conversation("c8", [ME.id, "x", YOU.id], { lastMessageAt: 80 })];
    const second = [conversation("c7", [ME.id, YOU.id, "y"], { lastMessageAt: 70 })];
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    s.browser.server.on("GET /conversations", async (req) => {
      if (!req.query.has("cursor")) return { json: { conversations: first, hasMore: true, cursor: "k1" } };
      await held;
      return { json: { conversations: second, hasMore: false, cursor: null } };
    });
    const loading = s.store.chats.refreshList();
    await settle();
    // The first page is shown while the second is on its way; the old entry stays below it until then.
    expect(s.store.chats.sorted().map((c) => c.id)).toEqual(["c9", "c8", "old"]);
    expect(s.browser.server.calls("GET /conversations").slice(-2).map((r) => [r.query.get("limit"), r.query.get("cursor")])).toEqual([
      ["50", null],
      ["50", "k1"],
    ]);
    release();
    await loading;
    expect(s.store.chats.sorted().map((c) => c.id)).toEqual(["c9", "c8", "c7"]);
    expect(s.store.state.listLoaded).toBe(true);
  });

  it("a message seen on the chat socket, the user socket and a sync page is shown once, in seq order", async () => {
    const s = await live();
    s.chat.deliver({ type: "message", message: message("c1", 2, YOU.id) });
    s.chat.deliver({ type: "message", message: message("c1", 1, YOU.id) });
    s.userSocket().open();
    s.userSocket().deliver({ type: "message", message: message("c1", 2, YOU.id) });
    s.store.chats.receive([message("c1", 1, YOU.id), message("c1", 2, YOU.id)], "sync");
    await settle();
    expect(s.store.view("c1").messages.map((m) => m.seq)).toEqual([1, 2]);
    expect(s.store.state.conversations.get("c1")?.lastSeq).toBe(2);
  });

  it("receipts only move forward, whatever order they arrive in", async () => {
    const s = await live();
    s.chat.deliver({ type: "receipt", userId: YOU.id, deliveredSeq: 5, readSeq: 4, updatedAt: 10 });
    s.chat.deliver({ type: "receipt", userId: YOU.id, deliveredSeq: 3, readSeq: 2, updatedAt: 11 });
    s.userSocket().deliver({ type: "receipt", conversationId: "c1", userId: YOU.id, deliveredSeq: 6, readSeq: 1, updatedAt: 12 });
    expect(s.store.view("c1").receipts.get(YOU.id)).toMatchObject({ deliveredSeq: 6, readSeq: 4 });
  });

  it("read is sent once for what is on screen; scrolled up, a new message is only delivered and counts as unread", async () => {
    const s = await live();
    const receipts = () => s.chat.sent.filter((f) => f.type === "read" || f.type === "delivered");
    s.chat.deliver({ type: "message", message: message("c1", 1, YOU.id) });
    s.chat.deliver({ type: "message", message: message("c1", 1, YOU.id) });
    expect(receipts()).toEqual([{ type: "read", seq: 1 }]);
    s.store.setAtBottom(false);
    s.chat.deliver({ type: "message", message: message("c1", 2, YOU.id) });
    expect(receipts()).toEqual([{ type: "read", seq: 1 }, { type: "delivered", seq: 2 }]);
    expect(s.store.state.conversations.get("c1")?.unread).toBe(1);
    s.store.setAtBottom(true);
    expect(receipts()).toEqual([{ type: "read", seq: 1 }, { type: "delivered", seq: 2 }, { type: "read", seq: 2 }]);
    expect(s.store.state.conversations.get("c1")).toMatchObject({ unread: 0, readSeq: 2 });
    // Hidden, nothing is read.
    s.browser.fire("hidden");
    s.chat.deliver({ type: "message", message: message("c1", 3, YOU.id) });
    expect(receipts().at(-1)).toEqual({ type: "delivered", seq: 3 });
    s.browser.fire("visible");
    expect(receipts().at(-1)).toEqual({ type: "read", seq: 3 });
    // Without a live socket, receipts go by POST.
    s.chat.drop();
    s.store.setAtBottom(false);
    s.store.chats.receive([message("c1", 4, YOU.id)], "user");
    expect(s.browser.server.calls("POST /conversations/c1/receipts").map((r) => r.body)).toEqual([{ type: "delivered", seq: 4 }]);
  });

  it("a message from another path that would leave a hole fetches the gap instead of showing out of order", async () => {
    const stored = new Map([["c1", [1, 2].map((seq) => message("c1", seq, YOU.id))]]);
    const s = await startSignedIn({ path: "/c/c1", stored });
    expect(s.store.view("c1").messages.map((m) => m.seq)).toEqual([1, 2]);
    stored.set("c1", [1, 2, 3, 4, 5].map((seq) => message("c1", seq, YOU.id)));
    s.userSocket().deliver({ type: "message", message: message("c1", 5, YOU.id) });
    await settle();
    const fills = s.browser.server.calls("GET /conversations/c1/messages").map((r) => r.query.get("after"));
    expect(fills.at(-1)).toBe("2");
    expect(s.store.view("c1").messages.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it("counts others' messages as unread in other chats; read on another device of mine clears them", async () => {
    const s = await startSignedIn();
    s.userSocket().open();
    s.userSocket().deliver({ type: "message", message: message("c1", 1, YOU.id) });
    s.userSocket().deliver({ type: "message", message: message("c1", 2, ME.id) });
    s.userSocket().deliver({ type: "message", message: message("c1", 3, YOU.id, { kind: "system" }) });
    expect(s.store.state.conversations.get("c1")).toMatchObject({ unread: 1, lastSeq: 3 });
    s.userSocket().deliver({ type: "receipt", conversationId: "c1", userId: ME.id, deliveredSeq: 3, readSeq: 3, updatedAt: 1 });
    expect(s.store.state.conversations.get("c1")).toMatchObject({ unread: 0, readSeq: 3 });
  });

  it("an MLS commit counts in no unread, is no lastMessage and moves no list order", async () => {
    const s = await startSignedIn();
    s.userSocket().open();
    s.userSocket().deliver({ type: "message", message: message("c1", 1, YOU.id, { kind: "encrypted", body: null, ciphertext: "AAAA", createdAt: 5 }) });
    s.userSocket().deliver({ type: "message", message: message("c1", 2, YOU.id, { kind: "mls.commit", body: null, commit: "BBBB", createdAt: 9 }) });
    expect(s.store.state.conversations.get("c1")).toMatchObject({ unread: 1, lastSeq: 2, lastMessageAt: 5, lastMessage: { seq: 1 } });
  });

  it("the list is newest first, never steps back from what this device saw, and forgets a conversation we left", async () => {
    const s = await startSignedIn({
      list: [conversation("c1", [ME.id, YOU.id], { lastMessageAt: 5 }), conversation("g1", [ME.id, YOU.id, "x"], { lastMessageAt: 9 })],
    });
    expect(s.store.sortedConversations().map((c) => s.store.title(c))).toEqual(["Group g1", "You There"]);
    s.store.chats.receive([message("c1", 7, YOU.id, { createdAt: 20 })], "user");
    expect(s.store.sortedConversations().map((c) => c.id)).toEqual(["c1", "g1"]);
    // The list answers from before the message: the local progress stays.
    await s.store.chats.refreshList();
    expect(s.store.state.conversations.get("c1")).toMatchObject({ lastSeq: 7, lastMessageAt: 20 });
    s.userSocket().deliver({ type: "conversation", conversation: conversation("g1", [YOU.id, "x"]) });
    expect(s.store.state.conversations.has("g1")).toBe(false);
  });

  it("thread replies count apart from the conversation's own messages and are not its preview", async () => {
    const s = await startSignedIn();
    s.userSocket().open();
    s.userSocket().deliver({ type: "message", message: message("c1", 1, YOU.id, { createdAt: 5 }) });
    s.userSocket().deliver({ type: "message", message: message("c1", 2, YOU.id, { threadRootSeq: 1, createdAt: 7 }) });
    s.userSocket().deliver({ type: "message", message: message("c1", 3, YOU.id, { threadRootSeq: 1, createdAt: 9 }) });
    // The reply is activity (the list order) but not the preview.
    expect(s.store.state.conversations.get("c1")).toMatchObject({ unread: 1, threadUnread: 2, lastSeq: 3, lastMessageAt: 9, lastMessage: { seq: 1 } });
    s.userSocket().deliver({ type: "receipt", conversationId: "c1", userId: ME.id, deliveredSeq: 3, readSeq: 3, updatedAt: 1 });
    expect(s.store.state.conversations.get("c1")).toMatchObject({ unread: 0, threadUnread: 0 });
  });

  it("a group we were removed from stays, readable and with no socket; added back while it is open, it reopens live", async () => {
    const group = conversation("g1", [ME.id, YOU.id, "x"], { lastSeq: 2 });
    const stored = new Map([["g1", [message("g1", 1, YOU.id, { kind: "system", body: '{"event":"created"}' }), message("g1", 2, YOU.id)]]]);
    const s = await startSignedIn({ path: "/c/g1", list: [group], stored });
    s.userSocket().open();
    const chat = s.chatSocket("g1");
    chat.open();
    chat.deliver({ type: "ready", lastSeq: 2, protocolVersion: 1 });
    await settle();
    const removal = message("g1", 3, YOU.id, { kind: "system", body: `{"event":"removed","actorId":"you","userIds":["${ME.id}"]}` });
    const former = conversation("g1", [], { lastSeq: 3, readSeq: 3, leftSeq: 3, lastMessage: removal });
    s.browser.server.on("GET /conversations", () => ({ json: { conversations: [former] } }));
    chat.deliver({ type: "message", message: removal });
    chat.finalClose(4003);
    s.userSocket().deliver({ type: "conversation", conversation: former });
    await settle();
    expect(s.store.state.conversations.get("g1")).toMatchObject({ leftSeq: 3 });
    expect(s.store.view("g1").messages.map((m) => m.seq)).toEqual([1, 2, 3]);
    // Added back: the chat loads again from the server and opens a new socket.
    const sockets = s.browser.sockets.all.filter((x) => x.path.startsWith("/conversations/g1/ws")).length;
    s.browser.server.on("GET /conversations/g1/messages", () => ({ json: { messages: [message("g1", 5, YOU.id, { kind: "system", body: "{}" })], hasMore: false } }));
    const back = conversation("g1", [ME.id, YOU.id, "x"], { lastSeq: 5, readSeq: 4, joinedSeq: 5 });
    s.browser.server.on("GET /conversations", () => ({ json: { conversations: [back] } }));
    s.userSocket().deliver({ type: "conversation", conversation: back });
    await settle();
    expect(s.store.state.removedFrom).toBeNull();
    expect(s.store.state.conversations.get("g1")?.leftSeq).toBeUndefined();
    expect(s.browser.sockets.all.filter((x) => x.path.startsWith("/conversations/g1/ws")).length).toBe(sockets + 1);
    expect(s.store.view("g1")).toMatchObject({ loaded: true, hasMoreBefore: false });
    expect(s.store.view("g1").messages.map((m) => m.seq)).toEqual([5]);
  });

  it("scrolling up loads the page before the first message, once at a time, until the start", async () => {
    const stored = new Map([["c1", [51, 52].map((seq) => message("c1", seq, YOU.id))]]);
    const s = await startSignedIn({ path: "/c/c1", stored });
    s.browser.server.on("GET /conversations/c1/messages", (req) => {
      const before = Number(req.query.get("before"));
      return { json: { messages: [49, 50].filter((q) => q < before).map((q) => message("c1", q, YOU.id)), hasMore: false } };
    });
    const first = s.store.loadOlder("c1");
    const second = s.store.loadOlder("c1");
    await Promise.all([first, second]);
    expect(s.browser.server.calls("GET /conversations/c1/messages").filter((r) => r.query.has("before"))).toHaveLength(1);
    expect(s.store.view("c1").messages.map((m) => m.seq)).toEqual([49, 50, 51, 52]);
    expect(s.store.view("c1").hasMoreBefore).toBe(false);
  });

  it("an action event changes its target live and counts as no unread; a hidden frame empties what this user hid", async () => {
    const s = await live();
    s.store.setAtBottom(false);
    s.chat.deliver({ type: "message", message: message("c1", 1, YOU.id, { body: "helo" }) });
    s.chat.deliver({ type: "message", message: message("c1", 2, YOU.id, { kind: "action", body: JSON.stringify({ type: "edit", targetSeq: 1, body: "hello" }) }) });
    expect(s.store.view("c1").messages[0]).toMatchObject({ body: "hello" });
    expect(s.store.state.conversations.get("c1")).toMatchObject({ unread: 1, lastMessage: { seq: 1 } });
    s.userSocket().open();
    s.userSocket().deliver({ type: "hidden", conversationId: "c1", seqs: [1] });
    await settle();
    expect(s.store.view("c1").messages[0]).toMatchObject({ seq: 1, body: null, hidden: true });
  });

  it("a hide is in the offline cache by the time it is drawn, reaches the cache of a chat not on screen, and leaves the previews", async () => {
    const stored = new Map([
      ["c1", [message("c1", 1, YOU.id, { body: "keep" }), message("c1", 2, YOU.id, { body: "forget me" })]],
      ["c2", [message("c2", 1, YOU.id, { body: "elsewhere" })]],
    ]);
    const s = await startSignedIn({ path: "/c/c1", stored, list: [conversation("c1", [ME.id, YOU.id]), conversation("c2", [ME.id, YOU.id])] });
    const local = await s.browser.localStores.open(ME.id);
    await local.set("messages:c2", stored.get("c2"));
    let drawn = false;
    let cachedWhenDrawn: unknown;
    s.store.subscribe(() => {
      if (drawn || !s.store.view("c1").messages[1]?.hidden) return;
      drawn = true;
      cachedWhenDrawn = local.kv.get("messages:c1");
    });
    s.store.state.conversations.get("c1")!.lastMessage = stored.get("c1")![1]!;
    s.store.state.conversations.get("c2")!.lastMessage = stored.get("c2")![0]!;
    s.userSocket().open();
    s.userSocket().deliver({ type: "hidden", conversationId: "c1", seqs: [2] });
    s.userSocket().deliver({ type: "hidden", conversationId: "c2", seqs: [1] });
    await settle();
    expect(cachedWhenDrawn).toMatchObject([{ seq: 1, body: "keep" }, { seq: 2, body: null, hidden: true }]);
    expect(local.kv.get("messages:c2")).toMatchObject([{ seq: 1, body: null, hidden: true }]);
    // The list's preview: the message before, where the chat is loaded; else one without content.
    expect(s.store.state.conversations.get("c1")!.lastMessage).toMatchObject({ seq: 1, body: "keep" });
    expect(s.store.state.conversations.get("c2")!.lastMessage).toMatchObject({ seq: 1, body: null, hidden: true });
  });

  it("leaving a group goes back to the list from its info panel, but not when the user opened the chat meanwhile", async () => {
    for (const [clickedChat, expected] of [[false, { name: "list" }], [true, { name: "chat", id: "g1", thread: null, info: false }]] as const) {
      const group = conversation("g1", [ME.id, YOU.id, "cy"]);
      const s = await startSignedIn({ path: "/c/g1/info", list: [group] });
      let answer: (() => void) | null = null;
      s.browser.server
        .on(`DELETE /conversations/g1/members/${ME.id}`, () => new Promise((resolve) => (answer = () => resolve({ status: 204 }))))
        .on("GET /conversations/g1", () => ({ json: { conversation: { ...group, members: group.members.filter((m) => m.userId !== ME.id), leftSeq: 5 } } }));
      const leaving = s.store.removeMember("g1", ME.id);
      await settle();
      if (clickedChat) s.store.navigate({ name: "chat", id: "g1", thread: null, info: false });
      answer!();
      await leaving;
      await settle();
      expect(s.store.state.route).toEqual(expected);
      expect(s.store.state.conversations.get("g1")?.leftSeq).toBe(5);
    }
  });
});
