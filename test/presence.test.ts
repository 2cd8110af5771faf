// The per-user object: multi-device delivery, presence and its debounce, watching and privacy,
// receipts to user sockets, unread counts, typing lapse, and fan-out to a 200-member group.
// Test settings (vitest.config.ts): PRESENCE_DEBOUNCE_MS 600, PRESENCE_TIMEOUT_MS 30000.
import { env } from "cloudflare:workers";
import { listDurableObjectIds, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { ConversationDO } from "../durable-objects/conversation/ConversationDO";
import { d1Shards } from "../kernel/d1/shards";
import { peersOf, relayedMessage } from "../durable-objects/contract";
import type { D1Writer } from "../durable-objects/conversation/d1Outbox";
import { QUIET_HINT_MS } from "../durable-objects/contract";
import { QuietMembers } from "../durable-objects/conversation/quiet";
import type { UserDO } from "../durable-objects/user/UserDO";
import type { Conversation, Message, Presence } from "../protocol";
import { conversationStub, userStub } from "../kernel/objects";
import {
  d1Of,
  call,
  connect,
  conversationPeersWith,
  direct,
  expectError,
  group,
  holdDeferredPass,
  json,
  login,
  openConversation,
  register,
  sendRest,
  setObjectSettings,
  signInDevice,
  syncAll,
  unique,
  userPeersWith,
  waitFor,
  withoutTables,
  type Session,
  type TestSocket,
} from "./helpers";

const DEBOUNCE_MS = 600;
/**
 * How long a test waits for the local queue to deliver a fan-out job. Locally the queue shares the
 * runtime's thread and falls behind under CPU contention (about 5 s here alone, over 20 s once on a
 * loaded CI machine), so this bounds the wait generously; it is not a timing assertion.
 */
const QUEUE_WAIT_MS = 60_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function userSocket(s: Session, keepAliveMs: number | null = 1000): Promise<TestSocket> {
  const socket = await connect("/ws", s.token, {}, keepAliveMs);
  await socket.next("ready");
  return socket;
}

/** `n` users straight into the directory: registering each would cost a PBKDF2 hash. */
async function bulkUsers(n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, () => `bulk_${unique("m")}`);
  const now = Date.now();
  for (const [database, onShard] of d1Shards(env).group(ids)) {
    for (let i = 0; i < onShard.length; i += 10) {
      await database.batch(
        onShard.slice(i, i + 10).map((id) =>
          database
            .prepare(
              "INSERT INTO users (id, username, username_lower, display_name, password_hash, password_salt, password_iterations, created_at) VALUES (?, ?, ?, ?, 'x', 'x', 1, ?)",
            )
            .bind(id, id, id.toLowerCase(), id, now),
        ),
      );
    }
  }
  return ids;
}

/** A device of a bulk user, signed in without a password hash; returns its token. */
async function addDevice(userId: string, name: string): Promise<string> {
  return (await signInDevice(userId, name)).token;
}

/** How many times a user's object recorded this message as delivered (0 or 1: it dedupes). */
async function deliveredTo(userId: string, conversationId: string, seq: number): Promise<number> {
  return runInDurableObject(userStub(env, userId), (_: UserDO, state: DurableObjectState) =>
    state.storage.sql
      .exec<{ n: number }>("SELECT count(*) AS n FROM delivered WHERE conversation_id = ? AND seq = ?", conversationId, seq)
      .one().n,
  );
}

async function presenceOf(viewer: Session, userId: string): Promise<Presence> {
  const { presence } = await json<{ presence: Presence[] }>(`/presence?userIds=${userId}`, { token: viewer.token });
  return presence[0]!;
}

describe("user socket delivery", () => {
  it("delivers every new message to all of a user's devices, the sender's other devices included", async () => {
    const a1 = await register();
    const a2 = await login(a1.user.username, "phone");
    const b = await register();
    const conv = await direct(a1, b);
    const [s1, s2, sb] = [await userSocket(a1), await userSocket(a2), await userSocket(b)];

    await sendRest(b, conv.id, "from b");
    for (const s of [s1, s2]) {
      const f = await s.next("message", (x) => x.message?.body === "from b");
      expect(f.message?.conversationId).toBe(conv.id);
    }
    // A message from device 1 reaches device 2 and b, not device 1 itself (it has the ack).
    const cs = await openConversation(a1, conv.id);
    cs.send({ type: "send", clientMsgId: "from-a1", body: "from a1" });
    await cs.next("ack");
    await s2.next("message", (x) => x.message?.clientMsgId === "from-a1");
    await sb.next("message", (x) => x.message?.clientMsgId === "from-a1");
    await sendRest(b, conv.id, "marker");
    await s1.next("message", (x) => x.message?.body === "marker");
    expect(s1.frames.filter((x) => x.message?.clientMsgId === "from-a1")).toEqual([]);
    // The device that sent by REST has the message from the response already.
    expect(sb.frames.filter((x) => x.message?.body === "from b" || x.message?.body === "marker")).toEqual([]);
    // Exactly once per device.
    expect(s2.frames.filter((x) => x.message?.body === "from b")).toHaveLength(1);
    for (const s of [s1, s2, sb, cs]) s.close();
  });

  it("tells members of a new or changed conversation with a conversation frame", async () => {
    const [a, b, c] = [await register(), await register(), await register()];
    const [sb, sc] = [await userSocket(b), await userSocket(c)];
    const g = await group(a, [b], "news");
    const created = await sb.next("conversation", (f) => (f.conversation as Conversation | undefined)?.id === g.id);
    expect((created.conversation as Conversation).members).toHaveLength(2);
    await json(`/conversations/${g.id}/members`, { token: a.token, body: { userIds: [c.user.id] } });
    const joined = await sc.next("conversation", (f) => (f.conversation as Conversation | undefined)?.id === g.id);
    expect((joined.conversation as Conversation).members).toHaveLength(3);
    expect((await call(`/conversations/${g.id}/members/${c.user.id}`, { method: "DELETE", token: a.token })).status).toBe(204);
    // The removed member is told with the conversation as they may still see it (docs/api.md).
    const left = await sc.next("conversation", (f) => (f.conversation as Conversation | undefined)?.leftSeq !== undefined);
    expect(left.conversation as Conversation).toMatchObject({ id: g.id, members: [], leftSeq: 3 });
    sb.close();
    sc.close();
  });
});

describe("presence", () => {
  it("is online while a user socket lives and offline with lastSeen after it closes", async () => {
    const [a, b] = [await register(), await register()];
    await direct(a, b);
    expect(await presenceOf(b, a.user.id)).toEqual({ userId: a.user.id, status: "offline", lastSeen: null });
    const s = await userSocket(a);
    expect((await presenceOf(b, a.user.id)).status).toBe("online");
    const before = Date.now();
    s.close();
    const offline = await waitFor(async () => {
      const p = await presenceOf(b, a.user.id);
      return p.status === "offline" ? p : null;
    }, "offline within a second", 1000);
    expect(offline.lastSeen).toBeGreaterThanOrEqual(before - 5);
    expect(offline.lastSeen).toBeLessThanOrEqual(Date.now());
  });

  it("stays online while any device is connected", async () => {
    const a = await register();
    const a2 = await login(a.user.username);
    const b = await register();
    await direct(a, b);
    const [s1, s2] = [await userSocket(a), await userSocket(a2)];
    s1.close();
    await sleep(100);
    expect((await presenceOf(b, a.user.id)).status).toBe("online");
    s2.close();
    await waitFor(async () => (await presenceOf(b, a.user.id)).status === "offline", "offline");
  });

  it("expires a silent socket after the keep-alive window and closes it with 4000", async () => {
    const [a, b] = [await register(), await register()];
    await direct(a, b);
    // The test runtime's keep-alive window is long (vitest.config.ts); this object's is short.
    await setObjectSettings(userStub(env, a.user.id), { presenceTimeoutMs: 2500 });
    const silent = await userSocket(a, null);
    expect((await presenceOf(b, a.user.id)).status).toBe("online");
    expect((await silent.waitClosed(10_000)).code).toBe(4000);
    const p = await presenceOf(b, a.user.id);
    expect(p.status).toBe("offline");
    expect(p.lastSeen).not.toBeNull();
  });

  it("pushes debounced events to watchers; a short flap pushes nothing", async () => {
    const [u, w] = [await register(), await register()];
    await direct(u, w);
    const ws = await userSocket(w);
    ws.send({ type: "presence.watch", userIds: [u.user.id] });
    const initial = await ws.next("presence", (f) => f.userId === u.user.id);
    expect(initial).toMatchObject({ status: "offline", lastSeen: null });

    const s1 = await userSocket(u);
    const online = await ws.next("presence", (f) => f.userId === u.user.id && f.status === "online", 5000);
    expect(online.lastSeen).toBeNull();
    const count = () => ws.frames.filter((f) => f.type === "presence" && f.userId === u.user.id).length;
    const seen = count();

    // Flap: offline and back within the debounce window.
    s1.close();
    await sleep(100);
    const s2 = await userSocket(u);
    await sleep(DEBOUNCE_MS * 3);
    expect(count()).toBe(seen);

    s2.close();
    const offline = await ws.next("presence", (f) => f.userId === u.user.id && f.status === "offline" && f !== initial, 5000);
    expect(offline.lastSeen).toEqual(expect.any(Number));
    ws.close();
  });

  it("discloses nothing about users who share no conversation", async () => {
    const [w, stranger, friend] = [await register(), await register(), await register()];
    await direct(w, friend);
    const s = await userSocket(stranger);
    const { presence } = await json<{ presence: Presence[] }>(`/presence?userIds=${stranger.user.id},${friend.user.id},nobody`, { token: w.token });
    expect(presence).toEqual([
      { userId: stranger.user.id, status: "unknown", lastSeen: null },
      { userId: friend.user.id, status: "offline", lastSeen: null },
      { userId: "nobody", status: "unknown", lastSeen: null },
    ]);
    const ws = await userSocket(w);
    ws.send({ type: "presence.watch", userIds: [stranger.user.id, friend.user.id] });
    await ws.next("presence", (f) => f.userId === friend.user.id);
    s.close();
    await userSocket(stranger).then((x) => x.close());
    await sleep(DEBOUNCE_MS * 3);
    expect(ws.frames.some((f) => f.type === "presence" && f.userId === stranger.user.id)).toBe(false);
    ws.close();

    await expectError(await call("/presence", { token: w.token }), 400, "bad_request");
    const many = Array.from({ length: 101 }, (_, i) => `u${i}`).join(",");
    await expectError(await call(`/presence?userIds=${many}`, { token: w.token }), 400, "bad_request");
    await expectError(await call(`/presence?userIds=x`), 401, "unauthorized");
  });

  it("stops disclosing presence both ways once a user left every conversation they shared", async () => {
    const [a, b, c] = [await register(), await register(), await register()];
    const trio = await group(a, [b, c], "trio");
    await group(a, [b], "pair");
    expect(await presenceOf(c, b.user.id)).toEqual({ userId: b.user.id, status: "offline", lastSeen: null });
    const bs = await userSocket(b);
    bs.send({ type: "presence.watch", userIds: [c.user.id] });
    await bs.next("presence", (f) => f.userId === c.user.id);

    expect((await call(`/conversations/${trio.id}/members/${c.user.id}`, { method: "DELETE", token: c.token })).status).toBe(204);
    const unknown = (userId: string): Presence => ({ userId, status: "unknown", lastSeen: null });
    expect(await presenceOf(c, b.user.id)).toEqual(unknown(b.user.id));
    expect(await presenceOf(c, a.user.id)).toEqual(unknown(a.user.id));
    expect(await presenceOf(b, c.user.id)).toEqual(unknown(c.user.id));
    // They still see themselves, and those they share another conversation with.
    expect(await presenceOf(c, c.user.id)).toEqual({ userId: c.user.id, status: "offline", lastSeen: null });
    expect((await presenceOf(b, a.user.id)).status).toBe("offline");
    // A watch asking for them again drops them (its first frame for `a` shows it was applied);
    // the other watched user's events still come.
    bs.send({ type: "presence.watch", userIds: [c.user.id, a.user.id] });
    await bs.next("presence", (f) => f.userId === a.user.id);
    const cs = await userSocket(c);
    const as = await userSocket(a);
    await bs.next("presence", (f) => f.userId === a.user.id && f.status === "online", 5000);
    await sleep(DEBOUNCE_MS * 3);
    expect(bs.frames.filter((f) => f.type === "presence" && f.userId === c.user.id)).toHaveLength(1);
    for (const s of [bs, cs, as]) s.close();
  });

  it("asks no object of an id that is nobody's: made-up ids create no user objects", async () => {
    const [w, friend] = [await register(), await register()];
    await direct(w, friend);
    const madeUp = Array.from({ length: 5 }, () => unique("ghost"));
    const { presence } = await json<{ presence: Presence[] }>(`/presence?userIds=${madeUp.join(",")}`, { token: w.token });
    expect(presence.map((p) => p.status)).toEqual(madeUp.map(() => "unknown"));
    const ws = await userSocket(w);
    // The friend's answer comes once the whole watch has been handled.
    ws.send({ type: "presence.watch", userIds: [...madeUp, friend.user.id] });
    await ws.next("presence", (f) => f.userId === friend.user.id);
    ws.close();
    const existing = new Set((await listDurableObjectIds(env.USER)).map((id) => id.toString()));
    for (const id of madeUp) expect(existing.has(env.USER.idFromName(id).toString())).toBe(false);
  });

  it("answers the privacy rule from the users' objects, with D1's memberships out of reach", async () => {
    const [w, friend, member, stranger] = [await register(), await register(), await register(), await register()];
    await direct(w, friend);
    await group(member, [w], "club");
    await group(stranger, [friend], "elsewhere");
    const memberSocket = await userSocket(member);
    await withoutTables(["conversations", "members", "former_members"], async () => {
      const ids = [friend.user.id, member.user.id, stranger.user.id, w.user.id, "nobody", friend.user.id].join(",");
      const { presence } = await json<{ presence: Presence[] }>(`/presence?userIds=${ids}`, { token: w.token });
      expect(presence).toEqual([
        { userId: friend.user.id, status: "offline", lastSeen: null },
        { userId: member.user.id, status: "online", lastSeen: null },
        { userId: stranger.user.id, status: "unknown", lastSeen: null },
        { userId: w.user.id, status: "offline", lastSeen: null },
        { userId: "nobody", status: "unknown", lastSeen: null },
      ]);
      const ws = await userSocket(w);
      ws.send({ type: "presence.watch", userIds: [stranger.user.id, friend.user.id, member.user.id] });
      expect(await ws.next("presence", (f) => f.userId === friend.user.id)).toMatchObject({ status: "offline" });
      expect(await ws.next("presence", (f) => f.userId === member.user.id)).toMatchObject({ status: "online" });
      const strangerSocket = await userSocket(stranger);
      const friendSocket = await userSocket(friend);
      await ws.next("presence", (f) => f.userId === friend.user.id && f.status === "online", 5000);
      expect(ws.frames.some((f) => f.type === "presence" && f.userId === stranger.user.id)).toBe(false);
      for (const s of [ws, strangerSocket, friendSocket]) s.close();
      // The outage is real: a route that reads the memberships fails under it.
      await expectError(await call(`/search?q=anything`, { token: w.token }), 500, "internal");
    });
    memberSocket.close();
  });

  it("answers 503 when a user's object cannot be asked, and a watch an error; both work once it can", async () => {
    const [w, friend, member] = [await register(), await register(), await register()];
    await direct(w, friend);
    await direct(w, member);
    const viewer = userStub(env, w.user.id);
    await runInDurableObject(viewer, (instance: UserDO) => {
      instance.useConnections({
        users: userPeersWith((userId) =>
          userId === friend.user.id ? { presenceIfMember: () => Promise.reject(new Error("user object unreachable")) } : {},
        ),
      });
    });
    const res = await call(`/presence?userIds=${member.user.id},${friend.user.id}`, { token: w.token });
    await expectError(res, 503, "unavailable");
    expect(res.headers.get("retry-after")).toBe("1");
    // Asking only about oneself asks no other object.
    expect((await json<{ presence: Presence[] }>(`/presence?userIds=${w.user.id}`, { token: w.token })).presence).toEqual([
      { userId: w.user.id, status: "offline", lastSeen: null },
    ]);
    const ws = await userSocket(w);
    ws.send({ type: "presence.watch", userIds: [friend.user.id] });
    expect((await ws.next("error")).code).toBe("internal");

    await runInDurableObject(viewer, (instance: UserDO) => {
      instance.useConnections({ users: peersOf(env).user });
    });
    expect((await presenceOf(w, friend.user.id)).status).toBe("offline");
    ws.send({ type: "presence.watch", userIds: [friend.user.id] });
    await ws.next("presence", (f) => f.userId === friend.user.id);
    ws.close();
  });

  it("answers a malformed user-socket frame with an error and keeps the socket", async () => {
    const a = await register();
    const s = await userSocket(a);
    s.send({ type: "presence.watch", userIds: "all" });
    expect((await s.next("error")).code).toBe("bad_request");
    s.send({ type: "presence.watch", userIds: Array.from({ length: 201 }, (_, i) => `u${i}`) });
    await s.until((f) => f.filter((x) => x.type === "error").length === 2, "a second error");
    expect(s.closed).toBeNull();
    s.send({ type: "presence.watch", userIds: ["x".repeat(70_000)] });
    expect((await s.waitClosed()).code).toBe(1009);
  });
});

/**
 * A writes two messages to B over REST; their deferred pass is done. B holds a conversation
 * socket, and the conversation's next pass is held until the test runs its alarm.
 */
async function twoMessagesThenHeldPass() {
  const [a, b] = [await register(), await register()];
  const conv = await direct(a, b);
  const first = (await sendRest(a, conv.id, "one")).message;
  const second = (await sendRest(a, conv.id, "two")).message;
  const stub = conversationStub(env, conv.id);
  await runDurableObjectAlarm(stub);
  const bs = await openConversation(b, conv.id);
  await holdDeferredPass(stub);
  return { a, b, conv, first, second, stub, bs };
}

describe("receipts and unread counts", () => {
  it("reaches the sender's user sockets and the reader's other devices", async () => {
    const [a, b] = [await register(), await register()];
    const b2 = await login(b.user.username);
    const conv = await direct(a, b);
    const { message } = await sendRest(a, conv.id, "read me");
    const [sa, sb2] = [await userSocket(a), await userSocket(b2)];
    await json(`/conversations/${conv.id}/receipts`, { token: b.token, body: { type: "read", seq: message.seq } });
    for (const s of [sa, sb2]) {
      expect(await s.next("receipt")).toMatchObject({ conversationId: conv.id, userId: b.user.id, readSeq: message.seq, deliveredSeq: message.seq });
    }
    sa.close();
    sb2.close();
  });

  it("relays a reader's receipts with the next pass, the latest once, and again after a failed call", async () => {
    const { a, b, conv, first, second: message, stub, bs } = await twoMessagesThenHeldPass();
    const sa = await userSocket(a);
    bs.send({ type: "delivered", seq: first.seq });
    bs.send({ type: "read", seq: message.seq });
    // The conversation's sockets hear of each receipt at once; the users' objects wait for the pass.
    await bs.next("receipt", (f) => f.readSeq === message.seq);
    const receiptsAt = (s: TestSocket) => s.frames.filter((f) => f.type === "receipt");
    expect(receiptsAt(sa)).toEqual([]);
    const calls: string[] = [];
    await runInDurableObject(stub, (instance: ConversationDO) => {
      const reach = peersOf(env).user;
      instance.useConnections({
        users: (userId) => ({
          deliver: async (...args) => {
            calls.push(userId);
            // The first pass's calls fail; the retry (the alarm, after a backoff) reaches the objects.
            if (calls.length <= 2) throw new Error("user object unreachable");
            return reach(userId).deliver(...args);
          },
          trackConversationSocket: (...args) => reach(userId).trackConversationSocket(...args),
        }),
      });
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(calls.sort()).toEqual([a.user.id, b.user.id].sort());
    expect(receiptsAt(sa)).toEqual([]);
    await sa.next("receipt", (f) => f.readSeq === message.seq);
    // One frame: the reader's latest watermarks, not one per receipt sent.
    expect(receiptsAt(sa)).toEqual([
      { type: "receipt", conversationId: conv.id, userId: b.user.id, deliveredSeq: message.seq, readSeq: message.seq, updatedAt: expect.any(Number) },
    ]);
    sa.close();
    bs.close();
  });

  it("writes a reader's receipts of one pass to D1 as one update, with the latest watermarks", async () => {
    const { b, conv, first, second, stub, bs } = await twoMessagesThenHeldPass();
    const prepared: string[] = [];
    await runInDurableObject(stub, (instance: ConversationDO) => {
      instance.useConnections({ d1: (key) => ({
        prepare: (query: string) => (prepared.push(query), d1Of(key).prepare(query)),
        batch: (statements: D1PreparedStatement[]) => d1Of(key).batch(statements),
      }) });
    });
    bs.send({ type: "delivered", seq: first.seq });
    bs.send({ type: "read", seq: second.seq });
    await bs.next("receipt", (f) => f.readSeq === second.seq);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(prepared.filter((q) => q.includes("UPDATE members SET delivered_seq"))).toHaveLength(1);
    const row = await d1Of(conv.id).prepare("SELECT delivered_seq, read_seq FROM members WHERE conversation_id = ? AND user_id = ?")
      .bind(conv.id, b.user.id)
      .first();
    expect(row).toEqual({ delivered_seq: second.seq, read_seq: second.seq });
    bs.close();
  });

  it("counts others' unread messages for both sides, before and after a read", async () => {
    const [a, b] = [await register(), await register()];
    const conv = await direct(a, b);
    await sendRest(a, conv.id, "one");
    await sendRest(a, conv.id, "two");
    const last = (await sendRest(b, conv.id, "reply")).message;
    const listed = async (s: Session) =>
      (await json<{ conversations: Conversation[] }>("/conversations", { token: s.token })).conversations.find((c) => c.id === conv.id)!;
    // A send reaches D1 in the conversation's next pass (it does not wait for it); then the list is right for both sides.
    await waitFor(async () => (await listed(b)).lastSeq === last.seq, "the reply in D1");
    expect(await listed(b)).toMatchObject({ unread: 2, readSeq: 0, lastSeq: last.seq, lastMessage: expect.objectContaining({ id: last.id }) });
    expect(await listed(a)).toMatchObject({ unread: 1, readSeq: 0 });
    expect((await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: b.token })).conversation).toMatchObject({ unread: 2 });

    await json(`/conversations/${conv.id}/receipts`, { token: b.token, body: { type: "read", seq: last.seq } });
    // A read reaches D1 before the call returns: the list is right at once.
    expect(await listed(b)).toMatchObject({ unread: 0, readSeq: last.seq, lastMessage: expect.objectContaining({ id: last.id }) });
    expect(await listed(a)).toMatchObject({ unread: 1 });
  });

  it("lists a socket-sent message by the time the recipient's user socket announces it", async () => {
    const [a, b] = [await register(), await register()];
    const conv = await direct(a, b);
    const listed = async (s: Session) =>
      (await json<{ conversations: Conversation[] }>("/conversations", { token: s.token })).conversations.find((c) => c.id === conv.id)!;
    const [as, sb] = [await openConversation(a, conv.id), await userSocket(b)];
    // A slow D1 (as a remote one is): each batch takes 300 ms, far longer than a user-object call.
    const slowD1: D1Writer = {
      prepare: (q: string) => d1Of(conv.id).prepare(q),
      batch: async (statements: D1PreparedStatement[]) => {
        await sleep(300);
        return d1Of(conv.id).batch(statements);
      },
    };
    await runInDurableObject(conversationStub(env, conv.id), (instance: ConversationDO) => {
      instance.useConnections({ d1: () => slowD1 });
    });
    for (let i = 0; i < 3; i++) {
      const body = `over the socket ${i}`;
      as.send({ type: "send", clientMsgId: unique("s"), body });
      const { message } = (await sb.next("message", (f) => (f.message as Message).body === body)) as { message: Message };
      // No waiting: the user object is told only of messages D1 already holds.
      expect(await listed(b)).toMatchObject({ unread: i + 1, lastSeq: message.seq, lastMessage: expect.objectContaining({ id: message.id }) });
    }
    as.close();
    sb.close();
  });

  it("counts thread replies apart from unread", async () => {
    const [a, b] = [await register(), await register()];
    const conv = await direct(a, b);
    const root = (await sendRest(a, conv.id, "root")).message;
    await json("/send", { token: a.token, body: { conversationId: conv.id, clientMsgId: unique("r"), body: "reply", threadRootSeq: root.seq } }, 201);
    expect((await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: b.token })).conversation).toMatchObject({ unread: 1, threadUnread: 1 });
  });
});

describe("typing", () => {
  it("lapses after 6 s without a refresh", async () => {
    const [a, b] = [await register(), await register()];
    const conv = await direct(a, b);
    const [sa, sb] = [await openConversation(a, conv.id), await openConversation(b, conv.id)];
    const started = Date.now();
    sb.send({ type: "typing", on: true });
    await sa.next("typing", (f) => f.on === true);
    const off = await sa.next("typing", (f) => f.on === false, 15_000);
    expect(off.userId).toBe(b.user.id);
    expect(Date.now() - started).toBeGreaterThanOrEqual(5_900);
    // An explicit stop is relayed at once, and only one start per burst is relayed.
    sb.send({ type: "typing", on: true });
    sb.send({ type: "typing", on: true });
    sb.send({ type: "typing", on: false });
    await sa.until((f) => f.filter((x) => x.type === "typing").length === 4, "start and stop");
    expect(sa.frames.filter((x) => x.type === "typing").map((x) => x.on)).toEqual([true, false, true, false]);
    sa.close();
    sb.close();
  });
});

describe("fan-out", () => {
  it("relays each message once across overlapping retries, in-order calls and queued jobs alike", async () => {
    const [a, b] = [await register(), await register()];
    const inbox = await connect("/ws", b.token);
    await inbox.next("ready");
    const stub = userStub(env, b.user.id);
    // `legacy`: a queued job written before the fan-out carried encoded frames (a whole message).
    const event = (conversationId: string, seq: number, legacy = false) => {
      const message: Message = {
        id: `${conversationId}-${seq}`,
        conversationId,
        seq,
        senderId: a.user.id,
        senderDeviceId: a.device.id,
        clientMsgId: `${conversationId}-${seq}`,
        kind: "text" as const,
        body: `${seq}`,
        media: [],
        threadRootSeq: null,
        createdAt: Date.now(),
      };
      return {
        type: "message" as const,
        message: legacy ? message : relayedMessage(message),
        conversation: { id: conversationId, type: "direct" as const, title: null, e2ee: false },
      };
    };
    const [inline, queued] = [unique("inline"), unique("queued")];
    // A conversation's own calls: a retry overlaps what went before and goes further.
    await stub.deliver(b.user.id, [event(inline, 1), event(inline, 2)], true);
    await stub.deliver(b.user.id, [event(inline, 1), event(inline, 2), event(inline, 3)], true);
    await stub.deliver(b.user.id, [event(inline, 3)], true);
    // Queued jobs may come out of order: a later batch first, then an earlier one retried with it.
    await stub.deliver(b.user.id, [event(queued, 5)], false);
    await stub.deliver(b.user.id, [event(queued, 4, true), event(queued, 5)], false);
    await stub.deliver(b.user.id, [event(inline, 4)], true);
    await inbox.next("message", (f) => f.message?.id === `${inline}-4`);
    const relayed = inbox.frames.filter((f) => f.type === "message").map((f) => f.message!.id);
    expect(relayed).toEqual([1, 2, 3].map((n) => `${inline}-${n}`).concat([`${queued}-5`, `${queued}-4`, `${inline}-4`]));
    // The frame is the whole message, whichever way it was carried.
    expect(inbox.frames.find((f) => f.message?.id === `${queued}-4`)?.message).toMatchObject({ seq: 4, body: "4", media: [] });
    expect(inbox.frames.find((f) => f.message?.id === `${inline}-2`)?.message).toMatchObject({ seq: 2, body: "2", media: [] });
    inbox.close();
  });

  it("does not repeat on a device's user socket what its dedupe conversation socket got live", async () => {
    const a = await register();
    const phone = await register(unique("b"), "phone");
    const desktop = await login(phone.user.username, "desktop");
    const laptop = await login(phone.user.username, "laptop");
    const conv = await direct(a, phone);
    const inboxes = await Promise.all([phone, desktop, laptop].map((s) => connect("/ws", s.token)));
    for (const inbox of inboxes) await inbox.next("ready");
    const [phoneInbox, desktopInbox, laptopInbox] = inboxes as [TestSocket, TestSocket, TestSocket];
    // The desktop views the conversation with dedupe; the laptop with a socket that does not ask for it.
    const desktopChat = await connect(`/conversations/${conv.id}/ws?after=0&dedupe=1`, desktop.token);
    await desktopChat.next("ready");
    const laptopChat = await openConversation(laptop, conv.id);
    const as = await openConversation(a, conv.id);

    as.send({ type: "send", clientMsgId: "first", body: "first" });
    await desktopChat.next("message", (f) => f.message?.clientMsgId === "first");
    await laptopChat.next("message", (f) => f.message?.clientMsgId === "first");
    await phoneInbox.next("message", (f) => f.message?.clientMsgId === "first");
    await laptopInbox.next("message", (f) => f.message?.clientMsgId === "first");
    // Once the desktop closes its conversation socket, its user socket gets what follows.
    desktopChat.close();
    const stub = conversationStub(env, conv.id);
    const desktopSocketsOpen = () =>
      runInDurableObject(stub, (_: ConversationDO, state: DurableObjectState) =>
        state.getWebSockets(`d:${desktop.device.id}`).some((ws) => ws.readyState === WebSocket.OPEN),
      );
    await waitFor(async () => !(await desktopSocketsOpen()), "the close to reach the conversation");
    as.send({ type: "send", clientMsgId: "second", body: "second" });
    await desktopInbox.next("message", (f) => f.message?.clientMsgId === "second");
    const got = (inbox: TestSocket) => inbox.frames.filter((f) => f.type === "message" && f.message!.kind !== "system").map((f) => f.message!.clientMsgId);
    expect(got(desktopInbox)).toEqual(["second"]);
    await phoneInbox.next("message", (f) => f.message?.clientMsgId === "second");
    expect(got(phoneInbox)).toEqual(["first", "second"]);
    // A message stored before a dedupe socket opened, and fanned out after, still reaches that
    // device's user socket: the socket did not get it live (it opened without a replay).
    await holdDeferredPass(stub);
    as.send({ type: "send", clientMsgId: "held", body: "held" });
    await as.next("ack", (f) => f.clientMsgId === "held");
    const late = await connect(`/conversations/${conv.id}/ws?dedupe=1`, desktop.token);
    await late.next("ready");
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await desktopInbox.next("message", (f) => f.message?.clientMsgId === "held");
    late.close();
    // A malformed dedupe value is refused.
    const bad = await call(`/conversations/${conv.id}/ws?dedupe=yes`, { token: desktop.token, headers: { upgrade: "websocket" } });
    await expectError(bad, 400, "bad_request");
    for (const socket of [...inboxes, laptopChat, as]) socket.close();
  });

  it("keeps calling, and does not watch, a member online with the conversation open on none of its devices; one call more once it opens", async () => {
    const a = await register();
    const b = await register();
    const conv = await direct(a, b);
    const calls: string[] = [];
    await runInDurableObject(conversationStub(env, conv.id), (instance: ConversationDO) => {
      const reach = peersOf(env).user;
      instance.useConnections({
        users: (userId) => ({
          deliver: (...args) => (calls.push(userId), reach(userId).deliver(...args)),
          trackConversationSocket: (...args) => reach(userId).trackConversationSocket(...args),
        }),
      });
    });
    const callsOf = (userId: string) => calls.filter((id) => id === userId).length;
    const aChat = await openConversation(a, conv.id);
    const bInbox = await userSocket(b);
    const sendAndPass = async (body: string) => {
      const passes = callsOf(a.user.id);
      aChat.send({ type: "send", clientMsgId: body, body });
      await aChat.next("ack", (f) => f.clientMsgId === body);
      await waitFor(async () => callsOf(a.user.id) > passes, `the pass after "${body}"`);
    };
    const bObject = userStub(env, b.user.id);

    // Online, but not in this chat: every pass calls b's object (its user socket relays each
    // message), and the object watches nothing, so its list and sync pages ask nothing first.
    for (const body of ["one", "two", "three"]) {
      await sendAndPass(body);
      await bInbox.next("message", (f) => f.message?.body === body);
    }
    expect(callsOf(b.user.id)).toBe(3);
    expect(await bObject.syncWatched()).toEqual([]);
    expect(await bObject.listWatched()).toEqual([]);

    // b opens the chat: the next pass still calls (the answer it holds was not a watched one), and
    // the object now watches the conversation; the passes after it skip b.
    const bChat = await connect(`/conversations/${conv.id}/ws?dedupe=1`, b.token);
    await bChat.next("ready");
    await sendAndPass("four");
    expect(callsOf(b.user.id)).toBe(4);
    expect(await bObject.syncWatched()).toEqual([conv.id]);
    expect(await bObject.listWatched()).toEqual([conv.id]);
    await sendAndPass("five");
    await bChat.next("message", (f) => f.message?.body === "five");
    expect(callsOf(b.user.id)).toBe(4);
    expect((await syncAll(b)).filter((m) => m.kind !== "system").map((m) => m.body)).toEqual(["one", "two", "three", "four", "five"]);
    for (const socket of [aChat, bInbox, bChat]) socket.close();
  });

  it("skips the objects of members whose online devices all watch the conversation live, until another device comes online", async () => {
    const a = await register();
    const phone = await register(unique("b"), "phone");
    const conv = await direct(a, phone);
    const stub = conversationStub(env, conv.id);
    const calls: string[] = [];
    await runInDurableObject(stub, (instance: ConversationDO) => {
      const reach = peersOf(env).user;
      instance.useConnections({
        users: (userId) => ({
          deliver: (...args) => (calls.push(userId), reach(userId).deliver(...args)),
          trackConversationSocket: (...args) => reach(userId).trackConversationSocket(...args),
        }),
      });
    });
    // `a` has no user socket, so its object is called on every pass: a pass has run when it was.
    const aChat = await openConversation(a, conv.id);
    const phoneInbox = await userSocket(phone);
    const phoneChat = await connect(`/conversations/${conv.id}/ws?dedupe=1`, phone.token);
    await phoneChat.next("ready");
    const callsOf = (userId: string) => calls.filter((id) => id === userId).length;
    const sendAndPass = async (body: string) => {
      const passes = callsOf(a.user.id);
      aChat.send({ type: "send", clientMsgId: body, body });
      const { message } = await aChat.next("ack", (f) => f.clientMsgId === body);
      await waitFor(async () => callsOf(a.user.id) > passes, `the pass after "${body}"`);
      return message as Message;
    };

    // The first pass calls the phone's object, which answers that the phone is its only device online.
    await sendAndPass("one");
    const called = callsOf(phone.user.id);
    expect(called).toBeGreaterThan(0);
    // The phone has everything live on its dedupe socket: its object is not called again, for
    // messages nor for its own receipt (the conversation's sockets got that live, too).
    const two = await sendAndPass("two");
    await phoneChat.next("message", (f) => f.message?.body === "two");
    phoneChat.send({ type: "read", seq: two.seq });
    await aChat.next("receipt", (f) => f.readSeq === two.seq);
    await sendAndPass("three");
    expect(callsOf(phone.user.id)).toBe(called);
    const chatFrames = (inbox: TestSocket) => inbox.frames.filter((f) => (f.type === "message" && f.message!.kind !== "system") || f.type === "receipt");
    expect(chatFrames(phoneInbox)).toEqual([]);
    // Sync still has every message, "three" too though nothing came after it: the phone's object
    // asks the conversation it answered what it may have skipped, without a call being made to it.
    const phoneObject = userStub(env, phone.user.id);
    expect(await phoneObject.syncWatched()).toEqual([conv.id]);
    const synced = async () => (await syncAll(phone)).filter((m) => m.conversationId === conv.id && m.kind !== "system").map((m) => m.body);
    expect(await synced()).toEqual(["one", "two", "three"]);
    expect(callsOf(phone.user.id)).toBe(called);
    // Once more, skipped again, and exactly once.
    await sendAndPass("three and a half");
    expect(callsOf(phone.user.id)).toBe(called);
    expect(await synced()).toEqual(["one", "two", "three", "three and a half"]);

    // A second device opens a user socket: the conversation is told before it is let in, so the
    // next message reaches it, though the phone's object had answered for the phone alone.
    const laptop = await login(phone.user.username, "laptop");
    const laptopInbox = await userSocket(laptop);
    await sendAndPass("four");
    await laptopInbox.next("message", (f) => f.message?.body === "four");
    expect(callsOf(phone.user.id)).toBe(called + 1);
    expect(chatFrames(laptopInbox).map((f) => f.message!.body)).toEqual(["four"]);
    // The phone still gets nothing twice: "four" came on its conversation socket.
    expect(chatFrames(phoneInbox)).toEqual([]);

    // If a conversation that answered cannot be told, the device is not let in yet (it retries).
    const userObject = userStub(env, phone.user.id);
    const told: string[] = [];
    await runInDurableObject(userObject, (instance: UserDO) => {
      instance.useConnections({
        conversations: conversationPeersWith((conversationId, real) => ({
          memberOnline: async (...args) => {
            told.push(conversationId);
            if (told.length === 1) throw new Error("conversation unreachable");
            return real.memberOnline(...args);
          },
        })),
      });
    });
    const tablet = await login(phone.user.username, "tablet");
    const refused = await call("/ws", { token: tablet.token, headers: { upgrade: "websocket" } });
    await expectError(refused, 503, "unavailable");
    expect(refused.headers.get("retry-after")).toBe("1");
    const tabletInbox = await userSocket(tablet);
    expect(told).toEqual([conv.id, conv.id]);
    await sendAndPass("five");
    await tabletInbox.next("message", (f) => f.message?.body === "five");
    for (const socket of [aChat, phoneInbox, phoneChat, laptopInbox, tabletInbox]) socket.close();
  });

  it("trusts an answer only for the devices it names, before it expires, and not from before a device came online", () => {
    const quiet = new QuietMembers();
    const now = 1_000_000;
    const live = { phone: { after: 5, order: 2 } };
    // No answer yet, or an answer with no device online: the member is called.
    expect(quiet.covers("u", live, 6, [], now)).toBe(false);
    quiet.answered("u", null, now);
    expect(quiet.covers("u", live, 6, [], now)).toBe(false);
    quiet.answered("u", { devices: ["phone"], epoch: 3 }, now);
    expect(quiet.covers("u", live, 6, [], now)).toBe(true);
    // Messages from before its socket was live; a receipt broadcast before it was open; a device
    // named but not watching here; the answer expired.
    expect(quiet.covers("u", live, 5, [], now)).toBe(false);
    expect(quiet.covers("u", live, 6, [1], now)).toBe(false);
    expect(quiet.covers("u", live, 6, [2, 4], now)).toBe(true);
    expect(quiet.covers("u", {}, 6, [], now)).toBe(false);
    expect(quiet.covers("u", live, 6, [], now + QUIET_HINT_MS)).toBe(false);
    // A device coming online ends the answer; one from before its epoch, arriving late, is ignored.
    quiet.memberOnline("u", 4);
    expect(quiet.covers("u", live, 6, [], now)).toBe(false);
    quiet.answered("u", { devices: ["phone"], epoch: 3 }, now);
    expect(quiet.covers("u", live, 6, [], now)).toBe(false);
    quiet.answered("u", { devices: ["phone"], epoch: 4 }, now);
    expect(quiet.covers("u", live, 6, [], now)).toBe(true);
    expect(quiet.covers("u", { ...live, laptop: { after: 0, order: 1 } }, 6, [], now)).toBe(true);
    quiet.answered("u", { devices: ["phone", "laptop"], epoch: 4 }, now);
    expect(quiet.covers("u", live, 6, [], now)).toBe(false);
  });

  it("delivers one message to every user object of a 200-member group (through the queue)", async () => {
    const admin = await register();
    const ids = await bulkUsers(199);
    // One member has a live device, so delivery is visible on a socket too.
    const liveToken = await addDevice(ids[0]!, "d");
    const live = await connect("/ws", liveToken);
    await live.next("ready");
    // A second device of that member views the group on a dedupe socket: its user socket is
    // skipped by the queued fan-out too.
    const viewerToken = await addDevice(ids[0]!, "viewer");
    const viewerInbox = await connect("/ws", viewerToken);
    await viewerInbox.next("ready");

    const g = await json<{ conversation: Conversation }>("/group/create", { token: admin.token, body: { title: "big", memberIds: ids } }, 201);
    expect(g.conversation.members).toHaveLength(200);
    const viewerChat = await connect(`/conversations/${g.conversation.id}/ws?dedupe=1`, viewerToken);
    await viewerChat.next("ready");
    const { message } = await sendRest(admin, g.conversation.id, "hello everyone");
    await live.next("message", (f) => f.message?.id === message.id, QUEUE_WAIT_MS);
    await viewerChat.next("message", (f) => f.message?.id === message.id);
    viewerChat.close();
    await waitFor(
      async () =>
        !(await runInDurableObject(conversationStub(env, g.conversation.id), (_: ConversationDO, state: DurableObjectState) =>
          state.getWebSockets().some((ws) => ws.readyState === WebSocket.OPEN),
        )),
      "the viewer's close to reach the conversation",
    );
    const second = (await sendRest(admin, g.conversation.id, "and again")).message;
    await viewerInbox.next("message", (f) => f.message?.id === second.id, QUEUE_WAIT_MS);
    expect(viewerInbox.frames.filter((f) => f.type === "message" && f.message!.kind !== "system").map((f) => f.message!.id)).toEqual([second.id]);
    viewerInbox.close();

    await waitFor(async () => {
      const counts = await Promise.all([admin.user.id, ...ids].map((id) => deliveredTo(id, message.conversationId, message.seq)));
      return counts.every((n) => n === 1);
    }, "every member's object to have the message", QUEUE_WAIT_MS);

    // A member's read reaches the sender's user socket in a group this large too (the
    // messages' fan-out is queued; receipts go to the objects that need them directly).
    const adminInbox = await userSocket(admin);
    await json(`/conversations/${g.conversation.id}/receipts`, { token: liveToken, body: { type: "read", seq: second.seq } });
    expect(await adminInbox.next("receipt", (f) => f.userId === ids[0])).toMatchObject({
      conversationId: g.conversation.id,
      readSeq: second.seq,
      deliveredSeq: second.seq,
    });
    adminInbox.close();
    live.close();
  }, 4 * QUEUE_WAIT_MS);

  it("skips quiet members of a group whose fan-out is queued, from the answers the queue consumer reports", async () => {
    const admin = await register();
    // 51 members: above FANOUT_INLINE_MAX (50), so every message's fan-out is a queued job.
    const ids = await bulkUsers(50);
    const [watcher, other, offline] = [ids[0]!, ids[1]!, ids[2]!];
    const [watcherPhone, otherPhone] = [await addDevice(watcher, "phone"), await addDevice(other, "phone")];
    const g = await json<{ conversation: Conversation }>("/group/create", { token: admin.token, body: { title: "queued", memberIds: ids } }, 201);
    const conversationId = g.conversation.id;
    // The watcher's one device holds its user socket and the group open on a dedupe socket; the
    // other member's device only its user socket, so its object is always called.
    const opened = async (path: string, token: string) => {
      const socket = await connect(path, token);
      await socket.next("ready");
      return socket;
    };
    const watcherInbox = await opened("/ws", watcherPhone);
    const watcherChat = await opened(`/conversations/${conversationId}/ws?dedupe=1`, watcherPhone);
    const otherInbox = await opened("/ws", otherPhone);
    const answerFor = (userId: string) =>
      runInDurableObject(conversationStub(env, conversationId), (instance: ConversationDO) => instance.fanout.quiet.answerFor(userId, Date.now()));
    const send = async (body: string) => {
      const { message } = await sendRest(admin, conversationId, body);
      await otherInbox.next("message", (f) => f.message?.id === message.id, QUEUE_WAIT_MS);
      return message;
    };

    // A job's calls are answered, and the consumer reports the answers to the conversation.
    await send("one");
    // Only the watcher's object watches the group: its device got the job's messages live there (a
    // job queued before its chat socket opened, for the group's creation, may answer first).
    await waitFor(async () => (await answerFor(watcher))?.watched === true, "the watcher's answer to the job of \"one\", reported", QUEUE_WAIT_MS);
    const before = await waitFor(() => answerFor(other), "the other member's answer, reported", QUEUE_WAIT_MS);
    expect(before.watched).toBe(false);

    // The next job leaves the watcher out: its only device got the message live.
    const two = await send("two");
    await watcherChat.next("message", (f) => f.message?.id === two.id);
    // The job is over once it has reported (the other member's answer is then newer).
    await waitFor(async () => ((await answerFor(other))?.until ?? 0) > before.until, "the second job's report", QUEUE_WAIT_MS);
    expect(await deliveredTo(watcher, conversationId, two.seq)).toBe(0);
    expect(await deliveredTo(other, conversationId, two.seq)).toBe(1);
    // A member with no device online is still called (its object would queue the pushes).
    expect(await deliveredTo(offline, conversationId, two.seq)).toBe(1);
    expect(watcherInbox.frames.filter((f) => f.type === "message" && f.message!.kind !== "system")).toEqual([]);

    // A second device of the watcher opens a user socket: the conversation is told before it is
    // let in, so the next job calls the watcher's object again and the new device gets the message.
    const laptopInbox = await opened("/ws", await addDevice(watcher, "laptop"));
    const three = await send("three");
    await laptopInbox.next("message", (f) => f.message?.id === three.id, QUEUE_WAIT_MS);
    expect(await deliveredTo(watcher, conversationId, three.seq)).toBe(1);
    for (const socket of [watcherInbox, watcherChat, otherInbox, laptopInbox]) socket.close();
  }, 4 * QUEUE_WAIT_MS);

  it("takes reported answers only to calls asked for in the same wake-up", () => {
    // A new wake-up does not know the epochs announced before it, so an older report could name
    // fewer devices than are online now.
    // The wake-up's start is passed in: the clock may tick between two reads of it.
    const now = Date.now();
    const quiet = new QuietMembers(now);
    const live = { phone: { after: 5, order: 2 } };
    quiet.reported({ u: { devices: ["phone"], epoch: 1 } }, now - 1);
    expect(quiet.covers("u", live, 6, [], now)).toBe(false);
    quiet.reported({ u: { devices: ["phone"], epoch: 1 } }, now);
    expect(quiet.covers("u", live, 6, [], now)).toBe(true);
    expect(quiet.answerFor("u", now)).toEqual({ devices: ["phone"], epoch: 1, until: now + QUIET_HINT_MS, watched: true });
    // A reported "no device online" ends the answer, as an answer does.
    quiet.reported({ u: null }, now);
    expect(quiet.answerFor("u", now)).toBeNull();
  });
});
