// The user's inbox: each message relayed once per device across retries, in-order calls and
// queued jobs alike; receipts and conversation changes to every device; a push only when no
// device is live, and queued before anything is marked delivered.
import { afterEach, describe, expect, it } from "vitest";
import type { InboxEvent, LiveOn } from "../../../durable-objects/contract";
import { DELIVERED_RETENTION_MS, Inbox } from "../../../durable-objects/user/inbox";
import { ConversationPrefs, PREFS_MIGRATIONS, PREFS_MIGRATIONS_TRACK } from "../../../durable-objects/user/conversationPrefs";
import { migrate } from "../../../durable-objects/lib/migrate";
import type { PushJob } from "../../../durable-objects/user/pushJobs";
import type { Conversation } from "../../../protocol";
import { framesOf, type MemorySocket } from "../support/sockets";
import { deviceSockets, message, messageEvent, receipt, SUMMARY, TIMEOUT, userSql } from "../support/user";

const T = 1_800_000_000_000;

const closers: Array<() => void> = [];
afterEach(() => closers.splice(0).forEach((close) => close()));

/** The inbox of user "u" with sockets on `devices` (live at T unless `online` is false). */
function setup(devices: string[] = ["phone", "laptop"], online = true) {
  const sql = userSql();
  closers.push(() => sql.close());
  const { host, sockets } = deviceSockets();
  const socket = Object.fromEntries(devices.map((d) => [d, host.connect(d, { connectedAt: online ? T : T - TIMEOUT })]));
  const pushes: PushJob[] = [];
  const push = { failing: false, gate: null as Promise<void> | null };
  const views: string[] = [];
  const view = { conversation: null as Conversation | null };
  const left: string[] = [];
  migrate(sql, PREFS_MIGRATIONS, PREFS_MIGRATIONS_TRACK);
  const prefs = new ConversationPrefs(sql);
  const inbox = new Inbox({
    sql,
    sockets,
    queuePushes: async (jobs) => {
      if (push.gate) await push.gate;
      if (push.failing) throw new Error("queue unavailable");
      pushes.push(...jobs);
    },
    conversations: (conversationId) => ({
      viewForNotification: async (userId) => {
        views.push(`${conversationId} ${userId}`);
        return view.conversation;
      },
    }),
    left: (conversationId) => void left.push(conversationId),
    muted: (conversationId, now) => prefs.muted(conversationId, now),
  });
  const deliver = (events: InboxEvent[], inOrder = true, liveOn: LiveOn = {}, now = T) => inbox.deliver("u", events, inOrder, liveOn, now);
  return { sql, inbox, socket, pushes, push, views, view, left, prefs, deliver };
}

const messages = (...seqs: number[]) => seqs.map((seq) => messageEvent(seq));
/** The seqs of the message frames a socket got, in order. */
const seqsOf = (s: MemorySocket) => framesOf(s, "message").map((f) => (f.message as { seq: number }).seq);
const pushedSeqs = (pushes: PushJob[]) => pushes.map((p) => p.message.seq);

const modes = [
  ["in-order calls", true],
  ["queued jobs", false],
] as const;

describe.each(modes)("Inbox.deliver, %s", (_, inOrder) => {
  it("relays each message once per device across retries", async () => {
    const t = setup();
    await t.deliver(messages(1, 2), inOrder);
    await t.deliver(messages(1, 2, 3), inOrder);
    await t.deliver(messages(3), inOrder);
    expect([seqsOf(t.socket.phone!), seqsOf(t.socket.laptop!)]).toEqual([
      [1, 2, 3],
      [1, 2, 3],
    ]);
  });

  it("relays each message once across overlapping calls", async () => {
    const t = setup(["phone"], false);
    let open!: () => void;
    t.push.gate = new Promise<void>((resolve) => (open = resolve));
    const first = t.deliver(messages(1, 2), inOrder);
    const second = t.deliver(messages(1, 2, 3), inOrder);
    open();
    await Promise.all([first, second]);
    expect(seqsOf(t.socket.phone!)).toEqual([1, 2, 3]);
  });

  it("does not relay a message to the device that sent it", async () => {
    const t = setup();
    await t.deliver([messageEvent(1, { senderId: "u", senderDeviceId: "phone" }), messageEvent(2)], inOrder);
    expect([seqsOf(t.socket.phone!), seqsOf(t.socket.laptop!)]).toEqual([[2], [1, 2]]);
  });

  it("skips a device's user sockets for the messages its dedupe conversation socket got live", async () => {
    const t = setup();
    await t.deliver(messages(1, 2, 3, 4), inOrder, { phone: 2 });
    expect([seqsOf(t.socket.phone!), seqsOf(t.socket.laptop!)]).toEqual([
      [1, 2],
      [1, 2, 3, 4],
    ]);
  });

  it("queues a push per message when no device is live, but none for system messages or the user's own, and never twice", async () => {
    const t = setup(["phone"], false);
    const events = [messageEvent(1), messageEvent(2, { kind: "system", body: "{}" }), messageEvent(3, { senderId: "u", senderDeviceId: "laptop" }), messageEvent(4)];
    await t.deliver(events, inOrder);
    await t.deliver(events, inOrder);
    expect(pushedSeqs(t.pushes)).toEqual([1, 4]);
    expect(t.pushes[0]).toEqual({ userId: "u", conversation: SUMMARY, message: message(1) });
    // The stale socket still gets the frames: it may yet be alive.
    expect(seqsOf(t.socket.phone!)).toEqual([1, 2, 3, 4]);
  });

  it("queues no push for a muted conversation but for a message that mentions the user, and pushes again once the mute ends", async () => {
    const t = setup(["phone"], false);
    t.prefs.change("c1", { mutedUntil: T + 60_000 }, T);
    await t.deliver([messageEvent(1), messageEvent(2, { mentions: ["u"] }), messageEvent(3, { mentions: ["bob"] }), messageEvent(4, { conversationId: "c2" })], inOrder);
    expect(pushedSeqs(t.pushes)).toEqual([2, 4]);
    // Every message still reaches the sockets: a mute changes notifications, not delivery.
    expect(seqsOf(t.socket.phone!)).toEqual([1, 2, 3, 4]);
    await t.deliver(messages(5), inOrder, {}, T + 60_000);
    expect(pushedSeqs(t.pushes)).toEqual([2, 4, 5]);
  });

  it("queues no push while a device is live", async () => {
    const t = setup(["phone"]);
    await t.deliver(messages(1), inOrder);
    expect(t.pushes).toEqual([]);
  });

  it("fails the call when pushes cannot be queued, before marking anything delivered, so the retry queues them", async () => {
    const t = setup(["phone"], false);
    t.push.failing = true;
    await expect(t.deliver(messages(1, 2), inOrder)).rejects.toThrow("queue unavailable");
    expect(seqsOf(t.socket.phone!)).toEqual([]);
    t.push.failing = false;
    await t.deliver(messages(1, 2), inOrder);
    expect([pushedSeqs(t.pushes), seqsOf(t.socket.phone!)]).toEqual([
      [1, 2],
      [1, 2],
    ]);
  });
});

describe("Inbox.deliver", () => {
  it("sends receipts to every device, the reader's own included, after the messages", async () => {
    const t = setup();
    await t.deliver([{ type: "receipt", receipt: receipt("u", 1) }, messageEvent(1, { senderId: "u", senderDeviceId: "phone" }), messageEvent(2)]);
    const kinds = (s: MemorySocket) => framesOf(s).map((f) => (f.type === "message" ? `m${(f.message as { seq: number }).seq}` : f.type));
    expect([kinds(t.socket.phone!), kinds(t.socket.laptop!)]).toEqual([
      ["m2", "receipt"],
      ["m1", "m2", "receipt"],
    ]);
    expect(framesOf(t.socket.laptop!, "receipt")).toEqual([{ type: "receipt", ...receipt("u", 1) }]);
  });

  it.each([
    ["sends the conversation's view to every device", true],
    ["sends nothing when the conversation shows the user nothing", false],
  ])("on a change, fetches the conversation's view and %s", async (_, shown) => {
    const t = setup();
    const conversation = { id: "c9", title: "renamed", members: [{ userId: "u", role: "member", joinedAt: 1 }] } as unknown as Conversation;
    if (shown) t.view.conversation = conversation;
    await t.deliver([{ type: "changed", conversationId: "c9" }]);
    expect(t.views).toEqual(["c9 u"]);
    const expected = shown ? [{ type: "conversation", conversation }] : [];
    expect([framesOf(t.socket.phone!), framesOf(t.socket.laptop!)]).toEqual([expected, expected]);
  });

  it.each([
    ["a member", ["u", "v"], []],
    ["no longer a member", ["v"], ["c9"]],
  ])("on a change that shows the user %s, tells the object the user left only when they did", async (_, members, expected) => {
    const t = setup();
    t.view.conversation = { id: "c9", members: members.map((userId) => ({ userId, role: "member", joinedAt: 1 })) } as unknown as Conversation;
    await t.deliver([{ type: "changed", conversationId: "c9" }]);
    expect(t.left).toEqual(expected);
  });

  it("keeps the in-order mark per conversation", async () => {
    const t = setup(["phone"]);
    await t.deliver([messageEvent(5, { conversationId: "c2" })]);
    await t.deliver([messageEvent(3), messageEvent(5)]);
    expect(seqsOf(t.socket.phone!)).toEqual([5, 3, 5]);
  });

  it("keeps the in-order mark across a wake-up", async () => {
    const t = setup(["phone"], false);
    await t.deliver(messages(1, 2));
    const again = new Inbox({ sql: t.sql, sockets: deviceSockets().sockets, queuePushes: async (jobs) => void t.pushes.push(...jobs), conversations: () => ({ viewForNotification: async () => null }), left: () => {}, muted: () => false });
    await again.deliver("u", messages(2, 3), true, {}, T);
    expect(pushedSeqs(t.pushes)).toEqual([1, 2, 3]);
  });

  it("relays a legacy queued job carrying the whole message, and pushes it", async () => {
    const t = setup(["phone"], false);
    const legacy: InboxEvent = { type: "message", message: message(7), conversation: SUMMARY };
    await t.deliver([legacy], false);
    await t.deliver([legacy], false);
    expect(framesOf(t.socket.phone!, "message")).toEqual([{ type: "message", message: message(7) }]);
    expect(t.pushes).toEqual([{ userId: "u", conversation: SUMMARY, message: message(7) }]);
  });
});

describe("Inbox.prune", () => {
  it("forgets a queued job's messages after a day, and only then relays them again", async () => {
    const t = setup(["phone"]);
    await t.deliver(messages(1), false, {}, T);
    await t.deliver(messages(2), false, {}, T + 1000);
    expect(t.inbox.prune(T + DELIVERED_RETENTION_MS)).toBe(T);
    await t.deliver(messages(1, 2), false, {}, T + DELIVERED_RETENTION_MS);
    expect(t.inbox.prune(T + DELIVERED_RETENTION_MS + 1)).toBe(T + 1000);
    expect(t.inbox.prune(T + DELIVERED_RETENTION_MS + 1001)).toBeNull();
    await t.deliver(messages(1, 2), false, {}, T + DELIVERED_RETENTION_MS + 1001);
    expect(seqsOf(t.socket.phone!)).toEqual([1, 2, 1, 2]);
  });
});
