// Message actions in E2EE conversations (docs/api.md, Message actions; docs/e2ee.md): edits,
// reactions, pins, replies, mentions and forwards sealed as `E2eePlaintext` with the real MLS
// engine on simulated devices, folded by each device into what it decrypted against the
// MLS-authenticated sender and the rules; the same result whatever order and path the messages
// come by; and the local search index that follows the decrypted text.
import { describe, expect, it } from "vitest";
import { ACTION_LIMITS, type Action, type Message } from "../../protocol";
import { Api } from "../src/lib/api";
import { E2eeClient, type ConversationCrypto, type Sealed } from "../src/e2ee/client";
import { foldAction, isAction, isContent, type PlainEntry } from "../src/e2ee/fold";
import { inPageLock } from "../src/e2ee/lock";
import { emptyIndex, indexMessage, matches, searchIndexes, searchKey, snippet, terms, type SearchIndex } from "../src/state/localSearch";
import { FakeE2eeServer, memoryStore, type Sim } from "./e2eeServer";


function sim(server: FakeE2eeServer, userId: string, deviceId = `${userId}-d1`, options: { store?: ReturnType<typeof memoryStore>; admins?: string[] } = {}): Sim {
  const store = options.store ?? memoryStore();
  const lock = inPageLock();
  let n = 0;
  const client = new E2eeClient({
    userId,
    deviceId,
    api: new Api(() => "token", () => undefined, server.fetchFor(userId, deviceId)),
    store,
    exclusive: (fn) => lock("mls", fn),
    engine: () => import("../src/e2ee/engine"),
    adminsOf: () => options.admins ?? [],
    newId: () => `${deviceId}-${++n}`,
    sleep: async () => undefined,
  });
  return { client, store, userId, deviceId };
}

let sends = 0;
/** Seals a message or an action and sends it as the send queue does. */
async function send(server: FakeE2eeServer, from: Sim, sealed: Sealed): Promise<Message> {
  const clientMsgId = `${from.deviceId}-send-${++sends}`;
  const ciphertext = await from.client.seal("c1", clientMsgId, sealed);
  return server.sendCiphertext("c1", from.userId, from.deviceId, clientMsgId, ciphertext);
}
const say = (server: FakeE2eeServer, from: Sim, body: string) => send(server, from, { body });
const act = (server: FakeE2eeServer, from: Sim, action: Action) => send(server, from, { action });

/** Ann, Bob and Cat in group c1, every device joined. */
async function group(options: { admins?: string[] } = {}) {
  const server = new FakeE2eeServer();
  server.conversation("c1", ["ann", "bob", "cat"]);
  const ann = sim(server, "ann", "ann-d1", options);
  const bob = sim(server, "bob", "bob-d1", options);
  const cat = sim(server, "cat", "cat-d1", options);
  await Promise.all([bob.client.ready(), cat.client.ready()]);
  await ann.client.create("c1", ["bob", "cat"]);
  await Promise.all([bob.client.catchUp("c1"), cat.client.catchUp("c1")]);
  return { server, ann, bob, cat };
}

function content(state: ConversationCrypto, seq: number) {
  const entry = state.plain.get(seq);
  if (!isContent(entry)) throw new Error(`seq ${seq} is not a message: ${JSON.stringify(entry)}`);
  return entry;
}

/** What a device shows, without the bookkeeping: each message's text and what actions made of it. */
function view(state: ConversationCrypto) {
  return [...state.plain.entries()].map(([seq, e]) => {
    if ("failed" in e) return { seq, failed: e.failed };
    if (isAction(e)) return { seq, action: e.action.type, applied: e.applied };
    const { at: _at, editedAt, pinned, ...rest } = e;
    return { seq, ...rest, ...(editedAt !== undefined ? { edited: true } : {}), ...(pinned ? { pinnedBy: pinned.by } : {}) };
  });
}

describe("E2EE message actions", () => {
  it("an edit, reactions and a pin travel sealed and every device folds them into the target", async () => {
    const { server, ann, bob, cat } = await group();
    const hello = await say(server, ann, "hello all");
    await act(server, bob, { type: "react", targetSeq: hello.seq, emoji: "👍", on: true });
    await act(server, cat, { type: "react", targetSeq: hello.seq, emoji: "👍", on: true });
    await act(server, cat, { type: "react", targetSeq: hello.seq, emoji: "🎉", on: true });
    await act(server, cat, { type: "react", targetSeq: hello.seq, emoji: "🎉", on: false });
    await act(server, bob, { type: "pin", targetSeq: hello.seq, on: true });
    const edit = await act(server, ann, { type: "edit", targetSeq: hello.seq, body: "hello everyone" });

    // Nothing of it is readable on the server.
    const stored = JSON.stringify(server.messages("c1"));
    for (const secret of ["hello", "👍", "🎉", "edit", "pin", "react"]) expect(stored).not.toContain(secret);
    expect(server.messages("c1").filter((m) => m.seq > hello.seq).every((m) => m.kind === "encrypted")).toBe(true);

    for (const device of [ann, bob, cat]) {
      const state = await device.client.catchUp("c1");
      expect(content(state, hello.seq)).toMatchObject({
        body: "hello everyone",
        from: "ann",
        editedAt: edit.createdAt,
        reactions: [{ emoji: "👍", userIds: ["bob", "cat"] }],
        pinned: { by: "bob" },
      });
      // The actions themselves are not messages: each is kept as an applied action.
      expect(view(state).filter((v) => "action" in v)).toEqual([
        { seq: hello.seq + 1, action: "react", applied: true },
        { seq: hello.seq + 2, action: "react", applied: true },
        { seq: hello.seq + 3, action: "react", applied: true },
        { seq: hello.seq + 4, action: "react", applied: true },
        { seq: hello.seq + 5, action: "pin", applied: true },
        { seq: hello.seq + 6, action: "edit", applied: true },
      ]);
    }
    // A reload (a new client on the same local store) shows the same, without the network.
    const again = sim(server, "bob", "bob-d1", { store: bob.store });
    expect(view(await again.client.stored("c1"))).toEqual(view(await bob.client.catchUp("c1")));
  });

  it("a reply, mentions and a forward mark travel inside the ciphertext", async () => {
    const { server, ann, bob } = await group();
    const q = await say(server, ann, "question?");
    const reply = await send(server, bob, { body: "answer", replyToSeq: q.seq, mentions: ["ann"] });
    const fwd = await send(server, bob, { body: "look at this", forwarded: true });
    expect(JSON.stringify(server.messages("c1"))).not.toContain("answer");
    const state = await ann.client.catchUp("c1");
    expect(content(state, reply.seq)).toMatchObject({ body: "answer", replyToSeq: q.seq, mentions: ["ann"], from: "bob" });
    expect(content(state, fwd.seq)).toMatchObject({ body: "look at this", forwarded: true });
    // The sender shows what it sealed.
    expect(content(await bob.client.catchUp("c1"), reply.seq)).toMatchObject({ replyToSeq: q.seq, mentions: ["ann"] });
  });

  it("ignores an edit from anyone but the sender, an edit after the window, and a delete from a member who is neither sender nor admin", async () => {
    const { server, ann, bob, cat } = await group({ admins: ["cat"] });
    const hello = await say(server, ann, "original");
    const other = await say(server, ann, "second");
    await act(server, bob, { type: "edit", targetSeq: hello.seq, body: "forged by bob" });
    const late = await act(server, ann, { type: "edit", targetSeq: other.seq, body: "too late" });
    late.createdAt = other.createdAt + ACTION_LIMITS.editWindowMs + 1;
    await act(server, bob, { type: "delete", targetSeq: hello.seq });
    for (const device of [ann, bob, cat]) {
      const state = await device.client.catchUp("c1");
      expect(content(state, hello.seq)).toMatchObject({ body: "original" });
      expect(content(state, hello.seq).editedAt).toBeUndefined();
      expect(content(state, other.seq)).toMatchObject({ body: "second" });
      expect(view(state).filter((v) => "action" in v).map((v) => ("applied" in v ? v.applied : null))).toEqual([false, false, false]);
    }
    // An admin (cat) may delete for everyone by an encrypted action: the text goes from every device.
    await act(server, cat, { type: "delete", targetSeq: hello.seq });
    for (const device of [ann, bob, cat]) {
      const state = await device.client.catchUp("c1");
      const { deletedAt, ...kept } = content(state, hello.seq);
      expect(kept).toEqual({ v: 1, from: "ann", at: hello.createdAt });
      expect(deletedAt).toBeGreaterThanOrEqual(hello.createdAt);
      // Neither the text nor any edit of it (refused ones included) stays on a device.
      expect(JSON.stringify([...device.store.map.values()])).not.toContain("original");
      expect(JSON.stringify([...device.store.map.values()])).not.toContain("forged by bob");
    }
    // Actions on a deleted message change nothing.
    await act(server, ann, { type: "react", targetSeq: hello.seq, emoji: "👍", on: true });
    expect(content(await bob.client.catchUp("c1"), hello.seq).reactions).toBeUndefined();
  });

  it("a message whose MLS sender is not the sender the server names is not shown, nor applied", async () => {
    const { server, ann, bob, cat } = await group();
    const hello = await say(server, ann, "mine");
    // Bob's device seals an edit of Ann's message, and the server (or anyone who can append to the
    // sequence) attributes it to Ann.
    const ciphertext = await bob.client.seal("c1", "forged", { action: { type: "edit", targetSeq: hello.seq, body: "put in her mouth" } });
    const forged = server.sendCiphertext("c1", "ann", "ann-d1", "forged-as-ann", ciphertext);
    const state = await cat.client.catchUp("c1");
    expect(state.plain.get(forged.seq)).toEqual({ failed: "its sender is not who the server says" });
    expect(content(state, hello.seq)).toMatchObject({ body: "mine" });
  });

  it("reads the MLS sender of a message sealed at an epoch the group has since left", async () => {
    const { server, ann, bob, cat } = await group();
    const target = await say(server, cat, "target");
    // Ann seals her edit, then a commit moves the group on before the edit reaches the server.
    const ciphertext = await ann.client.seal("c1", "late-edit", { action: { type: "edit", targetSeq: target.seq, body: "nope" } });
    const bob2 = sim(server, "bob", "bob-d2");
    await bob2.client.catchUp("c1");
    expect(server.messages("c1").at(-1)!.kind).toBe("mls.commit");
    const late = server.sendCiphertext("c1", "ann", "ann-d1", "late-edit", ciphertext);
    const state = await bob.client.catchUp("c1");
    // Decrypted with the earlier epoch's keys, from Ann's leaf of that epoch: not Cat's message to edit.
    expect(state.plain.get(late.seq)).toEqual({ action: { type: "edit", targetSeq: target.seq }, from: "ann", applied: false });
    expect(content(state, target.seq)).toMatchObject({ body: "target", from: "cat" });
  });

  it("folds in seq order whatever path and order the messages come by, and a later device gets the same", async () => {
    const { server, ann, bob, cat } = await group();
    const msgs: Message[] = [];
    msgs.push(await say(server, ann, "one"));
    msgs.push(await say(server, bob, "two"));
    msgs.push(await act(server, cat, { type: "react", targetSeq: msgs[0]!.seq, emoji: "❤️", on: true }));
    msgs.push(await act(server, ann, { type: "edit", targetSeq: msgs[0]!.seq, body: "one, edited" }));
    msgs.push(await act(server, ann, { type: "edit", targetSeq: msgs[0]!.seq, body: "one, edited twice" }));
    msgs.push(await act(server, bob, { type: "pin", targetSeq: msgs[1]!.seq, on: true }));
    msgs.push(await act(server, cat, { type: "react", targetSeq: msgs[0]!.seq, emoji: "❤️", on: false }));
    msgs.push(await act(server, bob, { type: "pin", targetSeq: msgs[1]!.seq, on: false }));
    msgs.push(await act(server, bob, { type: "pin", targetSeq: msgs[0]!.seq, on: true }));

    // Bob read by history (no hint); Cat got them live, backwards and twice over (a socket and a sync page).
    const byHistory = view(await bob.client.catchUp("c1"));
    const reversed = [...msgs].reverse();
    await cat.client.catchUp("c1", reversed.slice(0, 4));
    await cat.client.catchUp("c1", [...reversed, ...msgs]);
    const live = view(await cat.client.catchUp("c1"));
    expect(live).toEqual(byHistory);
    expect(view(await ann.client.catchUp("c1"))).toEqual(byHistory);
    const one = byHistory.find((v) => v.seq === msgs[0]!.seq);
    expect(one).toMatchObject({ body: "one, edited twice", edited: true, pinnedBy: "bob" });
    expect(one).not.toHaveProperty("reactions");
    expect(byHistory.find((v) => v.seq === msgs[1]!.seq)).not.toHaveProperty("pinnedBy");

    // Bob's second device joins now: it reads nothing from before (docs/e2ee.md), and what comes
    // after folds there as everywhere, including actions on what it can read.
    const bob2 = sim(server, "bob", "bob-d2");
    const joined = await bob2.client.catchUp("c1");
    expect(joined.plain.size).toBe(0);
    const three = await say(server, cat, "three");
    await act(server, ann, { type: "react", targetSeq: three.seq, emoji: "👍", on: true });
    await act(server, ann, { type: "react", targetSeq: msgs[0]!.seq, emoji: "👍", on: true });
    await act(server, cat, { type: "edit", targetSeq: three.seq, body: "three!" });
    const later = await bob2.client.catchUp("c1");
    expect(content(later, three.seq)).toMatchObject({ body: "three!", reactions: [{ emoji: "👍", userIds: ["ann"] }] });
    const first = await bob.client.catchUp("c1");
    expect(content(first, three.seq)).toEqual(content(later, three.seq));
    // An action on a message the later device cannot read is kept but changes nothing there.
    expect(later.plain.has(msgs[0]!.seq)).toBe(false);
    expect(content(first, msgs[0]!.seq).reactions).toEqual([{ emoji: "👍", userIds: ["ann"] }]);
  });

  it("the local search index follows decrypts, edits and deletes, on every device", async () => {
    const { server, ann, bob } = await group();
    const a = await say(server, ann, "Meet at the Café Müller at noon");
    const b = await say(server, bob, "café is closed, try the bakery");
    await say(server, ann, "ok");
    await bob.client.catchUp("c1");
    const index = async (device: Sim) => (await device.store.get(searchKey("c1"))) as SearchIndex;
    expect(searchIndexes([await index(bob)], "cafe").results.map((r) => r.message.seq)).toEqual([b.seq, a.seq]);
    // The sender's device indexes what it sealed once it is stored.
    await ann.client.catchUp("c1");
    expect(searchIndexes([await index(ann)], "müller").results.map((r) => r.message.seq)).toEqual([a.seq]);

    await act(server, ann, { type: "edit", targetSeq: a.seq, body: "Meet at the station" });
    await bob.client.catchUp("c1");
    expect(searchIndexes([await index(bob)], "müller").results).toEqual([]);
    const station = searchIndexes([await index(bob)], "stat");
    expect(station.results[0]!.message.editedAt).toBeGreaterThanOrEqual(a.createdAt);
    expect(station.results.map((r) => ({ seq: r.message.seq, body: r.message.body, senderId: r.message.senderId }))).toEqual([
      { seq: a.seq, body: "Meet at the station", senderId: "ann" },
    ]);
    expect(station.results[0]!.message).not.toHaveProperty("ciphertext");

    const event = server.deleteForEveryone("c1", "bob", "bob-d1", b.seq);
    await bob.client.catchUp("c1", [event]);
    expect(searchIndexes([await index(bob)], "bakery").results).toEqual([]);
    expect(JSON.stringify([...bob.store.map.values()])).not.toContain("bakery");

    // Deleted for Bob only: gone from his device's text and index, still found on Ann's.
    expect((await bob.client.forget("c1", [a.seq]))?.plain.get(a.seq)).toEqual({ failed: "deleted for me" });
    expect(searchIndexes([await index(bob)], "station").results).toEqual([]);
    expect(JSON.stringify([...bob.store.map.values()])).not.toContain("station");
    await ann.client.catchUp("c1");
    expect(searchIndexes([await index(ann)], "station").results.map((r) => r.message.seq)).toEqual([a.seq]);
  });
});

describe("foldAction, the rules alone", () => {
  const at = 1_000;
  const base = (): Record<number, PlainEntry> => ({ 1: { v: 1, body: "hi", from: "ann", at }, 2: { failed: "cannot decrypt" } });

  it("holds reactions to the per-member and per-message limits", () => {
    const plain = base();
    const emoji = ["😀", "😁", "😂", "🤣", "😃", "😄", "😅", "😆", "😉", "😊", "😋"];
    const results = emoji.map((e) => foldAction(plain, { type: "react", targetSeq: 1, emoji: e, on: true }, { userId: "bob", at, admin: false }));
    expect(results).toEqual([...Array(ACTION_LIMITS.reactionsPerUser).fill(true), false]);
    expect((plain[1] as { reactions: unknown[] }).reactions).toHaveLength(ACTION_LIMITS.reactionsPerUser);
    // Taking one not held, or adding one held, changes nothing and is no error.
    expect(foldAction(plain, { type: "react", targetSeq: 1, emoji: "😋", on: false }, { userId: "bob", at, admin: false })).toBe(true);
    expect((plain[1] as { reactions: unknown[] }).reactions).toHaveLength(ACTION_LIMITS.reactionsPerUser);
  });

  it("changes nothing on a message it cannot read or that does not exist", () => {
    const plain = base();
    const before = structuredClone(plain);
    expect(foldAction(plain, { type: "pin", targetSeq: 2, on: true }, { userId: "bob", at, admin: false })).toBe(false);
    expect(foldAction(plain, { type: "pin", targetSeq: 9, on: true }, { userId: "bob", at, admin: false })).toBe(false);
    expect(plain).toEqual(before);
  });

  it("refuses an edit of a message decrypted before actions existed (its sender was not kept)", () => {
    const plain: Record<number, PlainEntry> = { 1: { v: 1, body: "old" } };
    expect(foldAction(plain, { type: "edit", targetSeq: 1, body: "new" }, { userId: "ann", at, admin: false })).toBe(false);
    expect(foldAction(plain, { type: "react", targetSeq: 1, emoji: "👍", on: true }, { userId: "ann", at, admin: false })).toBe(true);
  });

  it("caps pins per conversation", () => {
    const plain: Record<number, PlainEntry> = {};
    for (let s = 1; s <= ACTION_LIMITS.pinsMax + 1; s++) plain[s] = { v: 1, body: `m${s}`, from: "ann", at };
    const pinned = Object.keys(plain).map((s) => foldAction(plain, { type: "pin", targetSeq: Number(s), on: true }, { userId: "bob", at, admin: false }));
    expect(pinned.filter((p) => p)).toHaveLength(ACTION_LIMITS.pinsMax);
    expect(pinned.at(-1)).toBe(false);
  });
});

describe("local search, the index alone", () => {
  const msg = (seq: number, body: string, conversationId = "c1", createdAt = seq): Message => ({ id: `m${seq}`, conversationId, seq, clientMsgId: `k${seq}`, senderId: "ann", senderDeviceId: "d", kind: "encrypted", body, media: [], threadRootSeq: null, createdAt });

  it("matches every word, the last as a prefix, case and accents ignored; newest first across conversations, in pages", () => {
    expect(terms("Crème BRÛLÉE, s'il-vous")).toEqual(["creme", "brulee", "s", "il", "vous"]);
    const one = emptyIndex();
    const two = emptyIndex();
    indexMessage(one, 1, msg(1, "The quick brown fox"));
    indexMessage(one, 2, msg(2, "a quick test"));
    indexMessage(two, 1, msg(1, "QUICK brownies", "c2", 5));
    expect(matches(one, "quick br")).toEqual([1]);
    expect(matches(one, "fox quick")).toEqual([1]);
    expect(matches(one, "   ")).toEqual([]);
    const all = searchIndexes([one, two], "quick", { limit: 2 });
    expect(all.results.map((r) => [r.message.conversationId, r.message.seq])).toEqual([["c2", 1], ["c1", 2]]);
    expect(all.hasMore).toBe(true);
    const next = searchIndexes([one, two], "quick", { limit: 2, before: all.cursor! });
    expect(next.results.map((r) => [r.message.conversationId, r.message.seq])).toEqual([["c1", 1]]);
    expect(next.hasMore).toBe(false);
    // A text replaced or removed leaves no word behind.
    indexMessage(one, 1, msg(1, "slow"));
    expect(matches(one, "fox")).toEqual([]);
    indexMessage(one, 1, null);
    expect(matches(one, "slow")).toEqual([]);
    expect(one.words["slow"]).toBeUndefined();
  });

  it("gives a snippet of at most 16 words around the match, the matched words marked", () => {
    const long = Array.from({ length: 40 }, (_, i) => `w${i}`).join(" ").replace("w20", "Needle");
    const parts = snippet(long, "need");
    expect(parts.filter((p) => p.match)).toEqual([{ text: "Needle", match: true }]);
    const text = parts.map((p) => p.text).join("");
    expect(text.startsWith("…w")).toBe(true);
    expect(text.endsWith("…")).toBe(true);
    expect(text.replaceAll("…", " ").split(/\s+/).filter((w) => w !== "")).toHaveLength(16);
    expect(snippet("hello world", "world")).toEqual([{ text: "hello ", match: false }, { text: "world", match: true }]);
  });
});
