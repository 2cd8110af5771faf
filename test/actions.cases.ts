// Message actions through the real Worker, objects, D1 and R2 (docs/api.md "Message actions"):
// reply, mentions, forward, edit, delete for everyone and for me, reactions, pins and search. Each
// reaches another member's socket live and a device that was away by `since=` sync, in order;
// permissions and bad input are refused with nothing changed; a delete erases the body and media
// from the conversation's SQLite, D1 (and its search index) and R2. Registered by test/api.test.ts
// (each test file starts a runtime of its own).
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { ActionEvent, Conversation, Message } from "../protocol";
import { conversationStub } from "../kernel/objects";
import type { ConversationDO } from "../durable-objects/conversation/ConversationDO";
import {
  d1Of,
  call,
  ciphertextFor,
  connect,
  direct,
  expectError,
  group,
  inD1,
  json,
  login,
  openConversation,
  PNG,
  register,
  sendRest,
  syncAll,
  unique,
  upload,
  type Session,
} from "./helpers";

const act = (s: Session, conversationId: string, action: unknown, clientMsgId = unique("a")) =>
  call(`/conversations/${conversationId}/actions`, { token: s.token, body: { clientMsgId, action } });

async function acted(s: Session, conversationId: string, action: unknown, expected = 201): Promise<Message> {
  return (await json<{ message: Message }>(`/conversations/${conversationId}/actions`, { token: s.token, body: { clientMsgId: unique("a"), action } }, expected)).message;
}

const history = async (s: Session, conversationId: string) =>
  (await json<{ messages: Message[] }>(`/conversations/${conversationId}/messages?limit=500`, { token: s.token })).messages;

const messageAt = async (s: Session, conversationId: string, seq: number) => (await history(s, conversationId)).find((m) => m.seq === seq);

const lastSeqOf = async (s: Session, conversationId: string) =>
  (await json<{ conversation: { lastSeq: number } }>(`/conversations/${conversationId}`, { token: s.token })).conversation.lastSeq;

const uploadPng = (s: Session) => upload(s, PNG, "image/png", `${unique("p")}.png`);

const eventOf = (m: Message) => JSON.parse(m.body!) as ActionEvent;

async function search(s: Session, q: string, conversationId?: string) {
  const query = new URLSearchParams({ q, ...(conversationId ? { conversationId } : {}) });
  return json<{ results: { message: Message; snippet: { text: string; match: boolean }[] }[]; cursor: string | null; hasMore: boolean }>(
    `/search?${query}`,
    { token: s.token },
  );
}

export function messageActionTests(): void {
  describe("message actions", () => {
    it("a reply names the message it quotes; mentions name members; bad ones change nothing", async () => {
      const [a, b, c] = [await register(), await register(), await register()];
      const g = await group(a, [b]);
      const root = (await sendRest(a, g.id, "question")).message;
      const reply = await json<{ message: Message }>("/send", { token: b.token, body: { conversationId: g.id, clientMsgId: unique("m"), body: "answer", replyToSeq: root.seq, mentions: [a.user.id] } }, 201);
      expect(reply.message).toMatchObject({ replyToSeq: root.seq, mentions: [a.user.id], kind: "text" });
      expect(await messageAt(a, g.id, reply.message.seq)).toMatchObject({ replyToSeq: root.seq, mentions: [a.user.id] });
      const before = await lastSeqOf(a, g.id);
      for (const extra of [{ replyToSeq: 999 }, { replyToSeq: 1 } /* the system message */, { mentions: [c.user.id] }, { mentions: [a.user.id, a.user.id] }, { replyToSeq: 0 }, { mentions: [] }]) {
        await expectError(await call("/send", { token: b.token, body: { conversationId: g.id, clientMsgId: unique("m"), body: "x", ...extra } }), 400, "bad_request");
      }
      expect(await lastSeqOf(a, g.id)).toBe(before);
    });

    it("an edit by its sender reaches the other member live and in history; anyone else is refused", async () => {
      const [a, b, stranger] = [await register(), await register(), await register()];
      const d = await direct(a, b);
      const original = (await sendRest(a, d.id, "helo wrold")).message;
      const watching = await openConversation(b, d.id);
      const edit = await acted(a, d.id, { type: "edit", targetSeq: original.seq, body: "hello world" });
      expect(edit).toMatchObject({ kind: "action", seq: original.seq + 1, senderId: a.user.id });
      expect(eventOf(edit)).toEqual({ type: "edit", targetSeq: original.seq, body: "hello world" });
      const live = await watching.next("message", (f) => f.message?.seq === edit.seq);
      expect(live.message!.kind).toBe("action");
      watching.close();

      const target = await messageAt(b, d.id, original.seq);
      expect(target).toMatchObject({ body: "hello world", kind: "text" });
      expect(target!.editedAt).toBe(edit.createdAt);
      expect(target!.revisedSeq).toBe(edit.seq);

      const lastSeq = await lastSeqOf(a, d.id);
      await expectError(await act(b, d.id, { type: "edit", targetSeq: original.seq, body: "mine now" }), 403, "forbidden");
      await expectError(await act(stranger, d.id, { type: "edit", targetSeq: original.seq, body: "x" }), 404, "not_found");
      await expectError(await act(a, d.id, { type: "edit", targetSeq: original.seq, body: "" }), 400, "bad_request");
      await expectError(await act(a, d.id, { type: "edit", targetSeq: original.seq, body: "x", extra: 1 }), 400, "bad_request");
      await expectError(await act(a, d.id, { type: "edit", targetSeq: 1, body: "x" }), 400, "bad_request");
      await expectError(await act(a, d.id, { type: "edit", targetSeq: edit.seq, body: "x" }), 400, "bad_request");
      await expectError(await act(a, d.id, { type: "shout", targetSeq: original.seq }), 400, "bad_request");
      await expectError(await call(`/conversations/${d.id}/actions`, { token: a.token, body: { action: { type: "edit", targetSeq: original.seq, body: "x" } } }), 400, "bad_request");
      expect(await lastSeqOf(a, d.id)).toBe(lastSeq);
      expect((await messageAt(a, d.id, original.seq))!.body).toBe("hello world");

      // Idempotent: the same clientMsgId answers the stored event and appends nothing.
      const clientMsgId = unique("a");
      const first = await json<{ message: Message }>(`/conversations/${d.id}/actions`, { token: a.token, body: { clientMsgId, action: { type: "edit", targetSeq: original.seq, body: "third" } } }, 201);
      const again = await json<{ message: Message }>(`/conversations/${d.id}/actions`, { token: a.token, body: { clientMsgId, action: { type: "edit", targetSeq: original.seq, body: "fourth" } } }, 200);
      expect(again.message).toEqual(first.message);
      expect((await messageAt(a, d.id, original.seq))!.body).toBe("third");
    });

    it("actions on a conversation socket are acked, and a device that was away syncs them in order", async () => {
      const [a, b] = [await register(), await register()];
      const d = await direct(a, b);
      const target = (await sendRest(b, d.id, "react to me")).message;
      const socket = await openConversation(a, d.id);
      socket.send({ type: "action", clientMsgId: "r1", action: { type: "react", targetSeq: target.seq, emoji: "👍", on: true } });
      const ack = await socket.next("ack", (f) => f.clientMsgId === "r1");
      expect(ack.message!.kind).toBe("action");
      socket.send({ type: "action", clientMsgId: "r1", action: { type: "react", targetSeq: target.seq, emoji: "👍", on: true } });
      await socket.until((frames) => frames.filter((f) => f.type === "ack" && f.clientMsgId === "r1").length === 2, "a second ack");
      socket.send({ type: "action", clientMsgId: "bad", action: { type: "react", targetSeq: target.seq, emoji: "thumbs", on: true } });
      expect((await socket.next("error", (f) => f.ref === "bad")).code).toBe("bad_request");
      socket.send({ type: "action", clientMsgId: "no", action: { type: "edit", targetSeq: target.seq, body: "not mine" } });
      expect((await socket.next("error", (f) => f.ref === "no")).code).toBe("forbidden");
      socket.send({ type: "action", clientMsgId: "pin", action: { type: "pin", targetSeq: target.seq, on: true } });
      const pin = await socket.next("ack", (f) => f.clientMsgId === "pin");
      socket.close();

      // b's second device logs in later and syncs everything, events after their targets.
      const laptop = await login(b.user.username, "laptop");
      await inD1(d.id);
      const synced = (await syncAll(laptop)).filter((m) => m.conversationId === d.id);
      expect(synced.map((m) => m.seq)).toEqual([...synced.map((m) => m.seq)].sort((x, y) => x - y));
      const events = synced.filter((m) => m.kind === "action").map(eventOf);
      expect(events).toEqual([
        { type: "react", targetSeq: target.seq, emoji: "👍", on: true },
        { type: "pin", targetSeq: target.seq, on: true },
      ]);
      // The target as it now is, from D1 as from the object.
      const fromSync = synced.find((m) => m.seq === target.seq)!;
      expect(fromSync.reactions).toEqual([{ emoji: "👍", userIds: [a.user.id] }]);
      expect(fromSync.pinned).toEqual({ by: a.user.id, at: pin.message!.createdAt });
      expect(fromSync.revisedSeq).toBe(pin.message!.seq);
      expect(await messageAt(laptop, d.id, target.seq)).toEqual(fromSync);
      // An action is no unread message, no lastMessage and no list order.
      const listed = (await json<{ conversations: { id: string; unread: number; lastMessage: Message | null }[] }>("/conversations", { token: b.token })).conversations.find((x) => x.id === d.id)!;
      expect(listed.lastMessage?.seq).toBe(target.seq);
      const view = (await json<{ conversation: { unread: number; lastMessage: Message | null } }>(`/conversations/${d.id}`, { token: b.token })).conversation;
      expect(view.lastMessage?.seq).toBe(target.seq);
      expect(view.unread).toBe(listed.unread);
    });

    it("reactions: any emoji, several per member, who reacted is listed, off takes one away", async () => {
      const [a, b, c] = [await register(), await register(), await register()];
      const g = await group(a, [b, c]);
      const m = (await sendRest(a, g.id, "party")).message;
      // a watches on a user socket only: the events come through the fan-out.
      const userSocket = await connect("/ws", a.token);
      await userSocket.next("ready");
      await acted(b, g.id, { type: "react", targetSeq: m.seq, emoji: "🎉", on: true });
      await acted(c, g.id, { type: "react", targetSeq: m.seq, emoji: "🎉", on: true });
      await acted(b, g.id, { type: "react", targetSeq: m.seq, emoji: "👨‍👩‍👧", on: true });
      await acted(c, g.id, { type: "react", targetSeq: m.seq, emoji: "🇫🇷", on: true });
      expect((await messageAt(a, g.id, m.seq))!.reactions).toEqual([
        { emoji: "🎉", userIds: [b.user.id, c.user.id] },
        { emoji: "👨‍👩‍👧", userIds: [b.user.id] },
        { emoji: "🇫🇷", userIds: [c.user.id] },
      ]);
      await userSocket.until((frames) => frames.filter((f) => f.type === "message" && f.message?.kind === "action").length === 4, "four reactions live");
      const live = userSocket.messages().filter((x) => x.kind === "action");
      expect(live.map((x) => [x.senderId, eventOf(x)])).toEqual([
        [b.user.id, { type: "react", targetSeq: m.seq, emoji: "🎉", on: true }],
        [c.user.id, { type: "react", targetSeq: m.seq, emoji: "🎉", on: true }],
        [b.user.id, { type: "react", targetSeq: m.seq, emoji: "👨‍👩‍👧", on: true }],
        [c.user.id, { type: "react", targetSeq: m.seq, emoji: "🇫🇷", on: true }],
      ]);
      userSocket.close();
      await acted(b, g.id, { type: "react", targetSeq: m.seq, emoji: "🎉", on: false });
      await acted(c, g.id, { type: "react", targetSeq: m.seq, emoji: "🇫🇷", on: false });
      expect((await messageAt(a, g.id, m.seq))!.reactions).toEqual([
        { emoji: "🎉", userIds: [c.user.id] },
        { emoji: "👨‍👩‍👧", userIds: [b.user.id] },
      ]);
      const lastSeq = await lastSeqOf(a, g.id);
      for (const emoji of ["a", "👍👍", "👍 ", "", "1", "x".repeat(40)]) {
        await expectError(await act(b, g.id, { type: "react", targetSeq: m.seq, emoji, on: true }), 400, "bad_request");
      }
      expect(await lastSeqOf(a, g.id)).toBe(lastSeq);
    });

    it("pins: any member pins and unpins; the list is the latest pin first", async () => {
      const [a, b, stranger] = [await register(), await register(), await register()];
      const g = await group(a, [b]);
      const one = (await sendRest(a, g.id, "one")).message;
      const two = (await sendRest(b, g.id, "two")).message;
      await acted(b, g.id, { type: "pin", targetSeq: one.seq, on: true });
      await acted(a, g.id, { type: "pin", targetSeq: two.seq, on: true });
      const pins = await json<{ messages: Message[] }>(`/conversations/${g.id}/pins`, { token: a.token });
      expect(pins.messages.map((m) => m.seq)).toEqual([two.seq, one.seq]);
      expect(pins.messages[1]!.pinned!.by).toBe(b.user.id);
      await acted(a, g.id, { type: "pin", targetSeq: one.seq, on: false });
      expect((await json<{ messages: Message[] }>(`/conversations/${g.id}/pins`, { token: b.token })).messages.map((m) => m.seq)).toEqual([two.seq]);
      expect((await messageAt(a, g.id, one.seq))!.pinned).toBeUndefined();
      await expectError(await call(`/conversations/${g.id}/pins`, { token: stranger.token }), 404, "not_found");
    });

    it("delete for everyone: the sender or a group admin; the message stays as deleted, live and by sync", async () => {
      const [admin, b, c] = [await register(), await register(), await register()];
      const g = await group(admin, [b, c]);
      const bs = (await sendRest(b, g.id, "from b")).message;
      const cs = (await sendRest(c, g.id, "from c")).message;
      const watching = await openConversation(c, g.id);
      const lastSeq = await lastSeqOf(admin, g.id);
      await expectError(await act(c, g.id, { type: "delete", targetSeq: bs.seq }), 403, "forbidden");
      expect(await lastSeqOf(admin, g.id)).toBe(lastSeq);
      const byAdmin = await acted(admin, g.id, { type: "delete", targetSeq: bs.seq });
      expect(eventOf(byAdmin)).toEqual({ type: "delete", targetSeq: bs.seq });
      await watching.next("message", (f) => f.message?.seq === byAdmin.seq);
      await acted(c, g.id, { type: "delete", targetSeq: cs.seq });
      await expectError(await act(c, g.id, { type: "delete", targetSeq: cs.seq }), 409, "conflict");
      await expectError(await act(b, g.id, { type: "react", targetSeq: cs.seq, emoji: "👍", on: true }), 409, "conflict");
      watching.close();
      for (const seq of [bs.seq, cs.seq]) {
        const m = (await messageAt(b, g.id, seq))!;
        expect(m).toMatchObject({ body: null, media: [] });
        expect(m.deletedAt).toBeGreaterThan(0);
      }
      await inD1(g.id);
      const synced = (await syncAll(b)).filter((m) => m.conversationId === g.id);
      expect(synced.find((m) => m.seq === bs.seq)).toMatchObject({ body: null, media: [] });
      expect(synced.find((m) => m.seq === bs.seq)!.deletedAt).toBeGreaterThan(0);
      expect(synced.find((m) => m.seq === bs.seq)!.revisedSeq).toBe(byAdmin.seq);
      // Direct conversations have no admins: only the sender deletes.
      const [x, y] = [await register(), await register()];
      const d = await direct(x, y);
      const ys = (await sendRest(y, d.id, "mine")).message;
      await expectError(await act(x, d.id, { type: "delete", targetSeq: ys.seq }), 403, "forbidden");
    });

    it("delete for everyone erases the body, its edits and its media from the object, D1, the search index and R2", async () => {
      const [a, b] = [await register(), await register()];
      const d = await direct(a, b);
      const photo = await uploadPng(a);
      const word = unique("zebra").replace(/_/g, "");
      const sent = await json<{ message: Message }>("/send", { token: a.token, body: { conversationId: d.id, clientMsgId: unique("m"), body: `secret ${word}`, mediaIds: [photo] } }, 201);
      const seq = sent.message.seq;
      const edit = await acted(a, d.id, { type: "edit", targetSeq: seq, body: `secret ${word} edited` });
      await inD1(d.id);
      expect((await search(b, word)).results.map((r) => r.message.seq)).toEqual([seq]);
      const key = `media/${photo}`;
      expect(await env.MEDIA.head(key)).not.toBeNull();

      await acted(a, d.id, { type: "delete", targetSeq: seq });
      // The object's own SQLite, at once.
      await runInDurableObject(conversationStub(env, d.id), (_instance: ConversationDO, state: DurableObjectState) => {
        const rows = state.storage.sql.exec<{ seq: number; body: string | null; media: string; payload: string | null }>("SELECT seq, body, media, payload FROM messages").toArray();
        const dump = JSON.stringify(rows);
        expect(dump).not.toContain(word);
        expect(dump).not.toContain(photo);
        const target = rows.find((r) => r.seq === seq)!;
        expect(target).toMatchObject({ body: null, media: "[]", payload: null });
        expect(JSON.parse(rows.find((r) => r.seq === edit.seq)!.body!)).toEqual({ type: "edit", targetSeq: seq });
      });
      // D1: the rows, the search index (its own vocabulary too) and the media records; R2: the bytes.
      await inD1(d.id);
      const d1Rows = await d1Of(d.id).prepare("SELECT seq, body, media FROM messages WHERE conversation_id = ?").bind(d.id).all<{ seq: number; body: string | null; media: string }>();
      expect(JSON.stringify(d1Rows.results)).not.toContain(word);
      expect(JSON.stringify(d1Rows.results)).not.toContain(photo);
      expect((await search(a, word)).results).toEqual([]);
      expect(await d1Of(d.id).prepare("SELECT count(*) AS n FROM message_search WHERE message_search MATCH ?").bind(`"${word}"`).first<{ n: number }>()).toEqual({ n: 0 });
      await d1Of(d.id).exec("CREATE VIRTUAL TABLE IF NOT EXISTS message_search_terms USING fts5vocab(message_search, row)");
      expect(await d1Of(d.id).prepare("SELECT count(*) AS n FROM message_search_terms WHERE term = ?").bind(word.toLowerCase()).first<{ n: number }>()).toEqual({ n: 0 });
      expect(await d1Of(photo).prepare("SELECT count(*) AS n FROM media WHERE id = ?").bind(photo).first<{ n: number }>()).toEqual({ n: 0 });
      expect(await d1Of(photo).prepare("SELECT count(*) AS n FROM media_shares WHERE media_id = ?").bind(photo).first<{ n: number }>()).toEqual({ n: 0 });
      expect(await env.MEDIA.head(key)).toBeNull();
      await expectError(await call(`/media/${photo}/info`, { token: b.token }), 404, "not_found");
    });

    it("forward sends another conversation's media without uploading it again; deleting the original keeps the forward", async () => {
      const [a, b, c] = [await register(), await register(), await register()];
      const ab = await direct(a, b);
      const bc = await direct(b, c);
      const photo = await uploadPng(a);
      const original = await json<{ message: Message }>("/send", { token: a.token, body: { conversationId: ab.id, clientMsgId: unique("m"), body: "look", mediaIds: [photo] } }, 201);
      // Without `forwarded` only the uploader may send an item.
      await expectError(await call("/send", { token: b.token, body: { conversationId: bc.id, clientMsgId: unique("m"), mediaIds: [photo] } }), 400, "bad_request");
      // A stranger to the item cannot forward it either.
      const cd = await direct(c, a);
      await expectError(await call("/send", { token: c.token, body: { conversationId: cd.id, clientMsgId: unique("m"), mediaIds: [photo], forwarded: true } }), 400, "bad_request");
      const forward = await json<{ message: Message }>("/send", { token: b.token, body: { conversationId: bc.id, clientMsgId: unique("m"), body: "look", mediaIds: [photo], forwarded: true } }, 201);
      expect(forward.message).toMatchObject({ forwarded: true, kind: "media", media: [original.message.media[0]] });
      expect((await call(`/media/${photo}/info`, { token: c.token })).status).toBe(200);

      await acted(a, ab.id, { type: "delete", targetSeq: original.message.seq });
      await inD1(ab.id);
      // The original's share is gone; the forward still holds the item, so its bytes stay.
      expect(await d1Of(photo).prepare("SELECT conversation_id FROM media_shares WHERE media_id = ?").bind(photo).all()).toMatchObject({ results: [{ conversation_id: bc.id }] });
      expect(await env.MEDIA.head(`media/${photo}`)).not.toBeNull();
      expect((await call(`/media/${photo}/info`, { token: c.token })).status).toBe(200);
    });

    it("delete for me hides a message from the caller's devices only, live, in history and in sync", async () => {
      const [a, b, stranger] = [await register(), await register(), await register()];
      const d = await direct(a, b);
      const m = (await sendRest(b, d.id, "forget this")).message;
      const phone = await login(a.user.username, "phone");
      const phoneSocket = await connect("/ws", phone.token);
      await phoneSocket.next("ready");
      const convSocket = await openConversation(a, d.id);
      const hidden = await json<{ seqs: number[] }>(`/conversations/${d.id}/hidden`, { token: a.token, body: { seqs: [m.seq, m.seq] } });
      expect(hidden.seqs).toEqual([m.seq]);
      expect((await convSocket.next("hidden")).seqs).toEqual([m.seq]);
      expect(await phoneSocket.next("hidden")).toMatchObject({ conversationId: d.id, seqs: [m.seq] });
      convSocket.close();
      phoneSocket.close();

      expect(await messageAt(a, d.id, m.seq)).toMatchObject({ seq: m.seq, body: null, media: [], hidden: true });
      expect(await messageAt(b, d.id, m.seq)).toMatchObject({ body: "forget this" });
      expect((await messageAt(b, d.id, m.seq))!.hidden).toBeUndefined();
      const replay = await openConversation(phone, d.id, 0);
      const replayed = replay.messages().find((x) => x.seq === m.seq)!;
      replay.close();
      expect(replayed).toMatchObject({ body: null, hidden: true });
      await inD1(d.id);
      expect((await syncAll(phone)).find((x) => x.conversationId === d.id && x.seq === m.seq)).toMatchObject({ body: null, hidden: true });
      expect((await syncAll(b)).find((x) => x.conversationId === d.id && x.seq === m.seq)).toMatchObject({ body: "forget this" });
      // The preview is the latest message the caller did not delete for themself: here, the
      // conversation's creation; the other member's is the message.
      const preview = async (s: Session) => ({
        one: (await json<{ conversation: Conversation }>(`/conversations/${d.id}`, { token: s.token })).conversation.lastMessage?.seq,
        listed: (await json<{ conversations: Conversation[] }>("/conversations", { token: s.token })).conversations.find((x) => x.id === d.id)?.lastMessage?.seq,
      });
      expect(await preview(a)).toEqual({ one: m.seq - 1, listed: m.seq - 1 });
      expect(await preview(b)).toEqual({ one: m.seq, listed: m.seq });

      await expectError(await call(`/conversations/${d.id}/hidden`, { token: stranger.token, body: { seqs: [m.seq] } }), 404, "not_found");
      await expectError(await call(`/conversations/${d.id}/hidden`, { token: a.token, body: { seqs: [999] } }), 400, "bad_request");
      await expectError(await call(`/conversations/${d.id}/hidden`, { token: a.token, body: { seqs: [] } }), 400, "bad_request");
    });

    it("search finds words in the caller's plaintext conversations, in all or in one, newest first", async () => {
      const [a, b, c] = [await register(), await register(), await register()];
      const ab = await direct(a, b);
      const g = await group(a, [b, c]);
      const word = unique("quokka").replace(/_/g, "");
      const first = (await sendRest(a, ab.id, `a ${word} in the direct chat`)).message;
      // Results come in the order D1 received them (docs/api.md): two conversations' outboxes
      // could otherwise reach it in either order.
      await inD1(ab.id);
      const second = (await sendRest(c, g.id, `Another ${word.toUpperCase()}, in the group`)).message;
      await sendRest(a, g.id, "nothing to see");
      const secret = (await json<{ conversation: { id: string } }>("/group/create", { token: a.token, body: { title: "e2ee", memberIds: [b.user.id], e2ee: true } }, 201)).conversation;
      await json("/send", { token: a.token, body: { conversationId: secret.id, clientMsgId: unique("m"), ciphertext: await ciphertextFor(secret.id, word) } }, 201);
      for (const id of [ab.id, g.id, secret.id]) await inD1(id);

      const all = await search(b, word);
      expect(all.results.map((r) => [r.message.conversationId, r.message.seq])).toEqual([[g.id, second.seq], [ab.id, first.seq]]);
      expect(all.results[1]!.snippet.filter((p) => p.match).map((p) => p.text)).toEqual([word]);
      expect(all.results[1]!.snippet.map((p) => p.text).join("")).toBe(`a ${word} in the direct chat`);
      // A prefix of the last word, and several words.
      expect((await search(b, word.slice(0, 8))).results.length).toBeGreaterThanOrEqual(2);
      expect((await search(b, `group ${word}`)).results.map((r) => r.message.seq)).toEqual([second.seq]);
      expect((await search(b, word, ab.id)).results.map((r) => r.message.seq)).toEqual([first.seq]);
      // c is in the group only.
      expect((await search(c, word)).results.map((r) => r.message.conversationId)).toEqual([g.id]);
      expect((await search(c, word, ab.id)).results).toEqual([]);
      // FTS5 syntax is only text here.
      expect((await search(b, `"${word}" OR NEAR(`)).results).toEqual([]);
      expect((await search(b, '"')).results).toEqual([]);
      // Paging.
      const page1 = await json<{ results: unknown[]; cursor: string; hasMore: boolean }>(`/search?q=${word}&limit=1`, { token: b.token });
      expect(page1.hasMore).toBe(true);
      const page2 = await json<{ results: { message: Message }[]; hasMore: boolean }>(`/search?q=${word}&limit=1&before=${page1.cursor}`, { token: b.token });
      expect(page2.results.map((r) => r.message.seq)).toEqual([first.seq]);
      expect(page2.hasMore).toBe(false);
      // An edit is found by its new text only; what the caller hid is not found.
      await acted(a, ab.id, { type: "edit", targetSeq: first.seq, body: "renamed entirely" });
      await json(`/conversations/${g.id}/hidden`, { token: b.token, body: { seqs: [second.seq] } });
      for (const id of [ab.id, g.id]) await inD1(id);
      expect((await search(b, word)).results).toEqual([]);
      expect((await search(b, "renamed")).results.map((r) => r.message.seq)).toEqual([first.seq]);
      expect((await search(c, word)).results.map((r) => r.message.seq)).toEqual([second.seq]);

      for (const query of ["", "q=", `q=${"x".repeat(201)}`, "q=a&limit=0", "q=a&limit=51", "q=a&before=x", "q=a&zzz=1"]) {
        await expectError(await call(`/search?${query}`, { token: b.token }), 400, "bad_request");
      }
      await expectError(await call(`/search?q=a`), 401, "unauthorized");
    });

    it("membership spans: a later member finds, syncs and acts on nothing from before joining, an edit of an earlier message reaches them without its text, a former member's search stops at the removal", async () => {
      const [a, b, d] = [await register(), await register(), await register()];
      const g = await group(a, [b]);
      const word = unique("wombat").replace(/_/g, "");
      const early = (await sendRest(a, g.id, `early ${word}`)).message;
      await acted(a, g.id, { type: "pin", targetSeq: early.seq, on: true });
      await json(`/conversations/${g.id}/members`, { token: a.token, body: { userIds: [d.user.id] } });
      const joinedSeq = await lastSeqOf(a, g.id);
      const dSocket = await openConversation(d, g.id);
      const edit = await acted(a, g.id, { type: "edit", targetSeq: early.seq, body: `edited ${word}` });
      const late = (await sendRest(b, g.id, `late ${word}`)).message;
      await inD1(g.id);

      const live = await dSocket.next("message", (f) => f.message!.seq === edit.seq);
      expect(eventOf(live.message!)).toEqual({ type: "edit", targetSeq: early.seq });
      dSocket.close();
      const synced = (await syncAll(d)).filter((m) => m.conversationId === g.id);
      expect(synced[0]!.seq).toBe(joinedSeq);
      expect(eventOf(synced.find((m) => m.seq === edit.seq)!)).toEqual({ type: "edit", targetSeq: early.seq });
      expect(JSON.stringify(synced)).not.toContain(`edited ${word}`);
      expect(JSON.stringify(await history(d, g.id))).not.toContain(`edited ${word}`);
      expect((await search(d, word)).results.map((r) => r.message.seq)).toEqual([late.seq]);
      expect((await search(b, word)).results.map((r) => r.message.seq)).toEqual([late.seq, early.seq]);
      expect((await json<{ messages: Message[] }>(`/conversations/${g.id}/pins`, { token: d.token })).messages).toEqual([]);
      await expectError(await act(d, g.id, { type: "react", targetSeq: early.seq, emoji: "👍", on: true }), 400, "bad_request");
      await expectError(await call("/send", { token: d.token, body: { conversationId: g.id, clientMsgId: unique("m"), body: "re", replyToSeq: early.seq } }), 400, "bad_request");

      // b leaves: b's search keeps what was said up to the removal, not after.
      expect((await call(`/conversations/${g.id}/members/${b.user.id}`, { method: "DELETE", token: a.token })).status).toBe(204);
      const after = (await sendRest(a, g.id, `after ${word}`)).message;
      await inD1(g.id);
      expect((await search(b, word)).results.map((r) => r.message.seq)).toEqual([late.seq, early.seq]);
      expect((await search(d, word)).results.map((r) => r.message.seq)).toEqual([after.seq, late.seq]);
    });

    it("in an E2EE conversation actions travel encrypted; a delete for everyone erases the ciphertext", async () => {
      const [a, b, c] = [await register(), await register(), await register()];
      const secret = (await json<{ conversation: { id: string } }>("/group/create", { token: a.token, body: { title: "e2ee", memberIds: [b.user.id, c.user.id], e2ee: true } }, 201)).conversation;
      const ciphertext = await ciphertextFor(secret.id, "hush");
      const sent = (await json<{ message: Message }>("/send", { token: b.token, body: { conversationId: secret.id, clientMsgId: unique("m"), ciphertext, mentions: [c.user.id] } }, 201)).message;
      expect(sent.mentions).toEqual([c.user.id]);
      const lastSeq = await lastSeqOf(a, secret.id);
      for (const action of [
        { type: "edit", targetSeq: sent.seq, body: "x" },
        { type: "react", targetSeq: sent.seq, emoji: "👍", on: true },
        { type: "pin", targetSeq: sent.seq, on: true },
      ]) {
        await expectError(await act(b, secret.id, action), 400, "bad_request");
      }
      for (const extra of [{ replyToSeq: sent.seq }, { forwarded: true }]) {
        await expectError(await call("/send", { token: b.token, body: { conversationId: secret.id, clientMsgId: unique("m"), ciphertext, ...extra } }), 400, "bad_request");
      }
      await expectError(await act(c, secret.id, { type: "delete", targetSeq: sent.seq }), 403, "forbidden");
      expect(await lastSeqOf(a, secret.id)).toBe(lastSeq);
      await acted(b, secret.id, { type: "delete", targetSeq: sent.seq });
      const erased = (await messageAt(c, secret.id, sent.seq))!;
      expect(erased.ciphertext).toBeUndefined();
      expect(erased.deletedAt).toBeGreaterThan(0);
      await inD1(secret.id);
      expect(await d1Of(secret.id).prepare("SELECT payload FROM messages WHERE conversation_id = ? AND seq = ?").bind(secret.id, sent.seq).first()).toEqual({ payload: null });
    });
  });
}
