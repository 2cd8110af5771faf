// Web Push end to end against a real local push service (test/globals/push-service.ts) that checks
// the VAPID JWT and decrypts every push: subscribe, who gets a push, its payload and headers,
// 404/410 cleanup, retries with backoff, unsubscribe and logout.
// Test settings (vitest.config.ts): PUSH_ALLOW_INSECURE_LOCALHOST, retries 1 s then 2 s, 3 tries.
import { env } from "cloudflare:workers";
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { afterEach, describe, expect, inject, it, vi } from "vitest";
import { d1Shards } from "../kernel/d1/shards";
import type { Conversation, Message, PushPayload } from "../protocol";
import { handlePushBatch } from "../worker/push/consumer";
import { PUSH_SUBSCRIPTIONS_PER_USER, QUEUES, type PushDeliveryMessage, type PushJobMessage } from "../durable-objects/contract";
import { enqueuePushes, PUSH_SEND_BATCH_MAX, previewOf, toQueueMessage } from "../durable-objects/user/pushJobs";
import { topicFor } from "../worker/push/send";
import { userStub } from "../kernel/objects";
import { call, ciphertextFor, connect, d1Of, direct, expectError, group, json, login, register, sendRest, unique, waitFor, type Session } from "./helpers";

declare module "vitest" {
  export interface ProvidedContext {
    pushServiceUrl: string;
  }
}

const SERVICE = inject("pushServiceUrl");

interface MockSubscription {
  id: string;
  endpoint: string;
  keys: { p256dh: string; auth: string };
}
interface Received {
  headers: { ttl: string | null; urgency: string | null; topic: string | null; contentEncoding: string | null; authorization: string | null };
  vapid: { k: string; aud: string; exp: number; sub: string };
  payload: PushPayload;
  bodyBytes: number;
}
interface Mailbox {
  received: Received[];
  attempts: { status: number; error?: string }[];
}

/** A subscription as a browser's PushManager.subscribe({applicationServerKey}) would make it. */
async function newSubscription(): Promise<MockSubscription> {
  const res = await fetch(`${SERVICE}/subscriptions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ applicationServerKey: env.VAPID_PUBLIC_KEY }),
  });
  expect(res.status).toBe(201);
  return res.json();
}

async function script(sub: MockSubscription, responses: { status: number; retryAfter?: string }[]) {
  const res = await fetch(`${SERVICE}/subscriptions/${sub.id}/script`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ responses }),
  });
  expect(res.status).toBe(204);
}

async function mailbox(sub: MockSubscription): Promise<Mailbox> {
  const res = await fetch(`${SERVICE}/subscriptions/${sub.id}`);
  expect(res.status).toBe(200);
  return res.json();
}

/** Waits until the subscription has a push for `messageId`, and returns every push it has. */
async function pushFor(sub: MockSubscription, messageId: string, timeoutMs = 10_000): Promise<Received[]> {
  return waitFor(
    async () => {
      const box = await mailbox(sub);
      const bad = box.attempts.find((a) => a.error);
      if (bad) throw new Error(`the push service refused a push: ${bad.error}`);
      return box.received.some((r) => r.payload.messageId === messageId) && box.received;
    },
    `a push for ${messageId}`,
    timeoutMs,
  );
}

async function subscribe(s: Session, sub: Pick<MockSubscription, "endpoint" | "keys">, expected = 201) {
  return json<{ subscription: { endpoint: string } }>("/push/subscriptions", { token: s.token, body: { ...sub, expirationTime: null } }, expected);
}

/** Records the statements every D1 shard prepares from now on; returns their SQL so far. */
function spyOnShards(): () => string[] {
  const spies = d1Shards(env).all.map((database) => vi.spyOn(database, "prepare"));
  return () => spies.flatMap((spy) => spy.mock.calls.map(([sql]) => sql));
}

/** How many D1 shards hold these users' rows. */
const shardsHolding = (sessions: Session[]) => new Set(sessions.map((s) => d1Of(s.user.id))).size;

/** The subscriptions these users' objects keep, with their devices (at `endpoint` only, if given). */
async function storedSubscriptions(users: Session[], endpoint?: string) {
  const found: { endpoint: string; user_id: string; device_id: string }[] = [];
  for (const { user } of users) {
    for (const record of await userStub(env, user.id).pushSubscriptionRecords(user.id)) {
      if (endpoint === undefined || record.endpoint === endpoint) found.push({ endpoint: record.endpoint, user_id: user.id, device_id: record.deviceId });
    }
  }
  return found;
}

async function userSocket(s: Session) {
  const socket = await connect("/ws", s.token);
  await socket.next("ready");
  return socket;
}

/** A plaintext message for a push job, as the conversation would store it. */
function message(conversationId: string, senderId: string, seq: number, body: string | null): Message {
  return {
    id: unique("msg"),
    conversationId,
    seq,
    senderId,
    senderDeviceId: "dev",
    clientMsgId: unique("c"),
    kind: "text",
    body,
    media: [],
    threadRootSeq: null,
    createdAt: Date.now(),
  };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("push subscriptions", () => {
  it("serves the VAPID public key without a token", async () => {
    const { publicKey } = await json<{ publicKey: string }>("/push/vapid-public-key");
    expect(publicKey).toBe(env.VAPID_PUBLIC_KEY);
    expect(publicKey).toMatch(/^B[A-Za-z0-9_-]{86}$/); // 65-byte uncompressed P-256 point
  });

  it("subscribes idempotently per endpoint, tied to the device", async () => {
    const a = await register();
    const sub = await newSubscription();
    expect((await subscribe(a, sub)).subscription.endpoint).toBe(sub.endpoint);
    await subscribe(a, sub);
    const b = await register();
    expect(await storedSubscriptions([a, b], sub.endpoint)).toEqual([{ endpoint: sub.endpoint, user_id: a.user.id, device_id: a.device.id }]);
    // The same browser subscribing for another account now belongs to that account only.
    await subscribe(b, sub);
    expect(await storedSubscriptions([a, b], sub.endpoint)).toEqual([{ endpoint: sub.endpoint, user_id: b.user.id, device_id: b.device.id }]);
    // And back: the claim moves again, whoever held it last.
    await subscribe(a, sub);
    expect(await storedSubscriptions([a, b], sub.endpoint)).toEqual([{ endpoint: sub.endpoint, user_id: a.user.id, device_id: a.device.id }]);
    expect((await call(`/push/subscriptions?endpoint=${encodeURIComponent(sub.endpoint)}`, { method: "DELETE", token: a.token })).status).toBe(204);
  });

  it("keeps nothing for a device whose session ended while its subscribe ran, and 401s a signed-out token", async () => {
    const a = await register();
    const sub = await newSubscription();
    const record = { endpoint: sub.endpoint, deviceId: a.device.id, p256dh: sub.keys.p256dh, auth: sub.keys.auth, createdAt: Date.now() };
    // What the route's call finds when a logout ran between its auth and the call: no live session.
    expect(await userStub(env, a.user.id).subscribePush(a.user.id, "an ended session", record)).toBe(false);
    expect(await storedSubscriptions([a])).toEqual([]);
    expect((await call("/auth/logout", { method: "POST", token: a.token })).status).toBe(204);
    await expectError(await call("/push/subscriptions", { token: a.token, body: { ...sub, expirationTime: null } }), 401, "unauthorized");
    expect(await storedSubscriptions([a])).toEqual([]);
  });

  it("accepts https: endpoints and refuses http: ones that are not localhost, and bad keys", async () => {
    const a = await register();
    const keys = (await newSubscription()).keys;
    await subscribe(a, { endpoint: "https://push.example.test/send/abc", keys });
    for (const endpoint of [
      "http://push.example.test/send/abc",
      "http://10.0.0.1:8080/x",
      "ftp://127.0.0.1/x",
      "not a url",
      "https://user:pw@push.example.test/x",
      // Hosts the server must not be made to call: loopback, private, link-local, unique-local,
      // local names, IP literals in any spelling, and ports other than https's.
      "https://127.0.0.1:9999/x",
      "https://127.1/x",
      "https://0x7f000001/x",
      "https://169.254.169.254/latest",
      "https://10.0.0.1/x",
      "https://192.168.1.1/x",
      "https://[::1]/x",
      "https://[fd00::1]/x",
      "https://[fe80::1]/x",
      "https://[::ffff:10.0.0.1]/x",
      "https://8.8.8.8/x",
      "https://localhost/x",
      "https://printer.local/x",
      "https://metadata.google.internal/x",
      "https://intranet/x",
      "https://push.example.test:8443/x",
    ]) {
      await expectError(await call("/push/subscriptions", { token: a.token, body: { endpoint, keys } }), 400, "bad_request");
    }
    const endpoint = "https://push.example.test/send/def";
    // Not base64url of a P-256 point / a 16-byte secret; and a well-formed point not on the curve.
    await expectError(await call("/push/subscriptions", { token: a.token, body: { endpoint, keys: { ...keys, auth: "short" } } }), 400, "bad_request");
    await expectError(await call("/push/subscriptions", { token: a.token, body: { endpoint, keys: { ...keys, p256dh: "xyz" } } }), 400, "bad_request");
    await expectError(
      await call("/push/subscriptions", { token: a.token, body: { endpoint, keys: { ...keys, p256dh: `B${"A".repeat(86)}` } } }),
      400,
      "bad_request",
    );
    await expectError(await call("/push/subscriptions", { body: { endpoint, keys } }), 401, "unauthorized");
    expect((await storedSubscriptions([a])).map((s) => s.endpoint)).toEqual(["https://push.example.test/send/abc"]);
    // Clean up: nothing here should ever be pushed to.
    expect((await call(`/push/subscriptions?endpoint=${encodeURIComponent("https://push.example.test/send/abc")}`, { method: "DELETE", token: a.token })).status).toBe(204);
  });

  it("keeps at most PUSH_SUBSCRIPTIONS_PER_USER subscriptions per user, dropping the oldest", async () => {
    const a = await register();
    const keys = (await newSubscription()).keys;
    const endpoints = Array.from({ length: PUSH_SUBSCRIPTIONS_PER_USER + 1 }, (_, i) => `https://push.example.test/cap/${i}`);
    for (const endpoint of endpoints) {
      await subscribe(a, { endpoint, keys });
      // created_at orders them: keep each a distinct millisecond.
      await new Promise((r) => setTimeout(r, 2));
    }
    const stored = (await storedSubscriptions([a])).map((s) => s.endpoint);
    expect(stored.sort()).toEqual(endpoints.slice(1).sort());
    for (const endpoint of stored) await userStub(env, a.user.id).removePushSubscription(a.user.id, endpoint);
  });

  it("unsubscribes only the caller's own subscription, with 204 either way", async () => {
    const [a, b] = [await register(), await register()];
    const sub = await newSubscription();
    await subscribe(a, sub);
    const path = `/push/subscriptions?endpoint=${encodeURIComponent(sub.endpoint)}`;
    expect((await call(path, { method: "DELETE", token: b.token })).status).toBe(204);
    expect(await storedSubscriptions([a, b], sub.endpoint)).toHaveLength(1);
    expect((await call(path, { method: "DELETE", token: a.token })).status).toBe(204);
    expect(await storedSubscriptions([a, b], sub.endpoint)).toHaveLength(0);
    expect((await call(path, { method: "DELETE", token: a.token })).status).toBe(204);
    await expectError(await call("/push/subscriptions", { method: "DELETE", token: a.token }), 400, "bad_request");
  });
});

describe("push on send: a message sent over REST reaches offline members' push services", () => {
  it("gives an offline member exactly one decryptable push with the payload and headers of the contract", async () => {
    const alice = await register(unique("alice"));
    const bob = await register();
    const conv = await direct(alice, bob);
    const [bobSub, aliceSub] = [await newSubscription(), await newSubscription()];
    await subscribe(bob, bobSub);
    await subscribe(alice, aliceSub);

    const { message: sent } = await sendRest(alice, conv.id, "hello   bob,\nhow are you?");
    // A later push is the barrier after which a duplicate of the first would have arrived.
    const { message: marker } = await sendRest(alice, conv.id, "marker");
    await pushFor(bobSub, sent.id);
    const received = await pushFor(bobSub, marker.id);

    const pushes = received.filter((r) => r.payload.messageId === sent.id);
    expect(pushes).toHaveLength(1);
    const [push] = pushes;
    expect(push!.payload).toEqual({
      type: "message",
      conversationId: conv.id,
      seq: sent.seq,
      messageId: sent.id,
      senderId: alice.user.id,
      title: alice.user.displayName,
      body: "hello bob, how are you?",
    });
    expect(push!.headers.contentEncoding).toBe("aes128gcm");
    expect(Number(push!.headers.ttl)).toBeGreaterThanOrEqual(86_400);
    expect(push!.headers.urgency).toBe("high");
    expect(push!.headers.topic).toBe(await topicFor(conv.id));
    expect(push!.headers.topic).toMatch(/^[A-Za-z0-9_-]{1,32}$/);
    expect(push!.headers.authorization).toMatch(/^vapid t=[^,]+, k=/);
    expect(push!.vapid.k).toBe(env.VAPID_PUBLIC_KEY);
    expect(push!.vapid.sub).toBe(env.VAPID_SUBJECT);
    // RFC 8292: the push resource's origin, scheme included (the mock service is http:).
    expect(push!.vapid.aud).toBe(new URL(SERVICE).origin);
    // One Topic per conversation: the marker collapses onto the same one.
    expect(received.find((r) => r.payload.messageId === marker.id)!.headers.topic).toBe(push!.headers.topic);
    // Padded to a constant size, so the ciphertext does not tell the length of the preview.
    expect(push!.bodyBytes).toBe(received.find((r) => r.payload.messageId === marker.id)!.bodyBytes);
    // The sender is never pushed their own message.
    expect((await mailbox(aliceSub)).attempts).toEqual([]);
  });

  it("pushes nothing to a member with a live user socket", async () => {
    const [alice, bob, carol] = [await register(), await register(), await register()];
    const g: Conversation = await group(alice, [bob, carol], "trio");
    const [bobSub, carolSub] = [await newSubscription(), await newSubscription()];
    await subscribe(bob, bobSub);
    await subscribe(carol, carolSub);
    const bobOnline = await userSocket(bob);
    const { message: whileOnline } = await sendRest(alice, g.id, "bob is online");
    await bobOnline.next("message", (f) => f.message?.id === whileOnline.id);
    // Carol is offline: her push shows the fan-out for this message has run.
    await pushFor(carolSub, whileOnline.id);
    bobOnline.close();
    await waitFor(
      async () => (await json<{ presence: { status: string }[] }>(`/presence?userIds=${bob.user.id}`, { token: alice.token })).presence[0]?.status === "offline",
      "bob to be offline",
    );
    const { message: afterwards } = await sendRest(alice, g.id, "bob is offline");
    const received = await pushFor(bobSub, afterwards.id);
    expect(received.map((r) => r.payload.messageId)).toEqual([afterwards.id]);
    expect(received[0]!.payload).toMatchObject({ title: "trio", body: "bob is offline" });
  });

  it("titles group pushes with the group title and leaves the body out for E2EE groups", async () => {
    const [alice, bob] = [await register(), await register()];
    const plainGroup = await group(alice, [bob], "Climbing club");
    const { conversation: secretGroup } = await json<{ conversation: Conversation }>(
      "/group/create",
      { token: alice.token, body: { title: "secret", memberIds: [bob.user.id], e2ee: true } },
      201,
    );
    const sub = await newSubscription();
    await subscribe(bob, sub);
    const { message: plain } = await sendRest(alice, plainGroup.id, "see you at 6");
    const body = { conversationId: secretGroup.id, clientMsgId: unique("m"), ciphertext: await ciphertextFor(secretGroup.id) };
    const { message: secret } = await json<{ message: Message }>("/send", { token: alice.token, body }, 201);
    await pushFor(sub, plain.id);
    const received = await pushFor(sub, secret.id);
    expect(received.find((r) => r.payload.messageId === plain.id)!.payload).toMatchObject({ title: "Climbing club", body: "see you at 6" });
    const e2ee = received.find((r) => r.payload.messageId === secret.id)!;
    expect(e2ee.payload.title).toBe("secret");
    expect(e2ee.payload).not.toHaveProperty("body");
    expect(e2ee.headers.topic).not.toBe(await topicFor(plainGroup.id));
  });

  it("deletes a subscription the push service answers 410 for", async () => {
    const [alice, bob] = [await register(), await register()];
    const conv = await direct(alice, bob);
    const sub = await newSubscription();
    await subscribe(bob, sub);
    await script(sub, [{ status: 410 }]);
    await sendRest(alice, conv.id, "gone?");
    await waitFor(async () => (await storedSubscriptions([bob], sub.endpoint)).length === 0, "the subscription to be deleted");
    expect((await mailbox(sub)).attempts).toEqual([{ status: 410 }]);
  });

  it("deletes a subscription the push service answers 404 for", async () => {
    const [alice, bob] = [await register(), await register()];
    const conv = await direct(alice, bob);
    const sub = await newSubscription();
    await subscribe(bob, sub);
    await script(sub, [{ status: 404 }]);
    await sendRest(alice, conv.id, "gone?");
    await waitFor(async () => (await storedSubscriptions([bob], sub.endpoint)).length === 0, "the subscription to be deleted");
  });

  it("retries a 500, delivers on the next try, and does not push twice to the other subscriptions", async () => {
    const [alice, bob] = [await register(), await register()];
    const conv = await direct(alice, bob);
    const [flaky, healthy] = [await newSubscription(), await newSubscription()];
    await subscribe(bob, flaky);
    await subscribe(await login(bob.user.username, "phone"), healthy);
    await script(flaky, [{ status: 500 }]);
    const { message: sent } = await sendRest(alice, conv.id, "retry me");
    await pushFor(flaky, sent.id);
    expect((await mailbox(flaky)).attempts).toEqual([{ status: 500 }, { status: 201 }]);
    // The healthy one got it once; a marker afterwards shows no duplicate was on its way.
    const { message: marker } = await sendRest(alice, conv.id, "marker");
    const received = await pushFor(healthy, marker.id);
    expect(received.filter((r) => r.payload.messageId === sent.id)).toHaveLength(1);
    expect((await pushFor(flaky, marker.id)).filter((r) => r.payload.messageId === sent.id)).toHaveLength(1);
  });

  it("retries a 429 after its Retry-After and a 503 again, then delivers", async () => {
    const [alice, bob] = [await register(), await register()];
    const conv = await direct(alice, bob);
    const sub = await newSubscription();
    await subscribe(bob, sub);
    await script(sub, [{ status: 429, retryAfter: "1" }, { status: 503 }]);
    const { message: sent } = await sendRest(alice, conv.id, "third time lucky");
    await pushFor(sub, sent.id, 15_000);
    expect((await mailbox(sub)).attempts.map((a) => a.status)).toEqual([429, 503, 201]);
  });

  it("stops pushing to an unsubscribed endpoint", async () => {
    const [alice, bob] = [await register(), await register()];
    const conv = await direct(alice, bob);
    const [kept, dropped] = [await newSubscription(), await newSubscription()];
    await subscribe(bob, kept);
    await subscribe(bob, dropped);
    const res = await call(`/push/subscriptions?endpoint=${encodeURIComponent(dropped.endpoint)}`, { method: "DELETE", token: bob.token });
    expect(res.status).toBe(204);
    const { message: sent } = await sendRest(alice, conv.id, "only one of you");
    await pushFor(kept, sent.id);
    expect((await mailbox(dropped)).attempts).toEqual([]);
  });

  it("removes the device's subscriptions at logout", async () => {
    const [alice, bob] = [await register(), await register()];
    const conv = await direct(alice, bob);
    const phone = await login(bob.user.username, "phone");
    const [laptopSub, phoneSub] = [await newSubscription(), await newSubscription()];
    await subscribe(bob, laptopSub);
    await subscribe(phone, phoneSub);
    expect((await call("/auth/logout", { method: "POST", token: phone.token })).status).toBe(204);
    expect((await storedSubscriptions([bob])).map((s) => s.endpoint)).toEqual([laptopSub.endpoint]);
    const { message: sent } = await sendRest(alice, conv.id, "laptop only");
    await pushFor(laptopSub, sent.id);
    expect((await mailbox(phoneSub)).attempts).toEqual([]);
  });
});

describe("push jobs and the consumer", () => {
  it("delivers a job queued with enqueuePushes, with no body for an E2EE conversation", async () => {
    const [alice, bob] = [await register(), await register()];
    const conv = await direct(alice, bob);
    const sub = await newSubscription();
    await subscribe(bob, sub);
    const m = message(conv.id, alice.user.id, 7, "not to be shown");
    await enqueuePushes(env.PUSH_QUEUE, [{ userId: bob.user.id, conversation: { ...conv, e2ee: true }, message: m }]);
    const [push] = (await pushFor(sub, m.id)).filter((r) => r.payload.messageId === m.id);
    expect(push!.payload).toEqual({ type: "message", conversationId: conv.id, seq: 7, messageId: m.id, senderId: alice.user.id, title: alice.user.displayName });
  });

  it("cuts long previews and queues nothing for system messages or for the sender", async () => {
    const long = "x".repeat(500);
    expect(Array.from(previewOf(message("c", "u", 1, long))!)).toHaveLength(120);
    expect(previewOf({ ...message("c", "u", 1, "secret"), kind: "encrypted" })).toBeUndefined();
    expect(previewOf({ ...message("c", "u", 1, null), kind: "media", media: [{ id: "m", contentType: "image/png", size: 1, name: "cat.png" }] })).toBe("📎 cat.png");
    const send = vi.spyOn(env.PUSH_QUEUE, "send");
    const sendBatch = vi.spyOn(env.PUSH_QUEUE, "sendBatch");
    const sys: Message = { ...message("c", "u", 1, '{"event":"added"}'), kind: "system" };
    await enqueuePushes(env.PUSH_QUEUE, [{ userId: "someone", conversation: { id: "c", type: "group", title: "t", e2ee: false }, message: sys }]);
    await enqueuePushes(env.PUSH_QUEUE, [{ userId: "u", conversation: { id: "c", type: "group", title: "t", e2ee: false }, message: message("c", "u", 2, "mine") }]);
    expect(send).not.toHaveBeenCalled();
    expect(sendBatch).not.toHaveBeenCalled();
  });

  it("queues a delivery's pushes in one call per PUSH_SEND_BATCH_MAX, leaving out system messages and the sender's own", async () => {
    const [alice, bob] = [await register(), await register()];
    const conversation = { id: unique("conv"), type: "group" as const, title: "busy", e2ee: false };
    const sendBatch = vi.spyOn(env.PUSH_QUEUE, "sendBatch");
    const send = vi.spyOn(env.PUSH_QUEUE, "send");
    const fromAlice = Array.from({ length: PUSH_SEND_BATCH_MAX + 20 }, (_, i) => message(conversation.id, alice.user.id, i + 1, `m${i + 1}`));
    const system: Message = { ...message(conversation.id, alice.user.id, 500, '{"event":"added"}'), kind: "system" };
    const own = message(conversation.id, bob.user.id, 501, "mine");
    await enqueuePushes(env.PUSH_QUEUE, [...fromAlice, system, own].map((m) => ({ userId: bob.user.id, conversation, message: m })));
    expect(send).not.toHaveBeenCalled();
    const calls = sendBatch.mock.calls.map(([batch]) => [...batch].map((m) => (m.body as PushJobMessage).message.seq));
    expect(calls.map((seqs) => seqs.length)).toEqual([PUSH_SEND_BATCH_MAX, 20]);
    expect(calls.flat()).toEqual(fromAlice.map((m) => m.seq));
  });

  it("asks each user's object for its subscriptions, reading no D1 for them, and pushes each job to its own user's subscriptions", async () => {
    const [alice, bob, carol, dave] = [await register(), await register(), await register(), await register()];
    const conv = await group(alice, [bob, carol, dave], "many offline");
    const [bobSub, carolSub] = [await newSubscription(), await newSubscription()];
    await subscribe(bob, bobSub);
    await subscribe(carol, carolSub);
    const sent = [1, 2].map((seq) => message(conv.id, alice.user.id, seq, `hello ${seq}`));
    const jobs = [bob, carol, dave].flatMap((s) => sent.map((m) => toQueueMessage({ userId: s.user.id, conversation: conv, message: m })));
    const batch = createMessageBatch(
      QUEUES.push,
      jobs.map((job, i) => ({ id: `j${i}`, timestamp: new Date(), attempts: 1, body: job })),
    );
    const prepared = spyOnShards();
    await handlePushBatch(batch, env);
    // A group's pushes need no sender's name: nothing of the consumer's reaches D1 (other objects
    // of this isolate may be writing D1 meanwhile, so only what is about push counts).
    expect(prepared().filter((sql) => /push|"users"/.test(sql))).toEqual([]);
    expect((await getQueueResult(batch, createExecutionContext())).explicitAcks.sort()).toEqual(jobs.map((_, i) => `j${i}`).sort());
    for (const sub of [bobSub, carolSub]) {
      const received = await pushFor(sub, sent[1]!.id);
      expect(received.map((r) => r.payload.seq).sort()).toEqual([1, 2]);
      expect(received.every((r) => r.payload.title === conv.title && r.payload.conversationId === conv.id)).toBe(true);
    }
  });

  it("titles a batch's direct pushes with their senders' names, read once for the whole batch", async () => {
    const [alice, bob, carol] = [await register(), await register(), await register()];
    const [withAlice, withCarol] = [await direct(alice, bob), await direct(carol, bob)];
    const sub = await newSubscription();
    await subscribe(bob, sub);
    const sent = [
      message(withAlice.id, alice.user.id, 1, "from alice 1"),
      message(withAlice.id, alice.user.id, 2, "from alice 2"),
      message(withCarol.id, carol.user.id, 1, "from carol"),
    ];
    const batch = createMessageBatch(
      QUEUES.push,
      sent.map((m, i) => ({
        id: `d${i}`,
        timestamp: new Date(),
        attempts: 1,
        body: toQueueMessage({ userId: bob.user.id, conversation: m.conversationId === withAlice.id ? withAlice : withCarol, message: m }),
      })),
    );
    const prepared = spyOnShards();
    await handlePushBatch(batch, env);
    expect(prepared().filter((sql) => /from "users"/.test(sql))).toHaveLength(shardsHolding([alice, carol]));
    const received = await pushFor(sub, sent[2]!.id);
    const titleOf = (m: Message) => received.find((r) => r.payload.messageId === m.id)?.payload.title;
    expect(sent.map(titleOf)).toEqual([alice.user.displayName, alice.user.displayName, carol.user.displayName]);
  });

  it("logs a push that still fails after its last try, with the endpoint's origin and status", async () => {
    const [alice, bob] = [await register(), await register()];
    const sub = await newSubscription();
    await subscribe(bob, sub);
    await script(sub, [{ status: 502 }]);
    const errors = vi.spyOn(console, "error").mockImplementation(() => {});
    // The third and last try (PUSH_MAX_TRIES = 3): two were made before this delivery arrives again.
    const body: PushDeliveryMessage = {
      kind: "delivery",
      userId: bob.user.id,
      endpoint: sub.endpoint,
      topic: await topicFor("conv"),
      payload: { type: "message", conversationId: "conv", seq: 1, messageId: "m1", senderId: alice.user.id, title: "t" },
      tries: 1,
    };
    const batch = createMessageBatch(QUEUES.push, [{ id: "q1", timestamp: new Date(), attempts: 2, body }]);
    const ctx = createExecutionContext();
    await handlePushBatch(batch, env);
    const result = await getQueueResult(batch, ctx);
    expect(result.explicitAcks).toEqual(["q1"]);
    expect(result.retryMessages).toEqual([]);
    expect(errors).toHaveBeenCalledTimes(1);
    expect(String(errors.mock.calls[0]![0])).toContain(new URL(SERVICE).origin);
    expect(String(errors.mock.calls[0]![0])).toContain("502");
    expect(String(errors.mock.calls[0]![0])).not.toContain(sub.id); // the path is a capability
    // The subscription stays: a 5xx says nothing about it.
    expect(await storedSubscriptions([bob], sub.endpoint)).toHaveLength(1);
  });

  it("schedules the retry of a 500 with backoff, and after a Retry-After", async () => {
    const bob = await register();
    const sub = await newSubscription();
    await subscribe(bob, sub);
    await script(sub, [{ status: 500 }, { status: 429, retryAfter: "7" }]);
    const body: PushDeliveryMessage = {
      kind: "delivery",
      userId: bob.user.id,
      endpoint: sub.endpoint,
      topic: await topicFor("conv"),
      payload: { type: "message", conversationId: "conv", seq: 1, messageId: "m1", senderId: "s", title: "t" },
      tries: 0,
    };
    // getQueueResult does not report delays: watch the retry calls themselves.
    const first = createMessageBatch(QUEUES.push, [{ id: "q1", timestamp: new Date(), attempts: 1, body }]);
    const firstRetry = vi.spyOn(first.messages[0]!, "retry");
    await handlePushBatch(first, env);
    expect((await getQueueResult(first, createExecutionContext())).retryMessages).toEqual([{ msgId: "q1" }]);
    // Try 1 failed: try 2 comes after the base delay (PUSH_RETRY_BASE_SECONDS = 1).
    expect(firstRetry).toHaveBeenCalledWith({ delaySeconds: 1 });
    const second = createMessageBatch(QUEUES.push, [{ id: "q1", timestamp: new Date(), attempts: 2, body }]);
    const secondRetry = vi.spyOn(second.messages[0]!, "retry");
    await handlePushBatch(second, env);
    expect(secondRetry).toHaveBeenCalledWith({ delaySeconds: 7 });
    expect((await mailbox(sub)).attempts.map((a) => a.status)).toEqual([500, 429]);
  });
});
