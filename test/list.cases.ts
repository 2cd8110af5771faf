// GET /conversations served by the caller's user object (docs/api.md, Consistency): each entry
// read from its conversation's object, so a send is in every member's list at once; memberships
// told to the users' objects by their conversations, retried after a fault; a quiet member's list
// in the right order; paging by cursor, each conversation exactly once while others send and the
// object is evicted between pages; no D1 read; bad input; an unreachable conversation is a 503.
// Registered by test/api.test.ts (each test file starts a runtime of its own).
import { env } from "cloudflare:workers";
import { createExecutionContext, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Conversation } from "../protocol";
import { d1Shards } from "../kernel/d1/shards";
import { conversationStub, userStub } from "../kernel/objects";
import { peersOf, type ListEntry } from "../durable-objects/contract";
import type { ConversationDO } from "../durable-objects/conversation/ConversationDO";
import type { UserDO } from "../durable-objects/user/UserDO";
import worker from "../worker/index";
import { call, connect, direct, expectError, group, json, register, sendRest, type Session } from "./helpers";

type Page = { conversations: Conversation[]; hasMore?: boolean; cursor?: string | null };

const list = async (s: Session, query = "") => json<Page>(`/conversations${query}`, { token: s.token });
const ids = async (s: Session, query = "") => (await list(s, query)).conversations.map((c) => c.id);

/** What the user's object holds, read from its storage (no page, so nothing is asked first): its entries in order. */
function entries(s: Session): Promise<ListEntry[]> {
  return runInDurableObject(userStub(env, s.user.id), (_: UserDO, state: DurableObjectState) =>
    state.storage.sql
      .exec<{ conversation_id: string; joined_seq: number | null; left_seq: number | null; activity_at: number }>(
        "SELECT * FROM conversation_list ORDER BY activity_at DESC, conversation_id DESC",
      )
      .toArray()
      .map((r) => ({ id: r.conversation_id, joinedSeq: r.joined_seq, leftSeq: r.left_seq, activityAt: r.activity_at })),
  );
}

/**
 * The list orders by millisecond times: where a test asserts the order of two events, this makes
 * their times differ (two calls can fall in one millisecond, and then the ids decide).
 */
const tick = () => scheduler.wait(3);

/** Runs the conversation's deferred pass now (D1, then the fan-out to the members' objects). */
const pass = (conversationId: string) => runInDurableObject(conversationStub(env, conversationId), (instance: ConversationDO) => instance.deferred.run());

/** The Worker with every D1 shard out of reach, so that every use of one fails the request and is recorded. */
function withoutD1() {
  const touched: string[] = [];
  const DB = new Proxy(env.DB_0, {
    get(_, property) {
      touched.push(String(property));
      throw new Error("D1 is out of reach in this test");
    },
  });
  const fetch = async (s: Session, path: string) => {
    const res = await worker.fetch(new Request(`http://chat.test${path}`, { headers: { authorization: `Bearer ${s.token}` } }), { ...env, ...Object.fromEntries(d1Shards(env).all.map((_, i) => [`DB_${i}`, DB])) }, createExecutionContext());
    const body = await res.text();
    expect(res.status, body).toBe(200);
    return JSON.parse(body) as Page;
  };
  return { touched, fetch };
}

/** A property of a runtime object, its methods bound to it (a Proxy's `this` is not the object). */
function bound(target: object, property: string | symbol): unknown {
  const value: unknown = Reflect.get(target, property);
  return typeof value === "function" ? value.bind(target) : value;
}

export function conversationListTests(): void {
  describe("conversation list from the user object", () => {
    it("has a send in the sender's list at once and in the others' with its unread count, ordered, before and after the relay", async () => {
      const [a, b, c] = [await register(), await register(), await register()];
      const first = await direct(a, b);
      await tick();
      const second = await group(c, [a, b], "second");
      await tick();
      for (const s of [a, b]) expect(await ids(s)).toEqual([second.id, first.id]);
      // Nothing relayed yet: the members' objects have not heard of it, each page asks the conversation.
      const sent = await sendRest(a, first.id, "just now");
      const mine = await list(a);
      expect(mine.conversations.map((x) => x.id)).toEqual([first.id, second.id]);
      expect(mine.conversations[0]).toMatchObject({ lastSeq: sent.message.seq, unread: 0, lastMessage: expect.objectContaining({ id: sent.message.id }) });
      const theirs = (await list(b)).conversations;
      expect(theirs.map((x) => x.id)).toEqual([first.id, second.id]);
      expect(theirs[0]).toMatchObject({ unread: 1, lastMessage: expect.objectContaining({ body: "just now" }) });
      // Relayed: b's object orders by it, so a page of one holds it.
      await pass(first.id);
      expect((await entries(b)).map((e) => e.id)).toEqual([first.id, second.id]);
      expect(await ids(b, "?limit=1")).toEqual([first.id]);
      // Another member's message in the other conversation, then b reads it.
      await tick();
      const reply = await sendRest(c, second.id, "from c");
      await pass(second.id);
      const after = (await list(b)).conversations;
      expect(after.map((x) => x.id)).toEqual([second.id, first.id]);
      expect(after[0]).toMatchObject({ unread: 1, lastMessage: expect.objectContaining({ id: reply.message.id }) });
      await json(`/conversations/${second.id}/receipts`, { token: b.token, body: { type: "read", seq: reply.message.seq } });
      expect((await list(b)).conversations[0]).toMatchObject({ id: second.id, unread: 0, readSeq: reply.message.seq });
    });

    it("orders a quiet member's list by what the conversations open on their devices skipped telling them", async () => {
      const [a, b] = [await register(), await register()];
      const open = await direct(a, b);
      const other = await group(a, [b], "other");
      await tick();
      const inbox = await connect("/ws", b.token);
      await inbox.next("ready");
      const chat = await connect(`/conversations/${open.id}/ws?dedupe=1`, b.token);
      await chat.next("ready");
      // b's object answers with its live device, so the conversation may skip calling it.
      await sendRest(a, open.id, "first");
      await pass(open.id);
      expect(await runInDurableObject(conversationStub(env, open.id), (i: ConversationDO) => i.fanout.quiet.answerFor(b.user.id, Date.now()))).not.toBeNull();
      expect(await userStub(env, b.user.id).listWatched()).toEqual([open.id]);
      await tick();
      await sendRest(a, other.id, "elsewhere");
      await pass(other.id);
      await tick();
      const latest = await sendRest(a, open.id, "skipped");
      await chat.next("message", (f) => f.message?.id === latest.message.id);
      await pass(open.id);
      // Skipped: b's object still has the other conversation first...
      expect((await entries(b)).map((e) => e.id)).toEqual([other.id, open.id]);
      expect(inbox.frames.some((f) => f.type === "message" && f.message?.id === latest.message.id)).toBe(false);
      // ...and a page asks the open one first: the order is right, even on a page of one.
      const page = await list(b, "?limit=1");
      expect(page.conversations.map((x) => x.id)).toEqual([open.id]);
      expect(page.conversations[0]!.lastMessage?.id).toBe(latest.message.id);
      expect((await entries(b)).map((e) => e.id)).toEqual([open.id, other.id]);

      // While the open conversation cannot be asked, a page is a 503 to retry, not a list without it.
      await runInDurableObject(userStub(env, b.user.id), (instance: UserDO) => {
        const reach = peersOf(env).conversation;
        instance.useConnections({
          conversations: (id) =>
            new Proxy(reach(id), {
              get: (target, property) =>
                property === "viewForNotification" ? () => Promise.reject(new Error("the conversation is unreachable")) : bound(target, property),
            }),
        });
      });
      const refused = await call("/conversations?limit=5", { token: b.token });
      expect(refused.headers.get("retry-after")).toBe("1");
      await expectError(refused, 503, "unavailable");
      inbox.close();
      chat.close();
    });

    it("tells the added, removed and leaving members' objects before the call returns; a former member's entry stays as it was", async () => {
      const [admin, bob, cy, dee] = [await register(), await register(), await register(), await register()];
      const g = await group(admin, [bob], "members");
      const elsewhere = await direct(bob, dee);
      await json(`/conversations/${g.id}/members`, { token: admin.token, body: { userIds: [cy.user.id] } });
      expect((await entries(cy)).map((e) => [e.id, e.joinedSeq, e.leftSeq])).toEqual([[g.id, 2, null]]);
      expect((await list(cy)).conversations).toEqual([expect.objectContaining({ id: g.id, joinedSeq: 2, unread: 0 })]);

      expect((await call(`/conversations/${g.id}/members/${bob.user.id}`, { method: "DELETE", token: admin.token })).status).toBe(204);
      expect((await call(`/conversations/${g.id}/members/${cy.user.id}`, { method: "DELETE", token: cy.token })).status).toBe(204);
      await sendRest(admin, g.id, "after they left");
      await tick();
      await sendRest(dee, elsewhere.id, "later, elsewhere");
      await pass(g.id);
      await pass(elsewhere.id);
      const bobs = await entries(bob);
      expect(bobs.map((e) => [e.id, e.leftSeq])).toEqual([
        [elsewhere.id, null],
        [g.id, 3],
      ]);
      expect(await entries(cy)).toEqual([expect.objectContaining({ id: g.id, joinedSeq: 2, leftSeq: 4 })]);
      // The frozen view: up to the message that removed them, nothing after it.
      for (const [s, leftSeq] of [
        [bob, 3],
        [cy, 4],
      ] as const) {
        const former = (await list(s)).conversations.find((x) => x.id === g.id)!;
        expect(former).toMatchObject({ leftSeq, lastSeq: leftSeq, readSeq: leftSeq, unread: 0, members: [], lastMessage: expect.objectContaining({ seq: leftSeq, kind: "system" }) });
      }
      // Added back: a member again, from the message that added them.
      await json(`/conversations/${g.id}/members`, { token: admin.token, body: { userIds: [cy.user.id] } });
      expect((await list(cy)).conversations).toEqual([expect.objectContaining({ id: g.id, joinedSeq: 6, unread: 0 })]);
      expect((await list(cy)).conversations[0]!.leftSeq).toBeUndefined();
    });

    it("keeps a notice the added member's object did not take and delivers it from the alarm", async () => {
      const [admin, late] = [await register(), await register()];
      const g = await group(admin, [], "retried");
      const stub = conversationStub(env, g.id);
      const cut = (down: boolean) =>
        runInDurableObject(stub, (instance: ConversationDO) => {
          const reach = peersOf(env).user;
          instance.useConnections({
            lists: (userId) => ({
              listMembership: (...args) => (down ? Promise.reject(new Error("the user's object is unreachable")) : reach(userId).listMembership(...args)),
            }),
          });
        });
      await cut(true);
      await json(`/conversations/${g.id}/members`, { token: admin.token, body: { userIds: [late.user.id] } });
      expect(await stub.pendingListNotices()).toBe(1);
      // The fan-out of the message that added them reached their object before the call answered
      // (their sync needs it), but not the span, which only the notice carries.
      expect(await entries(late)).toEqual([expect.objectContaining({ id: g.id, joinedSeq: null, leftSeq: null })]);
      await cut(false);
      expect(await runDurableObjectAlarm(stub)).toBe(true);
      expect(await stub.pendingListNotices()).toBe(0);
      expect(await entries(late)).toEqual([expect.objectContaining({ id: g.id, joinedSeq: 2, leftSeq: null })]);
      expect(await ids(late)).toEqual([g.id]);
    });

    it("pages by cursor, each conversation exactly once while others send, with no D1 read and the object evicted between pages", async () => {
      const [me, other] = [await register(), await register()];
      const mine: string[] = [];
      for (let i = 0; i < 12; i++) mine.push((await group(other, [me], `g${i}`)).id);
      const { touched, fetch } = withoutD1();
      const all = await fetch(me, "/conversations");
      expect(all.conversations.map((c) => c.id).sort()).toEqual([...mine].sort());
      expect(all).not.toHaveProperty("cursor");
      const seen: string[] = [];
      let cursor: string | null = null;
      for (let pages = 0; ; pages++) {
        const page: Page = await fetch(me, `/conversations?limit=5${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
        expect(page.conversations.length).toBeLessThanOrEqual(5);
        seen.push(...page.conversations.map((c) => c.id));
        if (!page.hasMore) {
          expect(page.cursor).toBeNull();
          break;
        }
        cursor = page.cursor!;
        // Between pages, others send into conversations already listed and not yet listed, and
        // the relays reach the object; then it is evicted.
        for (const id of [mine[1]!, mine[10]!, mine[pages]!]) {
          await sendRest(other, id, `page ${pages}`);
          await pass(id);
        }
        await evictDurableObject(userStub(env, me.user.id));
        expect(pages).toBeLessThan(5);
      }
      expect(seen.sort()).toEqual([...mine].sort());
      expect(touched).toEqual([]);
      // A new first page has the order as it is now: newest activity first.
      const now = (await fetch(me, "/conversations")).conversations;
      const times = now.map((c) => c.lastMessageAt ?? c.createdAt);
      expect(times).toEqual([...times].sort((x, y) => y - x));
      expect((await fetch(me, "/conversations?limit=3")).conversations.map((c) => c.id)).toEqual(now.slice(0, 3).map((c) => c.id));
    });

    it("refuses a bad limit or cursor with a 400 in the error shape", async () => {
      const [a, b] = [await register(), await register()];
      await direct(a, b);
      for (const query of ["limit=0", "limit=201", "limit=x", "limit=-1", "cursor=", "cursor=nope", "cursor=999.1.c1", "limit=5&cursor=1.2"]) {
        await expectError(await call(`/conversations?${query}`, { token: a.token }), 400, "bad_request");
      }
      expect(await ids(a, "?limit=200")).toHaveLength(1);
      // Parameters it does not know are ignored, as before the list had any.
      expect(await list(a, "?page=2")).toEqual({ conversations: [expect.objectContaining({ id: (await ids(a))[0] })] });
    });

    it("fails a page with a 503 when a conversation on it cannot be reached", async () => {
      const [a, b] = [await register(), await register()];
      await direct(a, b);
      const CONVERSATION = new Proxy(env.CONVERSATION, {
        get: (target, property) =>
          property === "get"
            ? (id: DurableObjectId) =>
                new Proxy(target.get(id), {
                  get: (stub, name) => (name === "view" ? () => Promise.reject(Object.assign(new Error("reset"), { retryable: true })) : bound(stub, name)),
                })
            : bound(target, property),
      });
      const res = await worker.fetch(new Request("http://chat.test/conversations?limit=5", { headers: { authorization: `Bearer ${a.token}` } }), { ...env, CONVERSATION }, createExecutionContext());
      await expectError(res, 503, "unavailable");
    });
  });
}
