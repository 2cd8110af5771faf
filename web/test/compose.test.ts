// Replies, mentions, forwards, pins, jumps and search in the store (compose.ts, search.ts, chats.ts
// jumpTo, state/compose.ts): what a send carries, the text a mention inserts and which ids it
// sends, older pages loaded down to a jumped-to message, search asked once typing pauses and paged.
import { describe, expect, it } from "vitest";
import type { Message } from "../../protocol";
import type { SearchResult } from "../src/lib/api";
import { filterCandidates, insertMention, mentionAt, mentionParts, mentionsIn, quoteLine } from "../src/state/compose";
import { SEARCH_DEBOUNCE_MS } from "../src/app/search";
import { conversation, message, settle, user, type FakeRequest } from "./fakes";
import { ME, YOU, startSignedIn, type Setup } from "./storeSetup";

const CY = user("cy", "Cy Young");

/** POST /send stores each clientMsgId once, as the server does. */
function sendRoute(s: Setup): FakeRequest[] {
  let seq = 100;
  s.browser.server.on("POST /send", (req) => {
    const body = req.body as { conversationId: string; clientMsgId: string; body?: string };
    return { json: { message: message(body.conversationId, ++seq, ME.id, { clientMsgId: body.clientMsgId, body: body.body ?? null }) } };
  });
  return s.browser.server.calls("POST /send");
}

const sent = (s: Setup) => s.browser.server.calls("POST /send").map((r) => r.body);

describe("composing: the text", () => {
  it("a quote is a line of the message, or what its media is, or that it was deleted", () => {
    expect(quoteLine(message("c1", 1, YOU.id, { body: "\nfirst line\nsecond" }))).toBe("first line");
    expect(quoteLine(message("c1", 2, YOU.id, { body: null, kind: "media", media: [{ id: "m", contentType: "image/png", size: 1, name: "a.png" }] }))).toBe("Photo");
    expect(quoteLine(message("c1", 3, YOU.id, { body: null, kind: "media", media: [{ id: "m", contentType: "audio/webm", size: 1, name: "voice.webm" }] }))).toBe("Voice message");
    expect(quoteLine(message("c1", 4, YOU.id, { body: null, deletedAt: 9 }))).toBe("This message was deleted");
    expect(quoteLine(undefined)).toBe("Earlier message");
    expect(quoteLine(message("c1", 5, YOU.id, { body: "x".repeat(300) })).length).toBe(120);
  });

  it("an @ at a word's start opens a mention; picking inserts the name; only names still in the text are sent", () => {
    expect(mentionAt("hi @an", 6)).toEqual({ start: 3, query: "an" });
    expect(mentionAt("@", 1)).toEqual({ start: 0, query: "" });
    expect(mentionAt("mail me@example", 15)).toBeNull();
    expect(mentionAt("@ann\nmore", 9)).toBeNull();
    expect(mentionAt("no at here", 10)).toBeNull();

    const inserted = insertMention("hi @an and more", 3, 6, "Ann Adams");
    expect(inserted).toEqual({ text: "hi @Ann Adams  and more", caret: 14 });

    const ann = { userId: "ann", name: "Ann Adams" };
    const bob = { userId: "bob", name: "Bob" };
    expect(mentionsIn("hi @Ann Adams and @Bob", [ann, bob, ann])).toEqual(["ann", "bob"]);
    // Edited out after the pick, or only a longer word starting with the name: not sent.
    expect(mentionsIn("hi @Bobby", [ann, bob])).toEqual([]);
    expect(mentionsIn("hi Ann Adams", [ann])).toEqual([]);
  });

  it("members are filtered by a word of their name or their username; a mention of a name is marked in a body", () => {
    const members = [
      { userId: "ann", name: "Ann Adams", username: "ann_a" },
      { userId: "bob", name: "Bob Brown", username: "bobby" },
      { userId: "cy", name: "Cy Young", username: "cyy" },
    ];
    expect(filterCandidates(members, "").map((c) => c.userId)).toEqual(["ann", "bob", "cy"]);
    expect(filterCandidates(members, "br").map((c) => c.userId)).toEqual(["bob"]);
    expect(filterCandidates(members, "CYY").map((c) => c.userId)).toEqual(["cy"]);
    expect(filterCandidates(members, "zed")).toEqual([]);
    expect(mentionParts("hey @Me and @Meg, @Me", "Me")).toEqual([
      { text: "hey ", mention: false },
      { text: "@Me", mention: true },
      { text: " and @Meg, ", mention: false },
      { text: "@Me", mention: true },
    ]);
  });
});

describe("composing: the store", () => {
  it("a reply is kept per conversation until sent or cancelled, and the send carries replyToSeq and mentions", async () => {
    const group = conversation("g1", [ME.id, YOU.id, CY.id]);
    const s = await startSignedIn({ list: [group] });
    sendRoute(s);
    s.store.startReply("g1", 7);
    expect(s.store.replyTo("g1")).toBe(7);
    s.store.cancelReply("g1");
    expect(s.store.replyTo("g1")).toBeUndefined();

    await s.store.sendText("g1", "sure @You There", null, { replyToSeq: 7, mentions: [YOU.id] });
    await settle();
    expect(sent(s)).toEqual([{ conversationId: "g1", clientMsgId: "cm1", body: "sure @You There", replyToSeq: 7, mentions: [YOU.id] }]);
    // A plain send carries none of them.
    await s.store.sendText("g1", "plain", null);
    await settle();
    expect(sent(s)[1]).toEqual({ conversationId: "g1", clientMsgId: "cm2", body: "plain" });

    // A photo or a voice note takes the reply as its upload starts; a thread's composer has none.
    s.store.startReply("g1", 7);
    expect(s.store.takeReply("g1", 3)).toEqual({});
    expect(s.store.replyTo("g1")).toBe(7);
    const reply = s.store.takeReply("g1", null);
    expect(reply).toEqual({ replyToSeq: 7 });
    expect(s.store.replyTo("g1")).toBeUndefined();
    const photo = { id: "m1", contentType: "image/png", size: 10, name: "p.png" };
    await s.store.sendMedia("g1", [photo], "look", null, reply);
    await settle();
    expect(sent(s)[2]).toEqual({ conversationId: "g1", clientMsgId: "cm3", body: "look", mediaIds: ["m1"], replyToSeq: 7 });
  });

  it("the outbox keeps replyToSeq, mentions and forwarded through a reload before sending", async () => {
    const s = await startSignedIn();
    s.browser.fire("offline");
    await s.store.sendText("c1", "later", null, { replyToSeq: 3, mentions: [YOU.id] });
    await settle();
    const rows = [...(await s.browser.localStores.open("me")).rows.values()];
    expect(rows).toEqual([expect.objectContaining({ body: "later", replyToSeq: 3, mentions: [YOU.id] })]);
  });

  it("the mention candidates are the other members, filtered by what follows @", async () => {
    const group = conversation("g1", [ME.id, YOU.id, CY.id]);
    const s = await startSignedIn({ list: [group] });
    s.store.state.users.set(CY.id, CY);
    s.store.state.users.set(YOU.id, YOU);
    expect(s.store.mentionCandidates(group, "").map((c) => c.userId)).toEqual([YOU.id, CY.id]);
    expect(s.store.mentionCandidates(group, "you").map((c) => c.name)).toEqual(["You There", "Cy Young"]);
    expect(s.store.mentionCandidates(group, "cy")).toEqual([{ userId: CY.id, name: "Cy Young" }]);
  });

  it("forwarding sends the body and the original media ids to each conversation chosen, marked forwarded", async () => {
    const s = await startSignedIn({ list: [conversation("c1", [ME.id, YOU.id]), conversation("c2", [ME.id, CY.id]), conversation("g1", [ME.id, YOU.id, CY.id])] });
    sendRoute(s);
    const photo = { id: "media-1", contentType: "image/png", size: 10, name: "a.png", width: 4, height: 3 };
    await s.store.forward(message("c1", 4, YOU.id, { kind: "media", body: "look", media: [photo] }), ["c2", "g1"]);
    await settle();
    expect(sent(s)).toEqual([
      { conversationId: "c2", clientMsgId: "cm1", body: "look", mediaIds: ["media-1"], forwarded: true },
      { conversationId: "g1", clientMsgId: "cm2", body: "look", mediaIds: ["media-1"], forwarded: true },
    ]);
  });

  it("pins are fetched, and fetched again when a pin event or a delete of a pinned message arrives", async () => {
    const s = await startSignedIn({ path: "/c/c1" });
    let pinned: Message[] = [];
    s.browser.server.on("GET /conversations/c1/pins", () => ({ json: { messages: pinned } }));
    await s.store.loadPins("c1");
    expect(s.store.pins("c1")).toEqual([]);
    pinned = [message("c1", 1, YOU.id, { pinned: { by: YOU.id, at: 5 } })];
    s.store.chats.receive([message("c1", 1, YOU.id), message("c1", 2, YOU.id, { kind: "action", body: JSON.stringify({ type: "pin", targetSeq: 1, on: true }) })], "chat");
    await settle();
    expect(s.store.pins("c1").map((m) => m.seq)).toEqual([1]);
    // A reaction changes no pins: not fetched again.
    const fetches = s.browser.server.calls("GET /conversations/c1/pins").length;
    s.store.chats.receive([message("c1", 3, YOU.id, { kind: "action", body: JSON.stringify({ type: "react", targetSeq: 1, emoji: "👍", on: true }) })], "chat");
    await settle();
    expect(s.browser.server.calls("GET /conversations/c1/pins").length).toBe(fetches);
    pinned = [];
    s.store.chats.receive([message("c1", 4, YOU.id, { kind: "action", body: JSON.stringify({ type: "delete", targetSeq: 1 }) })], "chat");
    await settle();
    expect(s.store.pins("c1")).toEqual([]);
  });
});

describe("jumping to a message", () => {
  it("loads older pages down to the message, keeping the view contiguous, and marks the jump for the view", async () => {
    const all = Array.from({ length: 200 }, (_, i) => message("c1", i + 1, YOU.id));
    const s = await startSignedIn();
    s.browser.server.on("GET /conversations/c1/messages", (req) => {
      const before = Number(req.query.get("before") ?? "201");
      const limit = Number(req.query.get("limit") ?? "50");
      const page = all.filter((m) => m.seq < before).slice(-limit);
      return { json: { messages: page, hasMore: page.length > 0 && page[0]!.seq > 1 } };
    });
    s.store.navigate({ name: "chat", id: "c1", thread: null, info: false });
    await settle();
    expect(s.store.view("c1").messages[0]?.seq).toBe(151);

    await s.store.jumpTo("c1", 20);
    const view = s.store.view("c1");
    expect(view.messages.some((m) => m.seq === 20)).toBe(true);
    expect(view.messages.map((m) => m.seq)).toEqual(Array.from({ length: 200 - view.messages[0]!.seq + 1 }, (_, i) => view.messages[0]!.seq + i));
    expect(view.messages[0]!.seq).toBeLessThanOrEqual(20);
    const pages = s.browser.server.calls("GET /conversations/c1/messages").filter((r) => r.query.has("before"));
    expect(pages.map((r) => [r.query.get("before"), r.query.get("limit")])).toEqual([["151", "141"]]);
    expect(s.store.state.jump).toEqual({ conversationId: "c1", seq: 20 });
    s.store.jumped();
    expect(s.store.state.jump).toBeNull();
  });

  it("a message before what the member may read ends the jump with a notice", async () => {
    const s = await startSignedIn({ list: [conversation("c1", [ME.id, YOU.id], { joinedSeq: 10 })] });
    s.browser.server.on("GET /conversations/c1/messages", () => ({ json: { messages: [message("c1", 10, YOU.id), message("c1", 11, YOU.id)], hasMore: false } }));
    s.store.navigate({ name: "chat", id: "c1", thread: null, info: false });
    await settle();
    expect(s.store.view("c1").messages.length).toBe(2);
    await s.store.jumpTo("c1", 3);
    expect(s.store.state.jump).toBeNull();
    expect(s.store.state.notice?.text).toBe("That message is no longer available.");
  });

  it("opening a result in another conversation navigates there and reaches the message once its history is in", async () => {
    const s = await startSignedIn({ list: [conversation("c1", [ME.id, YOU.id])] });
    const all = Array.from({ length: 120 }, (_, i) => message("c1", i + 1, YOU.id));
    s.browser.server.on("GET /conversations/c1/messages", (req) => {
      const before = Number(req.query.get("before") ?? "121");
      const limit = Number(req.query.get("limit") ?? "50");
      const page = all.filter((m) => m.seq < before).slice(-limit);
      return { json: { messages: page, hasMore: page[0]!.seq > 1 } };
    });
    await s.store.openMessage(all[4]!);
    await settle();
    expect(s.store.state.route).toEqual({ name: "chat", id: "c1", thread: null, info: false });
    expect(s.store.view("c1").messages.some((m) => m.seq === 5)).toBe(true);
  });
});

describe("search", () => {
  const result = (conversationId: string, seq: number, createdAt = 1_000 + seq): SearchResult => ({
    message: message(conversationId, seq, YOU.id, { createdAt }),
    snippet: [{ text: "the ", match: false }, { text: "word", match: true }],
  });

  it("asks once typing pauses, drops answers to older queries, pages by the cursor", async () => {
    const s = await startSignedIn();
    s.browser.server.on("GET /search", (req) => {
      const q = req.query.get("q");
      const before = req.query.get("before");
      if (before === null) return { json: { results: [result("c1", 9), result("c1", 8)], cursor: "41", hasMore: true, q } };
      return { json: { results: [result("c1", 3)], cursor: "12", hasMore: false } };
    });
    s.store.openSearch(null);
    s.store.typeSearch("w");
    s.store.typeSearch("wo");
    s.store.typeSearch("wor");
    await settle();
    expect(s.browser.server.calls("GET /search")).toEqual([]);
    expect(s.store.state.search?.loading).toBe(true);
    await s.browser.clock.advance(SEARCH_DEBOUNCE_MS);
    expect(s.browser.server.calls("GET /search").map((r) => r.query.get("q"))).toEqual(["wor"]);
    expect(s.store.state.search).toMatchObject({ ran: "wor", cursor: "41", hasMore: true, loading: false });
    expect(s.store.state.search?.results.map((r) => r.message.seq)).toEqual([9, 8]);

    await s.store.moreResults();
    expect(s.browser.server.calls("GET /search").at(-1)?.query.get("before")).toBe("41");
    expect(s.store.state.search?.results.map((r) => r.message.seq)).toEqual([9, 8, 3]);
    expect(s.store.state.search?.hasMore).toBe(false);

    // Emptied: nothing shown, nothing asked.
    s.store.typeSearch("  ");
    await s.browser.clock.advance(SEARCH_DEBOUNCE_MS);
    expect(s.store.state.search?.results).toEqual([]);
    expect(s.browser.server.calls("GET /search").length).toBe(2);
  });

  it("a search in one conversation sends its id; an answer for a query typed over is dropped", async () => {
    const s = await startSignedIn();
    let answer: (() => void) | null = null;
    s.browser.server.on("GET /search", (req) =>
      req.query.get("q") === "old"
        ? new Promise((resolve) => {
            answer = () => resolve({ json: { results: [result("c1", 1)], cursor: "1", hasMore: false } });
          })
        : { json: { results: [result("c1", 2)], cursor: "2", hasMore: false } },
    );
    s.store.openSearch("c1");
    s.store.typeSearch("old");
    await s.browser.clock.advance(SEARCH_DEBOUNCE_MS);
    s.store.typeSearch("new");
    await s.browser.clock.advance(SEARCH_DEBOUNCE_MS);
    answer!();
    await settle();
    expect(s.browser.server.calls("GET /search").map((r) => [r.query.get("q"), r.query.get("conversationId")])).toEqual([["old", "c1"], ["new", "c1"]]);
    expect(s.store.state.search?.results.map((r) => r.message.seq)).toEqual([2]);
    s.store.closeSearch();
    expect(s.store.state.search).toBeNull();
  });

  it("a local search port's results (E2EE conversations) are merged into the first page, newest first", async () => {
    const local = { localSearch: async (query: string, conversationId?: string) => (query === "word" && conversationId === undefined ? [result("e1", 5, 5_000)] : []) };
    const { AppStore } = await import("../src/app/appStore");
    const s = await startSignedIn();
    const store = new AppStore(s.browser, { localSearch: local });
    await store.start();
    await settle();
    s.browser.server.on("GET /search", () => ({ json: { results: [result("c1", 9, 9_000), result("c1", 2, 2_000)], cursor: "3", hasMore: false } }));
    store.openSearch(null);
    store.typeSearch("word");
    await s.browser.clock.advance(SEARCH_DEBOUNCE_MS);
    expect(store.state.search?.results.map((r) => `${r.message.conversationId}:${r.message.seq}`)).toEqual(["c1:9", "e1:5", "c1:2"]);
  });
});
