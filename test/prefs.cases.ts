// Conversation settings through the real Worker, objects and D1 (docs/api.md "Conversation
// settings"): mute, archive and pin to top, changed by one device and seen by the user's other
// devices live (`conversationSettings`) and with the list; only for members; bad input changes
// nothing; a muted conversation pushes nothing (but a message that mentions the user), checked
// against the real local push service (test/globals/push-service.ts). Registered by
// test/api.test.ts (each test file starts a runtime of its own).
import { env } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import { CONVERSATION_SETTINGS_LIMITS, MUTED_ALWAYS, type Conversation, type ConversationSettings, type PushPayload } from "../protocol";
import { userStub } from "../kernel/objects";
import { call, connect, direct, expectError, group, json, login, register, sendRest, unique, waitFor, type Session } from "./helpers";

const NONE: ConversationSettings = { mutedUntil: null, archived: false, pinnedAt: null };

const put = (s: Session, conversationId: string, body: unknown) =>
  call(`/conversations/${conversationId}/settings`, { method: "PUT", token: s.token, body });

async function change(s: Session, conversationId: string, body: unknown): Promise<ConversationSettings> {
  const res = await json<{ conversationId: string; settings: ConversationSettings }>(`/conversations/${conversationId}/settings`, { method: "PUT", token: s.token, body });
  expect(res.conversationId).toBe(conversationId);
  return res.settings;
}

const list = async (s: Session) => (await json<{ conversations: Conversation[] }>("/conversations", { token: s.token })).conversations;
const settingsIn = async (s: Session, conversationId: string) => (await list(s)).find((c) => c.id === conversationId)?.settings;

/** What the user's object stores, read past the Worker: a refused change must leave it as it was. */
const stored = (s: Session) => userStub(env, s.user.id).conversationSettings(s.user.id);

async function userSocket(token: string) {
  const socket = await connect("/ws", token);
  await socket.next("ready");
  return socket;
}

// The local push service, as test/push.test.ts uses it.
declare module "vitest" {
  export interface ProvidedContext {
    pushServiceUrl: string;
  }
}
interface Mailbox {
  received: { payload: PushPayload }[];
  attempts: { status: number; error?: string }[];
}

async function pushSubscription(s: Session): Promise<string> {
  const service = inject("pushServiceUrl");
  const res = await fetch(`${service}/subscriptions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ applicationServerKey: env.VAPID_PUBLIC_KEY }),
  });
  expect(res.status).toBe(201);
  const sub = (await res.json()) as { id: string; endpoint: string; keys: { p256dh: string; auth: string } };
  await json("/push/subscriptions", { token: s.token, body: { endpoint: sub.endpoint, keys: sub.keys, expirationTime: null } }, 201);
  return `${service}/subscriptions/${sub.id}`;
}

/** Waits for a push of `messageId` and returns the ids of every message pushed so far, in order. */
async function pushedUpTo(mailboxUrl: string, messageId: string): Promise<string[]> {
  return waitFor(async () => {
    const box = (await (await fetch(mailboxUrl)).json()) as Mailbox;
    const bad = box.attempts.find((a) => a.error);
    if (bad) throw new Error(`the push service refused a push: ${bad.error}`);
    const ids = box.received.map((r) => r.payload.messageId);
    return ids.includes(messageId) && ids;
  }, `a push for ${messageId}`);
}

const send = (s: Session, conversationId: string, body: string, mentions?: string[]) =>
  json<{ message: { id: string } }>("/send", { token: s.token, body: { conversationId, clientMsgId: unique("m"), body, ...(mentions ? { mentions } : {}) } }, 201).then((r) => r.message);

export function conversationSettingsTests(): void {
  describe("conversation settings", () => {
    it("changes mute, archive and pin for the caller alone, carried on the list and the conversation", async () => {
      const [alice, bob] = [await register(), await register()];
      const [dm, other] = [await direct(alice, bob), await group(alice, [bob], "other")];
      expect(await settingsIn(alice, dm.id)).toEqual(NONE);

      const until = Date.now() + 8 * 3600_000;
      const muted = await change(alice, dm.id, { mutedUntil: until });
      expect(muted).toEqual({ mutedUntil: until, archived: false, pinnedAt: null });
      const pinning = Date.now();
      const all = await change(alice, dm.id, { archived: true, pinned: true });
      expect(all).toMatchObject({ mutedUntil: until, archived: true });
      expect(all.pinnedAt).toBeGreaterThanOrEqual(pinning);

      expect(await settingsIn(alice, dm.id)).toEqual(all);
      expect(await settingsIn(alice, other.id)).toEqual(NONE);
      expect((await json<{ conversation: Conversation }>(`/conversations/${dm.id}`, { token: alice.token })).conversation.settings).toEqual(all);
      // Another member's settings are their own.
      expect(await settingsIn(bob, dm.id)).toEqual(NONE);

      expect(await change(alice, dm.id, { mutedUntil: MUTED_ALWAYS })).toMatchObject({ mutedUntil: MUTED_ALWAYS });
      expect(await change(alice, dm.id, { mutedUntil: null, archived: false, pinned: false })).toEqual(NONE);
      expect(await settingsIn(alice, dm.id)).toEqual(NONE);
    });

    it("tells the user's other devices live, and a device that was away reads them with the list", async () => {
      const alice = await register(unique("alice"), "laptop");
      const bob = await register();
      const dm = await direct(alice, bob);
      const phone = await login(alice.user.username, "phone");
      const phoneSocket = await userSocket(phone.token);
      const bobSocket = await userSocket(bob.token);

      const settings = await change(alice, dm.id, { pinned: true, mutedUntil: MUTED_ALWAYS });
      const frame = await phoneSocket.next("conversationSettings");
      expect(frame).toEqual({ type: "conversationSettings", conversationId: dm.id, settings });
      phoneSocket.close();

      // The phone is away while the laptop archives; it reads the settings with the list.
      await change(alice, dm.id, { archived: true });
      expect(await settingsIn(phone, dm.id)).toEqual({ ...settings, archived: true });

      // The other member heard nothing: a later message is the barrier after which a frame would have come.
      const { message } = await sendRest(alice, dm.id, "barrier");
      await bobSocket.next("message", (f) => f.message?.id === message.id);
      expect(bobSocket.frames.filter((f) => f.type === "conversationSettings")).toEqual([]);
      bobSocket.close();
    });

    it("keeps an archived conversation archived when a new message comes, and still counts it unread", async () => {
      const [alice, bob] = [await register(), await register()];
      const dm = await direct(alice, bob);
      await change(bob, dm.id, { archived: true, mutedUntil: MUTED_ALWAYS });
      await sendRest(alice, dm.id, "one");
      await sendRest(alice, dm.id, "two");
      // Each entry of the list is read from its conversation: counted when the send is answered.
      const row = (await list(bob)).find((c) => c.id === dm.id);
      expect(row?.settings).toMatchObject({ archived: true, mutedUntil: MUTED_ALWAYS });
      expect(row?.unread).toBe(2);
    });

    it("refuses a pin beyond the limit with 400, changing nothing", async () => {
      const [alice, bob] = [await register(), await register()];
      const groups = [];
      for (let i = 0; i <= CONVERSATION_SETTINGS_LIMITS.pinsMax; i++) groups.push(await group(alice, [bob], `g${i}`));
      const pinned = [];
      for (const g of groups.slice(0, -1)) pinned.push((await change(alice, g.id, { pinned: true })).pinnedAt ?? 0);
      expect([...pinned].sort((a, b) => a - b)).toEqual(pinned);
      const before = await stored(alice);
      const extra = groups.at(-1)!;
      await expectError(await put(alice, extra.id, { pinned: true, archived: true }), 400, "bad_request");
      expect(await stored(alice)).toEqual(before);
      // Unpinning one makes room.
      await change(alice, groups[0]!.id, { pinned: false });
      expect((await change(alice, extra.id, { pinned: true })).pinnedAt).toBeGreaterThan(pinned.at(-1)!);
    });

    it("answers 400 to a bad body and changes nothing", async () => {
      const [alice, bob] = [await register(), await register()];
      const dm = await direct(alice, bob);
      await change(alice, dm.id, { archived: true });
      const before = await stored(alice);
      const bad: unknown[] = [
        {},
        { muted: true },
        { archived: "yes" },
        { pinned: 1 },
        { mutedUntil: -1 },
        { mutedUntil: 1.5 },
        { mutedUntil: "always" },
        { mutedUntil: MUTED_ALWAYS + 1 },
        { archived: false, extra: 1 },
        [],
        null,
      ];
      for (const body of bad) await expectError(await put(alice, dm.id, body), 400, "bad_request");
      await expectError(await call(`/conversations/${dm.id}/settings`, { method: "PUT", token: alice.token, rawBody: "{", headers: { "content-type": "application/json" } }), 400, "bad_request");
      expect(await stored(alice)).toEqual(before);
    });

    it("answers 404 to a non-member and to an unknown conversation, storing nothing, and 401 without a token", async () => {
      const [alice, bob, eve] = [await register(), await register(), await register()];
      const dm = await direct(alice, bob);
      await expectError(await put(eve, dm.id, { archived: true }), 404, "not_found");
      await expectError(await put(eve, unique("nope"), { archived: true }), 404, "not_found");
      expect(await stored(eve)).toEqual({});
      await expectError(await call(`/conversations/${dm.id}/settings`, { method: "PUT", body: { archived: true } }), 401, "unauthorized");
    });

    it("lets a former member archive the group they left, which they still see in their list", async () => {
      const [alice, bob] = [await register(), await register()];
      const g = await group(alice, [bob], "left behind");
      await call(`/conversations/${g.id}/members/${bob.user.id}`, { method: "DELETE", token: bob.token });
      expect(await change(bob, g.id, { archived: true })).toEqual({ ...NONE, archived: true });
      const row = (await list(bob)).find((c) => c.id === g.id);
      expect(row?.leftSeq).toBeGreaterThan(1);
      expect(row?.settings).toEqual({ ...NONE, archived: true });
    });

    it("pushes nothing for a muted conversation but a message that mentions the user, and pushes again once unmuted", async () => {
      const [alice, bob, carol] = [await register(), await register(), await register()];
      const g = await group(alice, [bob, carol], "muted group");
      const bobBox = await pushSubscription(bob);
      await change(bob, g.id, { mutedUntil: MUTED_ALWAYS });

      const quiet = await send(alice, g.id, "not for bob's lock screen");
      const carolOnly = await send(alice, g.id, "hey carol", [carol.user.id]);
      const mention = await send(alice, g.id, "hey bob", [bob.user.id]);
      // Pushes of one conversation are queued in its order: the mention's push is the barrier.
      expect(await pushedUpTo(bobBox, mention.id)).toEqual([mention.id]);

      await change(bob, g.id, { mutedUntil: null });
      const loud = await send(alice, g.id, "unmuted");
      expect(await pushedUpTo(bobBox, loud.id)).toEqual([mention.id, loud.id]);
      // Unread counts still count every message while muted.
      expect((await list(bob)).find((c) => c.id === g.id)?.unread).toBe(4);
    });
  });
}
