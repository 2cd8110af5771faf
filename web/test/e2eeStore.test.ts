// E2EE conversations through the whole store (web/src/app/e2ee.ts with chats, the send queue and
// the connection), on the fake browser, with the real MLS engine and the in-memory Delivery
// Service: a device new to a group joins it, shows what it cannot read, decrypts what arrives,
// and seals what it sends, so the server never gets a body.
import { describe, expect, it } from "vitest";
import type { Message } from "../../protocol";
import { Api } from "../src/lib/api";
import { E2eeClient, type Sealed } from "../src/e2ee/client";
import { inPageLock } from "../src/e2ee/lock";
import { conversation, fakeBrowser, settle } from "./fakes";
import { FakeE2eeServer } from "./e2eeServer";
import { ME, YOU, routes, signIn, startSignedIn } from "./storeSetup";

/** Real work (WebCrypto, dynamic imports) happens off the microtask queue: poll until it is done. */
async function until<T>(what: string, check: () => T | undefined | false): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("E2EE conversations in the store", () => {
  it("joins a group it is new to, shows what it cannot read, decrypts what arrives and seals what it sends", async () => {
    const e2ee = new FakeE2eeServer();
    e2ee.conversation("c1", [YOU.id, ME.id]);
    // The other side's device, as the client module runs it.
    const lock = inPageLock();
    const other = new E2eeClient({
      userId: YOU.id,
      deviceId: "you-d",
      api: new Api(() => "t", () => undefined, e2ee.fetchFor(YOU.id, "you-d")),
      store: (() => {
        const m = new Map<string, unknown>();
        return { get: async (k: string) => structuredClone(m.get(k)), set: async (k: string, v: unknown) => void m.set(k, structuredClone(v)) };
      })(),
      exclusive: (fn) => lock("mls", fn),
      engine: () => import("../src/e2ee/engine"),
    });
    await other.create("c1", [ME.id]);
    const seal = async (body: string, clientMsgId: string) => e2ee.sendCiphertext("c1", YOU.id, "you-d", clientMsgId, await other.seal("c1", clientMsgId, { body }));
    const early = await seal("sent before you joined", "early");

    const browser = fakeBrowser("/");
    signIn(browser);
    routes(browser, [conversation("c1", [ME.id, YOU.id], { e2ee: true })], new Map());
    const sent: unknown[] = [];
    browser.server.on("POST /send", (req) => {
      sent.push(req.body);
      const b = req.body as { clientMsgId: string; ciphertext: string };
      return { status: 201, json: { message: e2ee.sendCiphertext("c1", ME.id, "me-d", b.clientMsgId, b.ciphertext) } };
    });
    // The E2EE routes go to the Delivery Service (GET .../messages too: it holds the sequence).
    const plain = browser.fetch;
    const mine = e2ee.fetchFor(ME.id, "me-d");
    browser.fetch = (path, init) => (/^\/(mls|devices|users\/[^/]+\/devices|conversations\/c1\/(mls|messages))/.test(path) ? mine(path, init) : plain(path, init));
    const s = await startSignedIn({ browser });

    // The conversation in the list loads the engine; this device had no key package, so it
    // joins by an external commit.
    const joined = await until("this device in the group", () => s.store.state.crypto.get("c1")?.status === "ready" && s.store.state.crypto.get("c1"));
    expect(e2ee.messages("c1").at(-1)).toMatchObject({ kind: "mls.commit", senderDeviceId: "me-d", seq: joined.joinedSeq });
    expect(s.store.shown(early)).toEqual({ kind: "before-join" });

    const hello = await seal("hello, encrypted", "hello");
    s.userSocket().deliver({ type: "message", message: hello });
    await until("the message decrypted", () => s.store.shown(hello).kind === "content");
    expect(s.store.shown(hello)).toMatchObject({ kind: "content", content: { v: 1, body: "hello, encrypted", from: YOU.id } });

    await s.store.sendText("c1", "a secret reply", null);
    const body = await until("the send", () => sent[0] as { ciphertext?: string; body?: string } | undefined);
    expect(body.body).toBeUndefined();
    expect(body.ciphertext).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(JSON.stringify(e2ee.messages("c1"))).not.toContain("a secret reply");
    const theirs = await other.catchUp("c1");
    expect([...theirs.plain.values()]).toContainEqual(expect.objectContaining({ v: 1, body: "a secret reply", from: ME.id }));
    // The sender shows its own text: MLS does not let it decrypt its own message.
    const stored: Message = e2ee.messages("c1").at(-1)!;
    await settle();
    expect(s.store.shown(stored)).toMatchObject({ kind: "content", content: { v: 1, body: "a secret reply" } });
  });

  it("edits, reactions and pins go sealed through the outbox; received ones fold into the message shown, count as no unread, are no preview, and local search finds the decrypted text", async () => {
    const e2ee = new FakeE2eeServer();
    e2ee.conversation("c1", [YOU.id, ME.id]);
    const lock = inPageLock();
    const otherStore = new Map<string, unknown>();
    const other = new E2eeClient({
      userId: YOU.id,
      deviceId: "you-d",
      api: new Api(() => "t", () => undefined, e2ee.fetchFor(YOU.id, "you-d")),
      store: { get: async (k: string) => structuredClone(otherStore.get(k)), set: async (k: string, v: unknown) => void otherStore.set(k, structuredClone(v)) },
      exclusive: (fn) => lock("mls", fn),
      engine: () => import("../src/e2ee/engine"),
    });
    await other.create("c1", [ME.id]);
    let n = 0;
    const theirs = async (sealed: Sealed) => {
      const id = `you-${++n}`;
      return e2ee.sendCiphertext("c1", YOU.id, "you-d", id, await other.seal("c1", id, sealed));
    };

    const browser = fakeBrowser("/");
    signIn(browser);
    const conv = conversation("c1", [ME.id, YOU.id], { e2ee: true });
    routes(browser, [conv], new Map());
    const sent: { clientMsgId: string; ciphertext?: string; body?: string; mentions?: string[]; replyToSeq?: number }[] = [];
    browser.server.on("POST /send", (req) => {
      const b = req.body as (typeof sent)[number];
      sent.push(b);
      return { status: 201, json: { message: e2ee.sendCiphertext("c1", ME.id, "me-d", b.clientMsgId, b.ciphertext!) } };
    });
    browser.server.on("POST /conversations/c1/actions", () => ({ status: 500, json: { error: { code: "internal", message: "not for E2EE edits" } } }));
    const plain = browser.fetch;
    const mine = e2ee.fetchFor(ME.id, "me-d");
    browser.fetch = (path, init) => (/^\/(mls|devices|users\/[^/]+\/devices|conversations\/c1\/(mls|messages))/.test(path) ? mine(path, init) : plain(path, init));
    const s = await startSignedIn({ browser, list: [conv] });
    await until("this device in the group", () => s.store.state.crypto.get("c1")?.status === "ready");

    // A message of theirs, then a reaction and a pin of theirs on it: the actions are no messages.
    const hello = await theirs({ body: "hello there" });
    const react = await theirs({ action: { type: "react", targetSeq: hello.seq, emoji: "👍", on: true } });
    const pin = await theirs({ action: { type: "pin", targetSeq: hello.seq, on: true } });
    s.userSocket().deliver({ type: "message", message: hello });
    s.userSocket().deliver({ type: "message", message: react });
    s.userSocket().deliver({ type: "message", message: pin });
    await until("the actions folded", () => s.store.decrypted(hello).pinned !== undefined);
    expect(s.store.decrypted(hello)).toMatchObject({ body: "hello there", reactions: [{ emoji: "👍", userIds: [YOU.id] }], pinned: { by: YOU.id } });
    // The pins list of the open chat: from what this device decrypted, the server cannot list them.
    s.store.navigate({ name: "chat", id: "c1", thread: null, info: false });
    await until("the chat open with the message", () => s.store.view("c1").messages.some((m) => m.seq === hello.seq));
    expect(s.store.pins("c1").map((m) => [m.seq, m.body])).toEqual([[hello.seq, "hello there"]]);
    expect(s.store.isEncryptedAction(react)).toBe(true);
    expect(s.store.isEncryptedAction(hello)).toBe(false);
    const c = s.store.state.conversations.get("c1")!;
    expect(c.unread).toBe(1);
    expect(c.lastMessage?.seq).toBe(hello.seq);
    // The server's copy of the conversation counts and previews the actions (it cannot tell): the
    // copy the list keeps does not.
    s.userSocket().deliver({ type: "conversation", conversation: { ...conv, lastSeq: pin.seq, lastMessage: pin, lastMessageAt: pin.createdAt, unread: 3 } });
    await settle();
    expect(s.store.state.conversations.get("c1")).toMatchObject({ unread: 1, lastMessage: { seq: hello.seq } });

    // A reply with a mention from here: sealed, the mention beside the ciphertext as well.
    await s.store.sendText("c1", "hi, you", null, { replyToSeq: hello.seq, mentions: [YOU.id] });
    const reply = await until("the reply sent", () => sent[0]);
    expect(reply).toMatchObject({ mentions: [YOU.id] });
    expect(reply.body).toBeUndefined();
    expect(reply.replyToSeq).toBeUndefined();

    // An edit from here: sealed and sent as a ciphertext through the outbox, never to POST .../actions.
    const replySeq = e2ee.messages("c1").at(-1)!.seq;
    await s.store.act("c1", { type: "edit", targetSeq: replySeq, body: "hi again, you" });
    const edit = await until("the edit sent", () => sent[1]);
    expect(edit.ciphertext).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(JSON.stringify(e2ee.messages("c1"))).not.toContain("hi again");
    const folded = await other.catchUp("c1");
    expect(folded.plain.get(replySeq)).toMatchObject({ body: "hi again, you", replyToSeq: hello.seq, mentions: [YOU.id], from: ME.id });
    const editedEntry = folded.plain.get(replySeq);
    expect(editedEntry && "editedAt" in editedEntry ? editedEntry.editedAt : undefined).toBeGreaterThan(0);
    // The outbox shows no pending bubble for an action.
    expect(s.store.state.outbox.filter((o) => o.action)).toEqual([]);

    const found = await s.store.e2ee.localSearch("there");
    expect(found.results.map((r) => ({ seq: r.message.seq, body: r.message.body }))).toEqual([{ seq: hello.seq, body: "hello there" }]);
    expect(found.results[0]!.snippet).toEqual([{ text: "hello ", match: false }, { text: "there", match: true }]);
    expect((await s.store.e2ee.localSearch("there", "other")).results).toEqual([]);
    // The search screen asks the device's index beside the server.
    browser.server.on("GET /search", () => ({ json: { results: [], cursor: null, hasMore: false } }));
    s.store.openSearch(null);
    s.store.typeSearch("there");
    await s.store.runSearch();
    expect(s.store.state.search?.results.map((r) => r.message.seq)).toEqual([hello.seq]);
    s.store.closeSearch();

    // Deleted for everyone (the server's event, live): the text leaves this device's store and index.
    const deleted = e2ee.deleteForEveryone("c1", YOU.id, "you-d", hello.seq);
    s.userSocket().deliver({ type: "message", message: deleted });
    const db = await browser.localStores.open(ME.id);
    await until("the text gone from the device", () => !JSON.stringify([...db.kv.values()]).includes("hello there"));
    expect((await s.store.e2ee.localSearch("there")).results).toEqual([]);
    expect(s.store.decrypted(deleted)).toEqual(deleted);

    // A forward from an E2EE chat: its text as decrypted, the mark sealed with it, to E2EE chats only.
    const news = await theirs({ body: "pass this on" });
    s.userSocket().deliver({ type: "message", message: news });
    await until("the news decrypted", () => s.store.decrypted(news).body === "pass this on");
    expect(s.store.forwardable(news)).toEqual({ e2ee: true });
    expect(s.store.forwardable(deleted)).toBeNull();
    const before = sent.length;
    await s.store.forward(news, ["c1"]);
    const forwarded = await until("the forward sent", () => sent[before]);
    expect(forwarded.ciphertext).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(forwarded).not.toHaveProperty("body");
    expect(forwarded).not.toHaveProperty("forwarded");
    const forwardSeq = e2ee.messages("c1").at(-1)!.seq;
    expect((await other.catchUp("c1")).plain.get(forwardSeq)).toMatchObject({ body: "pass this on", forwarded: true, from: ME.id });
  });
});
