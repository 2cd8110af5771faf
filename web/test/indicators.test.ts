// Typing (typing.ts), presence (presenceWatch.ts) and threads (threads.ts).
import { describe, expect, it } from "vitest";
import type { ConversationClientFrame } from "../../protocol";
import { StoreCore, initialState } from "../src/app/storeCore";
import { Typing } from "../src/app/typing";
import { FakeClock, conversation, message, settle } from "./fakes";
import { ME, YOU, startSignedIn } from "./storeSetup";

describe("typing", () => {
  it("stands alone: a slice built from a core, a clock and its neighbours' few methods", async () => {
    const clock = new FakeClock();
    const core = new StoreCore(initialState(null, { name: "list" }, true, "system"), clock);
    const frames: Array<[string, ConversationClientFrame]> = [];
    const typing = new Typing(core, clock, {
      connection: { transmit: (id, frame) => (frames.push([id, frame]), true) },
      chats: { view: () => ({ messages: [], hasMoreBefore: false, loaded: true, loadingOlder: false, receipts: new Map(), typing: new Map(), firstUnreadSeq: null, error: null }) },
      people: { name: (id) => id },
    });
    typing.keystroke("a");
    typing.keystroke("b");
    await clock.advance(4000);
    expect(frames).toEqual([
      ["a", { type: "typing", on: true }],
      ["b", { type: "typing", on: true }],
      ["a", { type: "typing", on: false }],
      ["b", { type: "typing", on: false }],
    ]);
    expect(clock.pending).toBe(0);
  });

  it("sends `on` at most every 3 s while typing, `off` after 4 s of quiet or on send", async () => {
    const s = await startSignedIn({ path: "/c/c1" });
    const chat = s.chatSocket("c1");
    chat.open();
    const typing = () => chat.sent.filter((f) => f.type === "typing").map((f) => f.on);
    const clock = s.browser.clock;
    s.store.typing.keystroke("c1");
    await clock.advance(1000);
    s.store.typing.keystroke("c1");
    await clock.advance(1000);
    s.store.typing.keystroke("c1");
    expect(typing()).toEqual([true]);
    await clock.advance(1500);
    s.store.typing.keystroke("c1");
    expect(typing()).toEqual([true, true]);
    await clock.advance(3999);
    expect(typing()).toEqual([true, true]);
    await clock.advance(1);
    expect(typing()).toEqual([true, true, false]);
    s.store.typing.keystroke("c1");
    s.browser.server.on("POST /send", () => ({ json: { message: message("c1", 1, ME.id, { clientMsgId: "cm1" }) } }));
    await s.store.sendText("c1", "done", null);
    expect(typing()).toEqual([true, true, false, true, false]);
    await clock.advance(10_000);
    expect(typing()).toEqual([true, true, false, true, false]);
  });

  it("shows who is typing until their indicator lapses or they stop", async () => {
    const s = await startSignedIn({ path: "/c/c1" });
    const chat = s.chatSocket("c1");
    chat.open();
    let renders = 0;
    s.store.subscribe(() => renders++);
    chat.deliver({ type: "typing", userId: YOU.id, on: true });
    chat.deliver({ type: "typing", userId: ME.id, on: true });
    expect(s.store.typingNames("c1")).toEqual(["You There"]);
    await settle();
    const before = renders;
    await s.browser.clock.advance(6600);
    expect(s.store.typingNames("c1")).toEqual([]);
    expect(renders).toBeGreaterThan(before);
    chat.deliver({ type: "typing", userId: YOU.id, on: true });
    chat.deliver({ type: "typing", userId: YOU.id, on: false });
    expect(s.store.typingNames("c1")).toEqual([]);
  });
});

describe("presence", () => {
  const list = [
    conversation("d1", [ME.id, "ann"]),
    conversation("d2", [ME.id, "bob"]),
    conversation("g1", [ME.id, "cy", "dee", "eve"]),
  ];
  const watched = (s: Awaited<ReturnType<typeof startSignedIn>>) =>
    s.userSocket().sent.filter((f) => f.type === "presence.watch").map((f) => [...f.userIds].sort());

  it("watches the direct partners in the list, and the open chat's members while it is open", async () => {
    const s = await startSignedIn({ list });
    s.userSocket().open();
    s.userSocket().deliver({ type: "ready", userId: ME.id, deviceId: "me-d", protocolVersion: 1 });
    await settle();
    expect(watched(s).at(-1)).toEqual(["ann", "bob"]);
    s.store.navigate({ name: "chat", id: "g1", thread: null, info: false });
    await settle();
    expect(watched(s).at(-1)).toEqual(["ann", "bob", "cy", "dee", "eve"]);
    s.store.navigate({ name: "list" });
    await s.store.chats.refreshList();
    expect(watched(s).at(-1)).toEqual(["ann", "bob"]);
  });

  it("shows status only once the server has presence and while we are online ourselves", async () => {
    const s = await startSignedIn({ list });
    s.userSocket().open();
    s.userSocket().deliver({ type: "ready", userId: ME.id, deviceId: "me-d", protocolVersion: 1 });
    expect(s.store.presenceOf("ann")).toBeUndefined();
    s.userSocket().deliver({ type: "presence", userId: "ann", status: "online", lastSeen: null });
    expect(s.store.state.caps.presence).toBe(true);
    expect(s.store.presenceOf("ann")).toEqual({ userId: "ann", status: "online", lastSeen: null });
    s.browser.fire("offline");
    expect(s.store.presenceOf("ann")).toBeUndefined();
  });

  it("fetches the watched people's status when the probe finds the presence endpoint", async () => {
    const s = await startSignedIn({ list });
    s.browser.server.on("GET /presence", (req) => ({
      json: { presence: (req.query.get("userIds") ?? "").split(",").map((userId) => ({ userId, status: "offline", lastSeen: 5 })) },
    }));
    await s.store.probe.run();
    await settle();
    expect(s.store.state.caps).toEqual({ presence: true, upload: false, push: false });
    expect(s.store.presenceOf("bob")).toBeUndefined(); // not online ourselves yet
    s.userSocket().open();
    s.userSocket().deliver({ type: "ready", userId: ME.id, deviceId: "me-d", protocolVersion: 1 });
    expect(s.store.presenceOf("bob")).toEqual({ userId: "bob", status: "offline", lastSeen: 5 });
  });
});

describe("threads", () => {
  it("opens with what the view holds, adds the server's replies, and takes live replies", async () => {
    const root = message("c1", 1, YOU.id, { thread: { replyCount: 1, lastReplySeq: 2, lastReplyAt: 2 } });
    const stored = new Map([["c1", [root, message("c1", 2, ME.id, { threadRootSeq: 1 })]]]);
    const s = await startSignedIn({ path: "/c/c1", stored });
    s.browser.server.on("GET /conversations/c1/messages", (req) =>
      req.query.get("thread") === "1"
        ? { json: { messages: [root, message("c1", 2, ME.id, { threadRootSeq: 1 }), message("c1", 3, YOU.id, { threadRootSeq: 1 })], hasMore: false } }
        : { json: { messages: [], hasMore: false } },
    );
    s.store.navigate({ name: "chat", id: "c1", thread: 1, info: false });
    expect(s.store.state.thread).toMatchObject({ rootSeq: 1, loading: true });
    expect(s.store.state.thread?.messages.map((m) => m.seq)).toEqual([1, 2]);
    await settle();
    expect(s.store.state.thread).toMatchObject({ loading: false });
    expect(s.store.state.thread?.messages.map((m) => m.seq)).toEqual([1, 2, 3]);
    const chat = s.chatSocket("c1");
    chat.open();
    chat.deliver({ type: "message", message: message("c1", 4, YOU.id, { threadRootSeq: 1 }) });
    chat.deliver({ type: "message", message: message("c1", 5, YOU.id) });
    expect(s.store.state.thread?.messages.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
    s.store.navigate({ name: "chat", id: "c1", thread: null, info: false });
    expect(s.store.state.thread).toBeNull();
  });
});
