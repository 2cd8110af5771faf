// The send path (sendQueue.ts over state/offlineOutbox.ts): stored before any attempt, delivered once
// over the live socket or by POST /send, and exactly once across offline spells, drops and reloads.
import { describe, expect, it } from "vitest";
import type { Message } from "../../protocol";
import { message, settle, type FakeAnswer, type FakeRequest } from "./fakes";
import { ME, startSignedIn, type Setup } from "./storeSetup";

/** POST /send as the server does it: one stored message per clientMsgId, a resend answered with it. */
function sendRoute(s: Setup, script: FakeAnswer[] = []): Map<string, Message> {
  const byClientId = new Map<string, Message>();
  s.browser.server.on("POST /send", (req: FakeRequest) => {
    const body = req.body as { conversationId: string; clientMsgId: string; body?: string };
    const existing = byClientId.get(body.clientMsgId);
    const step = script.shift();
    if (step && !existing) return step;
    const stored = existing ?? message(body.conversationId, byClientId.size + 1, ME.id, { clientMsgId: body.clientMsgId, body: body.body ?? null });
    byClientId.set(body.clientMsgId, stored);
    return { json: { message: stored } };
  });
  return byClientId;
}

const sends = (s: Setup) => s.browser.server.calls("POST /send").map((r) => (r.body as { clientMsgId: string }).clientMsgId);

describe("sending", () => {
  it("a message written offline is stored, waits, and goes exactly once when the browser is back online", async () => {
    const s = await startSignedIn();
    const stored = sendRoute(s);
    s.browser.fire("offline");
    await s.store.sendText("c1", "  hello  ", null);
    await settle();
    expect(s.store.state.outbox.map((i) => [i.body, i.status])).toEqual([["hello", "pending"]]);
    expect(sends(s)).toEqual([]);
    // In the account's local store before any attempt: it survives a reload.
    expect((await s.browser.localStores.open("me")).rows.size).toBe(1);

    s.browser.fire("online");
    await settle();
    expect(sends(s)).toEqual(["cm1"]);
    expect(s.store.state.outbox).toEqual([]);
    expect((await s.browser.localStores.open("me")).rows.size).toBe(0);
    expect(s.store.state.conversations.get("c1")?.lastMessage?.body).toBe("hello");

    await s.browser.clock.advance(120_000);
    s.browser.fire("online");
    await settle();
    expect(sends(s)).toEqual(["cm1"]);
    expect(stored.size).toBe(1);
  });

  it("after a reload mid-send, the item left 'sending' goes again with its clientMsgId and shows once", async () => {
    const first = await startSignedIn();
    const stored = sendRoute(first, ["network error"]);
    await first.store.sendText("c1", "once", null);
    await settle();
    // The server stored nothing; the answer was lost. Now the server has it and the page dies mid-send.
    const local = await first.browser.localStores.open("me");
    const [row] = await local.list();
    expect(row).toMatchObject({ clientMsgId: "cm1", status: "pending", attempts: 1 });
    stored.set("cm1", message("c1", 1, ME.id, { clientMsgId: "cm1", body: "once" }));
    await local.put({ ...row!, status: "sending", notBefore: 0 });

    // A reload: a new store on the same browser (the old page is gone; its timers never run).
    const second = await startSignedIn({ browser: first.browser, list: first.list });
    // The lost attempt, then the reload's: both with the clientMsgId the message got when written.
    expect(sends(second)).toEqual(["cm1", "cm1"]);
    expect(stored.size).toBe(1);
    expect(second.store.state.outbox).toEqual([]);
    expect(second.store.state.conversations.get("c1")?.lastSeq).toBe(1);
  });

  it("over the live conversation socket: a send frame settled by its ack; no answer means the same clientMsgId again", async () => {
    const s = await startSignedIn({ path: "/c/c1" });
    const stored = sendRoute(s);
    const chat = s.chatSocket("c1");
    chat.open();
    chat.deliver({ type: "ready", lastSeq: 0, protocolVersion: 1 });
    await s.store.sendText("c1", "live", null);
    await settle();
    expect(chat.sent.filter((f) => f.type === "send")).toEqual([{ type: "send", clientMsgId: "cm1", body: "live" }]);
    expect(sends(s)).toEqual([]);
    chat.deliver({ type: "ack", clientMsgId: "cm1", message: message("c1", 1, ME.id, { clientMsgId: "cm1", body: "live" }) });
    await settle();
    expect(s.store.state.outbox).toEqual([]);
    expect(s.store.view("c1").messages.map((m) => m.body)).toEqual(["live"]);

    // The next one gets no ack: after ten seconds it is pending again, and goes by REST once the chat is left.
    await s.store.sendText("c1", "lost", null);
    await settle();
    expect(chat.sent.filter((f) => f.type === "send").map((f) => f.clientMsgId)).toEqual(["cm1", "cm2"]);
    await s.browser.clock.advance(10_000);
    expect(s.store.state.outbox.map((i) => i.status)).toEqual(["pending"]);
    s.store.navigate({ name: "list" });
    await s.store.sendQueue.flush();
    await settle();
    expect(sends(s)).toEqual(["cm2"]);
    expect(stored.size).toBe(1);
    expect(s.store.state.outbox).toEqual([]);
  });

  it("a drop before the ack: after the socket is back the same clientMsgId goes again, and one message shows", async () => {
    const s = await startSignedIn({ path: "/c/c1" });
    const chat = s.chatSocket("c1");
    chat.open();
    chat.deliver({ type: "ready", lastSeq: 0, protocolVersion: 1 });
    await s.store.sendText("c1", "through", null);
    await settle();
    chat.drop();
    chat.open();
    chat.deliver({ type: "ready", lastSeq: 0, protocolVersion: 1 });
    await s.browser.clock.advance(10_000);
    const sent = chat.sent.filter((f) => f.type === "send").map((f) => f.clientMsgId);
    expect(sent).toEqual(["cm1", "cm1"]);
    const stored = message("c1", 1, ME.id, { clientMsgId: "cm1", body: "through" });
    chat.deliver({ type: "ack", clientMsgId: "cm1", message: stored });
    // The server answers a repeated clientMsgId with the same message; it shows once.
    chat.deliver({ type: "message", message: stored });
    await settle();
    expect(s.store.state.outbox).toEqual([]);
    expect(s.store.view("c1").messages.map((m) => m.clientMsgId)).toEqual(["cm1"]);
    await s.browser.clock.advance(60_000);
    expect(chat.sent.filter((f) => f.type === "send")).toHaveLength(2);
  });

  it("a refused message stays failed until retried, then goes with the same clientMsgId", async () => {
    const s = await startSignedIn();
    sendRoute(s, [{ status: 400, json: { error: { code: "invalid", message: "body too long" } } }]);
    await s.store.sendText("c1", "too long?", null);
    await settle();
    expect(s.store.state.outbox).toMatchObject([{ status: "failed", error: "body too long" }]);
    await s.browser.clock.advance(300_000);
    expect(sends(s)).toEqual(["cm1"]);
    await s.store.retry("cm1");
    await settle();
    expect(sends(s)).toEqual(["cm1", "cm1"]);
    expect(s.store.state.outbox).toEqual([]);
  });

  it("a 429 waits for its Retry-After, then sends; a discarded message never goes", async () => {
    const s = await startSignedIn();
    sendRoute(s, [{ status: 429, json: { error: { code: "rate_limited", message: "slow down" } }, headers: { "retry-after": "5" } }]);
    await s.store.sendText("c1", "later", null);
    await settle();
    expect(s.store.state.outbox).toMatchObject([{ status: "pending", error: "slow down" }]);
    await s.browser.clock.advance(4_000);
    expect(sends(s)).toEqual(["cm1"]);
    await s.browser.clock.advance(1_500);
    expect(sends(s)).toEqual(["cm1", "cm1"]);

    s.browser.fire("offline");
    await s.store.sendText("c1", "never", null);
    await s.store.discard("cm2");
    s.browser.fire("online");
    await settle();
    expect(sends(s)).toEqual(["cm1", "cm1"]);
    expect(s.store.state.outbox).toEqual([]);
  });

  it("media goes with its ids and caption, in a thread", async () => {
    const s = await startSignedIn();
    sendRoute(s);
    const ref = { id: "md1", contentType: "image/png", size: 10, name: "a.png" };
    await s.store.sendMedia("c1", [ref], " look ", 7);
    await settle();
    expect(s.browser.server.calls("POST /send")[0]?.body).toEqual({ conversationId: "c1", clientMsgId: "cm1", body: "look", mediaIds: ["md1"], threadRootSeq: 7 });
  });
});
