// The REST API through the real Worker, Durable Objects and D1: every endpoint of the spine and
// its error paths.
import { env, exports } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { messageActionTests } from "./actions.cases";
import { groupInfoTests } from "./groupinfo.cases";
import { conversationSettingsTests } from "./prefs.cases";
import { conversationListTests } from "./list.cases";
import { shardTests } from "./shards.cases";
import type { Conversation, Message, OwnDevice, Receipt, User } from "../protocol";
import { conversationStub, throttleStub, userStub } from "../kernel/objects";
import { throttleKeys } from "../worker/lib/throttle";
import { TICKET_HEADERS } from "../kernel/identity";
import { issueTicket } from "../worker/lib/tickets";
import { mintSessionToken, sessionKeys } from "../worker/lib/sessionTokens";
import type { ConversationDO } from "../durable-objects/conversation/ConversationDO";
import { peersOf } from "../durable-objects/contract";
import {
  call,
  connect,
  direct,
  expectError,
  group,
  holdDeferredPass,
  countOnAllShards,
  d1Of,
  inD1,
  json,
  login,
  openConversation,
  pushKeys,
  register,
  sendRest,
  setObjectSettings,
  signInDevice,
  unique,
  waitFor,
  withoutDevicesTable,
  withoutTables,
  type Session,
} from "./helpers";

describe("accounts", () => {
  it("registers, logs in as a second device, and answers /me per device", async () => {
    const name = unique("Alice");
    const first = await register(name, "laptop");
    expect(first.user.username).toBe(name);
    expect(first.user.displayName).toBe(name);
    expect(first.device.name).toBe("laptop");
    // Opaque and URL-safe: a session id of 128 random bits and its MAC.
    expect(first.token).toMatch(/^[A-Za-z0-9._-]{43,}$/);

    const second = await login(name.toUpperCase(), "phone");
    expect(second.user.id).toBe(first.user.id);
    expect(second.device.id).not.toBe(first.device.id);
    expect(second.token).not.toBe(first.token);

    const me1 = await json<{ user: User; device: { id: string } }>("/me", { token: first.token });
    const me2 = await json<{ user: User; device: { id: string } }>("/me", { token: second.token });
    expect(me1.device.id).toBe(first.device.id);
    expect(me2.device.id).toBe(second.device.id);
    expect(me2.user.id).toBe(first.user.id);
  });

  it("stores only a salted PBKDF2 hash and a token hash", async () => {
    const s = await register();
    const row = await d1Of(s.user.id).prepare("SELECT * FROM users WHERE id = ?").bind(s.user.id).first<Record<string, unknown>>();
    expect(JSON.stringify(row)).not.toContain("correct horse");
    expect(row?.password_iterations).toBe(100_000);
    const device = await d1Of(s.device.id).prepare("SELECT token_hash FROM devices WHERE id = ?").bind(s.device.id).first<{ token_hash: string }>();
    expect(device?.token_hash).toBeTruthy();
    expect(device?.token_hash).not.toBe(s.token);
  });

  it("refuses a taken username case-insensitively with 409 and creates nothing", async () => {
    const name = unique("bob");
    await register(name);
    const before = await countOnAllShards("users");
    const res = await call("/auth/register", { body: { username: name.toUpperCase(), password: "another one" } });
    await expectError(res, 409, "conflict");
    expect(await countOnAllShards("users")).toBe(before);
  });

  it("completes a registration sent again after it created the account but not its device; otherwise the name is taken", async () => {
    const name = unique("retry");
    const first = await register(name);
    // Same name and password while the account has a device: taken.
    await expectError(await call("/auth/register", { body: { username: name, password: "correct horse" } }), 409, "conflict");
    // What a failure between the account and its first device leaves: the account, no device.
    await d1Of(first.user.id).prepare("DELETE FROM devices WHERE user_id = ?").bind(first.user.id).run();
    await expectError(await call("/auth/register", { body: { username: name, password: "another one" } }), 409, "conflict");
    const again = await json<{ user: User; token: string }>("/auth/register", { body: { username: name, password: "correct horse", deviceName: "phone" } }, 201);
    expect(again.user.id).toBe(first.user.id);
    expect((await json<{ user: User }>("/me", { token: again.token })).user.id).toBe(first.user.id);
    // An account older than the retry window is someone's: taken, even with no device.
    await d1Of(first.user.id).prepare("DELETE FROM devices WHERE user_id = ?").bind(first.user.id).run();
    await d1Of(first.user.id).prepare("UPDATE users SET created_at = created_at - 7200000 WHERE id = ?").bind(first.user.id).run();
    await expectError(await call("/auth/register", { body: { username: name, password: "correct horse" } }), 409, "conflict");
  });

  it("limits group creation per user (429 with Retry-After)", async () => {
    const [a, b] = [await register(), await register()];
    await group(a, [b]);
    // The test settings allow a million an hour: put a's bucket an hour in debt instead.
    await runInDurableObject(throttleStub(env, throttleKeys.groupCreator(a.user.id)), async (_o, state) => {
      await state.storage.put("bucket", { tokens: -1_000_000, at: Date.now() });
    });
    const res = await call("/group/create", { token: a.token, body: { title: "again", memberIds: [b.user.id] } });
    await expectError(res, 429, "rate_limited");
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    await group(b, [a]); // b is not limited by a's creations
  });

  it("strips control and bidi characters from display names, device names and group titles", async () => {
    const name = unique("bidi");
    const s = await json<{ user: User; device: { name: string } }>(
      "/auth/register",
      { body: { username: name, password: "correct horse", displayName: "\u202Eevil\u0000 name\u2066", deviceName: "\u200fphone\u0007" } },
      201,
    );
    expect(s.user.displayName).toBe("evil name");
    expect(s.device.name).toBe("phone");
    const session = await login(name);
    const { conversation } = await json<{ conversation: Conversation }>("/group/create", { token: session.token, body: { title: "\u202Dteam\u202C", memberIds: [] } }, 201);
    expect(conversation.title).toBe("team");
    // Nothing visible left: 400 as for an empty name.
    await expectError(await call("/auth/register", { body: { username: unique("bidi"), password: "correct horse", displayName: "\u202E\u0000" } }), 400, "bad_request");
  });

  it("rejects invalid registrations with 400 and issues", async () => {
    for (const body of [
      { username: "ab", password: "long enough" },
      { username: "has space", password: "long enough" },
      { username: "x".repeat(33), password: "long enough" },
      { username: unique("ok"), password: "short" },
      { username: unique("ok"), password: "p".repeat(257) },
      { username: unique("ok"), password: "long enough", extra: 1 },
      { password: "long enough" },
    ]) {
      const res = await call("/auth/register", { body });
      const err = await expectError(res, 400, "bad_request");
      expect(err).toHaveProperty("error.issues");
    }
    await expectError(await call("/auth/register", { rawBody: "{not json", headers: { "content-type": "application/json" } }), 400, "bad_request");
    await expectError(await call("/auth/register", { rawBody: "username=x", headers: { "content-type": "text/plain" } }), 400, "bad_request");
  });

  it("rejects bodies over 64 KiB with 413", async () => {
    const res = await call("/auth/register", { body: { username: unique("big"), password: "x".repeat(70_000) } });
    await expectError(res, 413, "payload_too_large");
  });

  it("answers 401 alike for an unknown user and a wrong password", async () => {
    const s = await register();
    const wrong = await call("/auth/login", { body: { username: s.user.username, password: "not the password" } });
    const unknown = await call("/auth/login", { body: { username: unique("ghost"), password: "not the password" } });
    const a = await expectError(wrong, 401, "unauthorized");
    const b = await expectError(unknown, 401, "unauthorized");
    expect(a.error.message).toBe(b.error.message);
  });

  it("throttles failed logins per account with a growing Retry-After, and the right password after", async () => {
    const s = await register();
    const from = { "cf-connecting-ip": "192.0.2.10" };
    const attempt = (password: string) => call("/auth/login", { body: { username: s.user.username, password }, headers: from });
    // Five failures are free (401); the sixth blocks for 1 s, answered 429 at once.
    for (let i = 0; i < 5; i++) await expectError(await attempt("not the password"), 401, "unauthorized");
    const blocked = await attempt("not the password");
    await expectError(blocked, 429, "rate_limited");
    expect(blocked.headers.get("retry-after")).toBe("1");
    // Blocked, even the right password is refused (nothing is hashed).
    await expectError(await attempt("correct horse"), 429, "rate_limited");
    await new Promise((r) => setTimeout(r, 1100));
    const longer = await attempt("not the password");
    await expectError(longer, 429, "rate_limited");
    expect(longer.headers.get("retry-after")).toBe("2");
    await new Promise((r) => setTimeout(r, 2100));
    expect((await attempt("correct horse")).status).toBe(200);
    // A success forgets the account's failures.
    await expectError(await attempt("not the password"), 401, "unauthorized");
  });

  it("throttles failed logins per client address across accounts, unknown names included", async () => {
    const from = { "cf-connecting-ip": "198.51.100.20" };
    for (let i = 0; i < 20; i++) {
      await expectError(await call("/auth/login", { body: { username: unique("nobody"), password: "wrong one" }, headers: from }), 401, "unauthorized");
    }
    await expectError(await call("/auth/login", { body: { username: unique("nobody"), password: "wrong one" }, headers: from }), 429, "rate_limited");
    // Another address is not affected.
    const s = await register();
    expect((await call("/auth/login", { body: { username: s.user.username, password: "correct horse" }, headers: { "cf-connecting-ip": "198.51.100.21" } })).status).toBe(200);
  });

  it("throttles registrations per client address", async () => {
    const address = "203.0.113.30";
    // The test settings allow a million an hour: put this address's bucket an hour in debt instead.
    await runInDurableObject(throttleStub(env, throttleKeys.registerAddress(address)), async (_o, state) => {
      await state.storage.put("bucket", { tokens: -1_000_000, at: Date.now() });
    });
    const res = await call("/auth/register", { body: { username: unique("flood"), password: "correct horse" }, headers: { "cf-connecting-ip": address } });
    await expectError(res, 429, "rate_limited");
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    await register(); // another address (here: none) registers
  });

  it("refuses common passwords, the username, and passwords of only spaces or control characters", async () => {
    const username = unique("Weak");
    for (const password of ["password", "12345678", "PassWord1", "        ", "\u0000".repeat(8), "\t\n\u200b\u00a0    ", username.toUpperCase(), "aaaaaaaa"]) {
      const res = await call("/auth/register", { body: { username, password } });
      await expectError(res, 400, "bad_request");
    }
    expect((await call("/auth/register", { body: { username, password: "correct horse" } })).status).toBe(201);
  });

  it("answers 401 for a missing, malformed or unknown token", async () => {
    await expectError(await call("/me"), 401, "unauthorized");
    await expectError(await call("/me", { headers: { authorization: "Basic abc" } }), 401, "unauthorized");
    await expectError(await call("/me", { token: "A".repeat(43) }), 401, "unauthorized");
  });

  it("kills the token at once on logout and closes that device's sockets with 4001", async () => {
    const a = await register();
    const b = await register();
    const other = await login(a.user.username, "other device");
    const conv = await direct(a, b);
    const convSocket = await openConversation(a, conv.id);
    const userSocket = await connect("/ws", a.token);
    await userSocket.next("ready");
    const otherSocket = await openConversation(other, conv.id);

    const res = await call("/auth/logout", { method: "POST", token: a.token });
    expect(res.status).toBe(204);
    await expectError(await call("/me", { token: a.token }), 401, "unauthorized");
    expect((await convSocket.waitClosed()).code).toBe(4001);
    expect((await userSocket.waitClosed()).code).toBe(4001);
    // Each got a `closing` frame first: under workerd the close itself can take ~15 s to end.
    for (const s of [convSocket, userSocket]) expect(s.frames.at(-1)).toMatchObject({ type: "closing", code: 4001 });
    // The user's other device is untouched.
    await json("/me", { token: other.token });
    otherSocket.send({ type: "send", clientMsgId: "still-here", body: "hi" });
    await otherSocket.next("ack");
    expect(otherSocket.closed).toBeNull();
    otherSocket.close();
  });

  it("issues single-use tickets that open a socket once", async () => {
    const a = await register();
    const b = await register();
    const conv = await direct(a, b);
    const { ticket, expiresAt } = await json<{ ticket: string; expiresAt: number }>("/auth/ticket", { method: "POST", token: a.token });
    expect(expiresAt - Date.now()).toBeLessThanOrEqual(60_000);
    expect(expiresAt).toBeGreaterThan(Date.now());
    const socket = await connect(`/conversations/${conv.id}/ws?ticket=${ticket}`, null);
    await socket.next("ready");
    socket.close();
    const again = await call(`/conversations/${conv.id}/ws?ticket=${ticket}`, { headers: { upgrade: "websocket" } });
    await expectError(again, 401, "unauthorized");
    await expectError(await call(`/ws?ticket=${ticket}`, { headers: { upgrade: "websocket" } }), 401, "unauthorized");
    await expectError(await call(`/conversations/${conv.id}/ws`, { headers: { upgrade: "websocket" } }), 401, "unauthorized");
    // The user socket the same way.
    const userTicket = (await json<{ ticket: string }>("/auth/ticket", { method: "POST", token: a.token })).ticket;
    const userSocket = await connect(`/ws?ticket=${userTicket}`, null);
    expect((await userSocket.next("ready")).userId).toBe(a.user.id);
    userSocket.close();
    await expectError(await call(`/ws?ticket=${userTicket}`, { headers: { upgrade: "websocket" } }), 401, "unauthorized");

    // The user's object takes a user socket's ticket from headers only the Worker sets: the same
    // headers sent by a client (here naming the ticket just used) are dropped, and its token opens the socket.
    const nonce = userTicket.split(".")[3]!;
    const forged = await connect("/ws", a.token, { [TICKET_HEADERS.nonce]: nonce, [TICKET_HEADERS.expiresAt]: String(Date.now() + 30_000) });
    expect((await forged.next("ready")).userId).toBe(a.user.id);
    forged.close();
  });

  it("lets exactly one of three racing handshakes through with one ticket", async () => {
    const a = await register();
    const b = await register();
    const conv = await direct(a, b);
    const { ticket } = await json<{ ticket: string }>("/auth/ticket", { method: "POST", token: a.token });
    const tries = await Promise.all(
      [`/conversations/${conv.id}/ws`, `/conversations/${conv.id}/ws`, "/ws"].map((path) => call(`${path}?ticket=${ticket}`, { headers: { upgrade: "websocket" } })),
    );
    expect(tries.map((r) => r.status).sort()).toEqual([101, 401, 401]);
    for (const r of tries) {
      r.webSocket?.accept();
      r.webSocket?.close();
    }
  });

  it("answers 503 with Retry-After when the user's object resets under a ticket handshake, and the ticket still works", async () => {
    const a = await register();
    const { ticket } = await json<{ ticket: string }>("/auth/ticket", { method: "POST", token: a.token });
    // Hold the user's object, let the handshake's call queue behind the hold, then reset the
    // object (as a deploy or an eviction with calls in flight does). The gate is polled: a
    // promise made inside the object's context cannot settle one outside it.
    const gate = { holding: false, release: false };
    const reset = runInDurableObject(userStub(env, a.user.id), (_: unknown, state: DurableObjectState) =>
      state.blockConcurrencyWhile(async () => {
        gate.holding = true;
        while (!gate.release) await scheduler.wait(10);
        state.abort("reset by the test");
      }),
    ).catch((err: Error) => err.message);
    while (!gate.holding) await scheduler.wait(10);
    const handshake = call(`/ws?ticket=${ticket}`, { headers: { upgrade: "websocket" } });
    await scheduler.wait(200);
    gate.release = true;
    expect(await reset).toBe("reset by the test");
    const res = await handshake;
    expect(res.headers.get("retry-after")).toBe("1");
    const body = await expectError(res, 503, "unavailable");
    expect((body.error as { requestId?: string }).requestId).toBeTruthy();
    // The reset object never saw the ticket, so it was not used up: the retry opens the socket.
    const socket = await connect(`/ws?ticket=${ticket}`, null);
    expect((await socket.next("ready")).userId).toBe(a.user.id);
    socket.close();
  });

  it("refuses tickets that are altered, foreign, expired, too long-lived, or taken before a logout", async () => {
    const a = await register();
    const b = await register();
    const conv = await direct(a, b);
    const refused = async (ticket: string, path = `/conversations/${conv.id}/ws`) =>
      expectError(await call(`${path}?ticket=${encodeURIComponent(ticket)}`, { headers: { upgrade: "websocket" } }), 401, "unauthorized");
    const { ticket } = await json<{ ticket: string }>("/auth/ticket", { method: "POST", token: a.token });
    const [userId, deviceId, expiresAt, nonce, mac] = ticket.split(".");
    expect([userId, deviceId]).toEqual([a.user.id, a.device.id]);
    // Each field changed: the MAC no longer matches. A's ticket made out to b opens nothing either.
    await refused([b.user.id, b.device.id, expiresAt, nonce, mac].join("."));
    await refused([userId, deviceId, Number(expiresAt) + 1, nonce, mac].join("."));
    await refused([userId, deviceId, expiresAt, nonce!.replace(/^./, (c) => (c === "A" ? "B" : "A")), mac].join("."));
    await refused([userId, deviceId, expiresAt, nonce, mac!.replace(/^./, (c) => (c === "A" ? "B" : "A"))].join("."));
    await refused(`${ticket}x`);
    await refused("not-a-ticket");
    // The same fields and MAC spelled otherwise: a leading zero, a last MAC character that differs
    // only in the two bits base64url drops.
    await refused([userId, deviceId, `0${expiresAt}`, nonce, mac].join("."));
    const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    await refused([userId, deviceId, expiresAt, nonce, `${mac!.slice(0, -1)}${B64[B64.indexOf(mac!.at(-1)!) ^ 1]}`].join("."));
    // Signed with another key; expired; valid for longer than tickets live (60 s at most).
    const identity = { userId: a.user.id, deviceId: a.device.id };
    await refused(await issueTicket(identity, Date.now() + 30_000, "some-other-secret"));
    await refused(await issueTicket(identity, Date.now() - 1, env.TICKET_SECRET));
    await refused(await issueTicket(identity, Date.now() + 120_000, env.TICKET_SECRET));
    // None of the refusals used the real ticket up.
    const socket = await connect(`/conversations/${conv.id}/ws?ticket=${ticket}`, null);
    await socket.next("ready");
    socket.close();

    // A ticket taken before a logout opens nothing after it.
    const before = await json<{ ticket: string }>("/auth/ticket", { method: "POST", token: a.token });
    expect((await call("/auth/logout", { method: "POST", token: a.token })).status).toBe(204);
    await refused(before.ticket);
    await refused(before.ticket, "/ws");
  });

  it("refuses a socket from a foreign origin with 403", async () => {
    const a = await register();
    const b = await register();
    const conv = await direct(a, b);
    const res = await call(`/conversations/${conv.id}/ws`, {
      token: a.token,
      headers: { upgrade: "websocket", origin: "https://evil.example" },
    });
    await expectError(res, 403, "forbidden");
    const same = await connect(`/conversations/${conv.id}/ws`, a.token, { origin: "http://chat.test" });
    await same.next("ready");
    same.close();
  });
});

describe("sessions: signed tokens, checked by the user's object, never by D1", () => {
  /** `text` with its first character changed (a base64url one changes the first byte it encodes). */
  const flip = (text: string) => (text[0] === "A" ? "B" : "A") + text.slice(1);
  const withPart = (token: string, index: number, change: (p: string) => string) =>
    token
      .split(".")
      .map((p, i) => (i === index ? change(p) : p))
      .join(".");
  const signedInInD1 = async (deviceId: string) => (await countOnAllShards("devices WHERE id = ? AND token_hash IS NOT NULL", deviceId)) > 0;

  it("authenticates REST calls, tickets and both sockets with D1's devices table out of reach", async () => {
    const a = await register();
    const b = await register();
    const conv = await direct(a, b);
    await withoutDevicesTable(async () => {
      await sendRest(a, conv.id, "no devices table");
      const { messages } = await json<{ messages: Message[] }>(`/conversations/${conv.id}/messages?after=0`, { token: b.token });
      expect(messages.map((m) => m.body)).toContain("no devices table");
      const { ticket } = await json<{ ticket: string }>("/auth/ticket", { method: "POST", token: a.token });
      const byTicket = await connect(`/conversations/${conv.id}/ws?ticket=${ticket}`, null);
      await byTicket.next("ready");
      const byBearer = await openConversation(a, conv.id);
      const userSocket = await connect("/ws", a.token);
      expect((await userSocket.next("ready")).deviceId).toBe(a.device.id);
      // The outage is real: a route that reads the table fails under it.
      await expectError(await call(`/users/${b.user.id}/devices`, { token: a.token }), 500, "internal");
      for (const s of [byTicket, byBearer, userSocket]) s.close();
    });
  });

  it("answers GET /me from the user's object, with the profile and device name as last changed and D1's users and devices out of reach", async () => {
    const a = await register();
    await json("/me", { method: "PATCH", token: a.token, body: { displayName: "Renamed" } });
    await json(`/devices/${a.device.id}`, { method: "PATCH", token: a.token, body: { name: "laptop" } });
    const second = await login(a.user.username, "phone");
    await withoutTables(["users", "devices"], async () => {
      expect(await json("/me", { token: a.token })).toEqual({ user: { ...a.user, displayName: "Renamed" }, device: { ...a.device, name: "laptop" } });
      expect(await json("/me", { token: second.token })).toEqual({ user: { ...a.user, displayName: "Renamed" }, device: second.device });
      await expectError(await call(`/users/${a.user.id}`, { token: a.token }), 500, "internal");
    });
  });

  it("kills a logged-out token at once for REST and every open socket, D1's devices table out of reach, and tells D1 once it is back", async () => {
    const a = await register();
    const b = await register();
    const other = await login(a.user.username, "other device");
    const conv = await direct(a, b);
    const endpoint = `https://push.example.test/${unique("e")}`;
    await json("/push/subscriptions", { token: a.token, body: { endpoint, keys: await pushKeys(), expirationTime: null } }, 201);
    await json("/push/subscriptions", { token: other.token, body: { endpoint: `${endpoint}-other`, keys: await pushKeys(), expirationTime: null } }, 201);
    const convByBearer = await openConversation(a, conv.id);
    const { ticket } = await json<{ ticket: string }>("/auth/ticket", { method: "POST", token: a.token });
    const convByTicket = await connect(`/conversations/${conv.id}/ws?ticket=${ticket}`, null);
    await convByTicket.next("ready");
    const userSocket = await connect("/ws", a.token);
    await userSocket.next("ready");
    const unused = (await json<{ ticket: string }>("/auth/ticket", { method: "POST", token: a.token })).ticket;

    await withoutDevicesTable(async () => {
      expect((await call("/auth/logout", { method: "POST", token: a.token })).status).toBe(204);
      await expectError(await call("/auth/ticket", { method: "POST", token: a.token }), 401, "unauthorized");
      await expectError(await call("/send", { token: a.token, body: { conversationId: conv.id, clientMsgId: unique("m"), body: "x" } }), 401, "unauthorized");
      await expectError(await call(`/conversations/${conv.id}/ws`, { token: a.token, headers: { upgrade: "websocket" } }), 401, "unauthorized");
      await expectError(await call("/ws", { token: a.token, headers: { upgrade: "websocket" } }), 401, "unauthorized");
      await expectError(await call(`/ws?ticket=${unused}`, { headers: { upgrade: "websocket" } }), 401, "unauthorized");
      for (const s of [convByBearer, convByTicket, userSocket]) expect((await s.waitClosed()).code).toBe(4001);
      // Its push subscription went with it (the user's object keeps them); the other device is untouched.
      expect((await userStub(env, a.user.id).pushSubscriptionRecords(a.user.id)).map((s) => s.endpoint)).toEqual([`${endpoint}-other`]);
      await json("/auth/ticket", { method: "POST", token: other.token });
    });

    // D1 still lists the device as signed in until the user's object reaches it again: its alarm retries.
    expect(await signedInInD1(a.device.id)).toBe(true);
    expect(await runDurableObjectAlarm(userStub(env, a.user.id))).toBe(true);
    expect(await signedInInD1(a.device.id)).toBe(false);
    expect(await signedInInD1(other.device.id)).toBe(true);
  });

  it("closes a conversation socket whose tracking reached the user's object only after the logout", async () => {
    const a = await register();
    const b = await register();
    const conv = await direct(a, b);
    // The conversation accepts the socket, but its word to a's object is held back (here: lost), as
    // when the logout's closeDevice runs between the two.
    const held: Array<[string, string]> = [];
    await runInDurableObject(conversationStub(env, conv.id), (instance: ConversationDO) =>
      instance.useConnections({
        users: (userId) => ({
          deliver: (...args) => peersOf(env).user(userId).deliver(...args),
          trackConversationSocket: async (deviceId, conversationId) => void held.push([deviceId, conversationId]),
        }),
      }),
    );
    const socket = await openConversation(a, conv.id);
    await waitFor(async () => held.length > 0, "the held tracking call");
    expect((await call("/auth/logout", { method: "POST", token: a.token })).status).toBe(204);
    expect(socket.closed).toBeNull();
    const [deviceId, conversationId] = held[0]!;
    await userStub(env, a.user.id).trackConversationSocket(deviceId, conversationId);
    expect((await socket.waitClosed()).code).toBe(4001);
  });

  it("refuses the token of a device signed out from elsewhere at once, and nothing of its user's other devices", async () => {
    const a = await register();
    const b = await register();
    const conv = await direct(a, b);
    const phone = await signInDevice(a.user.id, "phone");
    await json("/auth/ticket", { method: "POST", token: phone.token });
    // What a remote sign-out does: the user's object ends the device's sessions.
    await userStub(env, a.user.id).revokeDevice(a.user.id, phone.deviceId);
    await expectError(await call("/auth/ticket", { method: "POST", token: phone.token }), 401, "unauthorized");
    await expectError(await call(`/conversations/${conv.id}/ws`, { token: phone.token, headers: { upgrade: "websocket" } }), 401, "unauthorized");
    await expectError(await call("/ws", { token: phone.token, headers: { upgrade: "websocket" } }), 401, "unauthorized");
    expect(await signedInInD1(phone.deviceId)).toBe(false);
    await json("/auth/ticket", { method: "POST", token: a.token });
  });

  it("answers 401 in the error shape to tokens tampered, expired, under another key, of no session, or of the old format", async () => {
    const a = await register();
    const b = await register();
    const refused = async (token: string) => {
      await expectError(await call("/auth/ticket", { method: "POST", token }), 401, "unauthorized");
      await expectError(await call("/ws", { token, headers: { upgrade: "websocket" } }), 401, "unauthorized");
    };
    await withoutDevicesTable(async () => {
      for (const index of [1, 2, 3, 4, 6]) await refused(withPart(a.token, index, flip));
      await refused(withPart(a.token, 5, (p) => String(Number(p) + 1)));
      // Made out to another user: the MAC no longer matches.
      await refused(withPart(a.token, 2, () => b.user.id));
      await refused(`${a.token}.x`);
      await refused(a.token.slice(0, -1));
      // A token of a previous version (256 random bits, looked up in D1 by its hash) signs in no more.
      await refused("A".repeat(43));
      const keys = sessionKeys(env.SESSION_SECRET);
      const identity = { userId: a.user.id, deviceId: a.device.id };
      // Expired; under a key the Worker does not have; a real MAC for a session never started.
      const expired = await mintSessionToken(identity, Date.now() - 1, keys);
      await userStub(env, a.user.id).startSession(a.user.id, a.device.id, expired.claims.sessionId, Date.now() + 60_000);
      await refused(expired.token);
      await refused((await mintSessionToken(identity, Date.now() + 60_000, ["not one of the keys"])).token);
      await refused((await mintSessionToken(identity, Date.now() + 60_000, keys)).token);
      // None of that touched the real token.
      await json("/auth/ticket", { method: "POST", token: a.token });
    });
  });

  it("ends the sessions older than a lowered TOKEN_TTL_DAYS", async () => {
    const a = await register();
    // The user's object holds the lifetime it checks against; a token signed for a year is older
    // than a lifetime lowered to a moment ago.
    await setObjectSettings(userStub(env, a.user.id), { tokenTtlMs: 1 });
    await expectError(await call("/auth/ticket", { method: "POST", token: a.token }), 401, "unauthorized");
    await setObjectSettings(userStub(env, a.user.id), { tokenTtlMs: 365 * 86_400_000 });
    await json("/auth/ticket", { method: "POST", token: a.token });
  });

  it("accepts a token signed under the previous key while its session lives (a key rotation)", async () => {
    const a = await register();
    const previous = sessionKeys(env.SESSION_SECRET).slice(1);
    expect(previous).toHaveLength(1);
    const phoneId = unique("dev");
    const { token, claims } = await mintSessionToken({ userId: a.user.id, deviceId: phoneId }, Date.now() + 60_000, previous);
    await expectError(await call("/auth/ticket", { method: "POST", token }), 401, "unauthorized");
    await userStub(env, a.user.id).startSession(a.user.id, phoneId, claims.sessionId, claims.expiresAt);
    await json("/auth/ticket", { method: "POST", token });
  });

  it("marks the devices of tokens of a previous version logged out in D1 (migration 0009), and no device signed in since", async () => {
    const a = await register();
    const oldDevice = unique("old");
    await d1Of(a.user.id).prepare("INSERT INTO devices (id, user_id, name, token_hash, created_at) VALUES (?, ?, 'old', ?, ?)")
      .bind(oldDevice, a.user.id, "A".repeat(43), Date.now())
      .run();
    const migration = env.TEST_MIGRATIONS.find((m) => m.name.startsWith("0009_"));
    expect(migration).toBeDefined();
    // Its push_subscriptions step left out: 0013 dropped that table (the subscriptions are in the users' objects).
    for (const query of migration!.queries.filter((q) => !q.includes("push_subscriptions"))) await d1Of(a.user.id).prepare(query).run();
    expect(await signedInInD1(oldDevice)).toBe(false);
    expect(await signedInInD1(a.device.id)).toBe(true);
    await json("/me", { token: a.token });
  });
});

describe("devices: the caller's list and remote sign-out", () => {
  const listOf = async (token: string) => (await json<{ devices: OwnDevice[] }>("/devices", { token })).devices;

  it("lists the caller's signed-in devices, oldest first, marking the one asking", async () => {
    const a = await register(undefined, "laptop");
    const phone = await login(a.user.username, "phone");
    const stranger = await register(undefined, "elsewhere");
    const list = await listOf(phone.token);
    expect(list.map((d) => [d.id, d.name, d.current])).toEqual([
      [a.device.id, "laptop", false],
      [phone.device.id, "phone", true],
    ]);
    expect(list[0]!.createdAt).toBe(a.device.createdAt);
    // A login counts as activity.
    for (const d of list) expect(d.lastActiveAt).toBeGreaterThanOrEqual(d.createdAt);
    expect(list[1]!.lastActiveAt).toBeLessThanOrEqual(Date.now());
    expect((await listOf(a.token)).map((d) => d.current)).toEqual([true, false]);
    expect((await listOf(stranger.token)).map((d) => d.id)).toEqual([stranger.device.id]);
    await expectError(await call("/devices"), 401, "unauthorized");
  });

  it("signs another device out at once: its token 401, its sockets closed with 4001, gone from the lists", async () => {
    const a = await register(undefined, "laptop");
    const b = await register();
    const phone = await login(a.user.username, "phone");
    const conv = await direct(a, b);
    const convSocket = await openConversation(phone, conv.id);
    const userSocket = await connect("/ws", phone.token);
    await userSocket.next("ready");
    const laptopSocket = await openConversation(a, conv.id);

    expect((await call(`/devices/${phone.device.id}`, { method: "DELETE", token: a.token })).status).toBe(204);
    await expectError(await call("/me", { token: phone.token }), 401, "unauthorized");
    await expectError(await call("/auth/ticket", { method: "POST", token: phone.token }), 401, "unauthorized");
    expect((await convSocket.waitClosed()).code).toBe(4001);
    expect((await userSocket.waitClosed()).code).toBe(4001);
    expect((await listOf(a.token)).map((d) => d.id)).toEqual([a.device.id]);
    const directory = await json<{ devices: { id: string }[] }>(`/users/${a.user.id}/devices`, { token: b.token });
    expect(directory.devices.map((d) => d.id)).toEqual([a.device.id]);
    // The device asking is untouched.
    laptopSocket.send({ type: "send", clientMsgId: unique("still-here"), body: "hi" });
    await laptopSocket.next("ack");
    expect(laptopSocket.closed).toBeNull();
    laptopSocket.close();

    // Again: nothing more to do, the same answer.
    expect((await call(`/devices/${phone.device.id}`, { method: "DELETE", token: a.token })).status).toBe(204);
    expect((await listOf(a.token)).map((d) => d.id)).toEqual([a.device.id]);
  });

  it("the current device may sign itself out: that is a logout", async () => {
    const a = await register();
    const other = await login(a.user.username, "other");
    expect((await call(`/devices/${a.device.id}`, { method: "DELETE", token: a.token })).status).toBe(204);
    await expectError(await call("/me", { token: a.token }), 401, "unauthorized");
    expect((await listOf(other.token)).map((d) => [d.id, d.current])).toEqual([[other.device.id, true]]);
  });

  it("answers 404 for another user's device or an unknown id, and changes nothing", async () => {
    const a = await register();
    const b = await register();
    for (const id of [b.device.id, "no-such-device", "me", "%F0%9F%92%A5"]) {
      await expectError(await call(`/devices/${id}`, { method: "DELETE", token: a.token }), 404, "not_found");
    }
    await json("/me", { token: b.token });
    expect((await listOf(b.token)).map((d) => d.id)).toEqual([b.device.id]);
    await expectError(await call(`/devices/${b.device.id}`, { method: "DELETE" }), 401, "unauthorized");
    await json("/me", { token: b.token });
  });

  it("renames a device; the user's sockets hear that the list changed, at a sign-in and a sign-out too", async () => {
    const a = await register(undefined, "laptop");
    const b = await register();
    const socket = await connect("/ws", a.token);
    await socket.next("ready");
    const phone = await login(a.user.username, "phone");
    await socket.next("devices");
    const renamed = await json<{ device: OwnDevice }>(`/devices/${phone.device.id}`, { method: "PATCH", token: a.token, body: { name: "\u202Eold phone" } });
    expect(renamed.device).toMatchObject({ id: phone.device.id, name: "old phone", current: false });
    await socket.until((frames) => frames.filter((f) => f.type === "devices").length === 2, "a second devices frame");
    expect((await listOf(phone.token)).map((d) => [d.name, d.current])).toEqual([["laptop", false], ["old phone", true]]);
    // Bad names, another user's device, an unknown one: refused, nothing changed.
    for (const body of [{ name: "" }, { name: "x".repeat(65) }, { name: 5 }, { name: "ok", extra: true }, {}]) {
      await expectError(await call(`/devices/${phone.device.id}`, { method: "PATCH", token: a.token, body }), 400, "bad_request");
    }
    for (const id of [b.device.id, "no-such-device"]) {
      await expectError(await call(`/devices/${id}`, { method: "PATCH", token: a.token, body: { name: "mine" } }), 404, "not_found");
    }
    expect((await listOf(b.token)).map((d) => d.name)).toEqual(["device"]);
    expect((await call(`/devices/${phone.device.id}`, { method: "DELETE", token: a.token })).status).toBe(204);
    await socket.until((frames) => frames.filter((f) => f.type === "devices").length === 3, "a third devices frame");
    // Signed out: no longer one of the caller's devices to rename.
    await expectError(await call(`/devices/${phone.device.id}`, { method: "PATCH", token: a.token, body: { name: "gone" } }), 404, "not_found");
    socket.close();
  });
});

describe("users", () => {
  it("finds users by username prefix, at most 20", async () => {
    const prefix = unique("pfx").toLowerCase();
    const a = await register(`${prefix}_one`);
    for (let i = 0; i < 21; i++) await register(`${prefix}_${i.toString().padStart(2, "0")}`);
    const { users } = await json<{ users: User[] }>(`/users?q=${prefix.toUpperCase()}`, { token: a.token });
    expect(users).toHaveLength(20);
    expect(users.every((u) => u.username.startsWith(prefix))).toBe(true);
    const none = await json<{ users: User[] }>(`/users?q=${prefix}%25`, { token: a.token });
    expect(none.users).toEqual([]);
    await expectError(await call("/users", { token: a.token }), 400, "bad_request");
    // `_` is not a wildcard.
    const underscore = await json<{ users: User[] }>(`/users?q=${prefix.slice(0, -1)}_`, { token: a.token });
    expect(underscore.users).toEqual([]);
  });

  it("gets users by ids, up to 100 in one request, in the order asked, leaving unknown ids out", async () => {
    const [a, b, c] = [await register(), await register(), await register()];
    const { users } = await json<{ users: User[] }>(`/users?ids=${c.user.id},nope,${a.user.id},${c.user.id},${b.user.id}`, { token: a.token });
    expect(users).toEqual([c.user, a.user, b.user]);
    const hundred = Array.from({ length: 99 }, (_, i) => `unknown${i}`).concat(b.user.id);
    expect((await json<{ users: User[] }>(`/users?ids=${hundred.join(",")}`, { token: a.token })).users).toEqual([b.user]);
    for (const query of ["ids=", "ids=a,,b", `ids=${hundred.join(",")},one-more`, `ids=${a.user.id}&q=x`, `ids=${"x".repeat(129)}`]) {
      await expectError(await call(`/users?${query}`, { token: a.token }), 400, "bad_request");
    }
    await expectError(await call(`/users?ids=${a.user.id}`), 401, "unauthorized");
  });

  it("gets a user by id, 404 otherwise", async () => {
    const a = await register();
    const { user } = await json<{ user: User }>(`/users/${a.user.id}`, { token: a.token });
    expect(user).toEqual(a.user);
    await expectError(await call("/users/nope", { token: a.token }), 404, "not_found");
    await expectError(await call(`/users/${a.user.id}`), 401, "unauthorized");
  });
});

describe("conversations", () => {
  it("creates one direct conversation per pair, idempotently", async () => {
    const a = await register();
    const b = await register();
    const first = await call("/conversations", { token: a.token, body: { type: "direct", userId: b.user.id } });
    expect(first.status).toBe(201);
    const conv = ((await first.json()) as { conversation: Conversation }).conversation;
    expect(conv.type).toBe("direct");
    expect(conv.members.map((m) => m.userId).sort()).toEqual([a.user.id, b.user.id].sort());
    expect(conv.lastSeq).toBe(1); // the "created" system message
    const again = await call("/conversations", { token: b.token, body: { type: "direct", userId: a.user.id } });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { conversation: Conversation }).conversation.id).toBe(conv.id);

    await expectError(await call("/conversations", { token: a.token, body: { type: "direct", userId: a.user.id } }), 400, "bad_request");
    await expectError(await call("/conversations", { token: a.token, body: { type: "direct", userId: "nobody" } }), 400, "bad_request");
    await expectError(await call("/conversations", { token: a.token, body: { type: "group", userId: b.user.id } }), 400, "bad_request");
  });

  it("creates groups with the creator as admin and a system message", async () => {
    const [a, b, c] = [await register(), await register(), await register()];
    const conv = await group(a, [b, c], "Team");
    expect(conv.title).toBe("Team");
    expect(conv.members.find((m) => m.userId === a.user.id)?.role).toBe("admin");
    expect(conv.members.find((m) => m.userId === b.user.id)?.role).toBe("member");
    const { messages } = await json<{ messages: Message[] }>(`/conversations/${conv.id}/messages?after=0`, { token: b.token });
    expect(messages).toHaveLength(1);
    expect(messages[0]!.kind).toBe("system");
    expect(JSON.parse(messages[0]!.body!)).toEqual({ event: "created", actorId: a.user.id, userIds: [b.user.id, c.user.id] });

    for (const body of [
      { title: "", memberIds: [] },
      { title: "x".repeat(101), memberIds: [] },
      { title: "ok", memberIds: ["nobody"] },
      { title: "ok" },
      { title: "ok", memberIds: new Array(1001).fill(b.user.id) },
    ]) {
      await expectError(await call("/group/create", { token: a.token, body }), 400, "bad_request");
    }
  });

  it("hides a conversation from non-members with 404, exactly as an unknown id", async () => {
    const [a, b, stranger] = [await register(), await register(), await register()];
    const conv = await direct(a, b);
    for (const path of [`/conversations/${conv.id}`, `/conversations/nope`]) {
      await expectError(await call(path, { token: stranger.token }), 404, "not_found");
      await expectError(await call(`${path}/messages`, { token: stranger.token }), 404, "not_found");
      await expectError(await call(`${path}/receipts`, { token: stranger.token }), 404, "not_found");
      await expectError(await call(`${path}/members`, { token: stranger.token, body: { userIds: [stranger.user.id] } }), 404, "not_found");
      await expectError(await call(`${path}/ws`, { token: stranger.token, headers: { upgrade: "websocket" } }), 404, "not_found");
    }
    await expectError(await call("/send", { token: stranger.token, body: { conversationId: conv.id, clientMsgId: "x", body: "hi" } }), 404, "not_found");
  });

  it("lists the caller's conversations, newest activity first, with last message and unread, current at once", async () => {
    const [a, b, c] = [await register(), await register(), await register()];
    const older = await direct(a, b);
    const newer = await group(a, [c], "later");
    // Each entry is read from its conversation's object: a send is in every member's list when it
    // is answered, before D1 or any member's object heard of it (the deferred pass is held here).
    const stub = conversationStub(env, older.id);
    await waitFor(async () => (await stub.pendingOutbox()) === 0, "the initial flush");
    await holdDeferredPass(stub);
    const sent = await sendRest(b, older.id, "bump");
    expect(sent.message.seq).toBe(2);
    expect(await stub.pendingOutbox()).toBe(1);
    const list = (await json<{ conversations: Conversation[] }>("/conversations", { token: a.token })).conversations;
    expect(list.map((x) => x.id)).toEqual([older.id, newer.id]);
    expect(list[0]).toMatchObject({ lastSeq: 2, unread: 1, lastMessage: expect.objectContaining({ body: "bump" }) });
    expect(list[0]!.members).toHaveLength(2);
    // The sender's own list has it too, and nothing unread.
    const forB = (await json<{ conversations: Conversation[] }>("/conversations", { token: b.token })).conversations;
    expect(forB).toEqual([expect.objectContaining({ id: older.id, lastSeq: 2, unread: 0, lastMessage: expect.objectContaining({ id: sent.message.id }) })]);
    const forC = await json<{ conversations: Conversation[] }>("/conversations", { token: c.token });
    expect(forC.conversations.map((x) => x.id)).toEqual([newer.id]);
    // The pass (its backstop alarm here) relays it; the list stays the same.
    await runDurableObjectAlarm(stub);
    expect((await json<{ conversations: Conversation[] }>("/conversations", { token: a.token })).conversations).toEqual(list);
  });

  it("adds members (admins only) and removes them; a removed member loses access at once", async () => {
    const [admin, m1, m2, m3] = [await register(), await register(), await register(), await register()];
    const conv = await group(admin, [m1], "club");
    await expectError(await call(`/conversations/${conv.id}/members`, { token: m1.token, body: { userIds: [m2.user.id] } }), 403, "forbidden");
    await expectError(await call(`/conversations/${conv.id}/members`, { token: admin.token, body: { userIds: ["nobody"] } }), 400, "bad_request");
    await expectError(await call(`/conversations/${conv.id}/members`, { token: admin.token, body: { userIds: [] } }), 400, "bad_request");
    const added = await json<{ conversation: Conversation }>(`/conversations/${conv.id}/members`, {
      token: admin.token,
      body: { userIds: [m2.user.id, m3.user.id] },
    });
    expect(added.conversation.members).toHaveLength(4);

    const m2Socket = await openConversation(m2, conv.id);
    // A member cannot remove someone else.
    await expectError(await call(`/conversations/${conv.id}/members/${m3.user.id}`, { method: "DELETE", token: m1.token }), 403, "forbidden");
    await expectError(await call(`/conversations/${conv.id}/members/nobody`, { method: "DELETE", token: admin.token }), 404, "not_found");
    const removed = await call(`/conversations/${conv.id}/members/${m2.user.id}`, { method: "DELETE", token: admin.token });
    expect(removed.status).toBe(204);
    expect((await m2Socket.waitClosed()).code).toBe(4003);
    expect(m2Socket.frames.at(-1)).toMatchObject({ type: "closing", code: 4003, reason: "removed from the conversation" });
    // Reading what came before stays (membership spans, below); everything else is gone.
    expect((await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: m2.token })).conversation.leftSeq).toBe(3);
    await expectError(await call(`/conversations/${conv.id}/receipts`, { token: m2.token }), 404, "not_found");
    await expectError(await call("/send", { token: m2.token, body: { conversationId: conv.id, clientMsgId: "late", body: "x" } }), 404, "not_found");
    await expectError(await call(`/conversations/${conv.id}/ws`, { token: m2.token, headers: { upgrade: "websocket" } }), 404, "not_found");

    // Leaving is removing yourself.
    expect((await call(`/conversations/${conv.id}/members/${m3.user.id}`, { method: "DELETE", token: m3.token })).status).toBe(204);
    const { messages } = await json<{ messages: Message[] }>(`/conversations/${conv.id}/messages?after=0`, { token: admin.token });
    expect(messages.filter((m) => m.kind === "system").map((m) => JSON.parse(m.body!).event)).toEqual(["created", "added", "removed", "left"]);

    // The last admin leaving hands the role to the longest-standing member.
    expect((await call(`/conversations/${conv.id}/members/${admin.user.id}`, { method: "DELETE", token: admin.token })).status).toBe(204);
    const after = await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: m1.token });
    expect(after.conversation.members).toEqual([expect.objectContaining({ userId: m1.user.id, role: "admin" })]);
  });

  it("membership spans: a member added later reads from their joining, a former member up to their removal, over every path", async () => {
    const [admin, bob, cy] = [await register(), await register(), await register()];
    const conv = await group(admin, [bob], "spans");
    await sendRest(admin, conv.id, "before cy");
    const { conversation: added } = await json<{ conversation: Conversation }>(`/conversations/${conv.id}/members`, {
      token: admin.token,
      body: { userIds: [cy.user.id] },
    });
    const joinedSeq = added.lastSeq;
    await sendRest(bob, conv.id, "with cy");
    const bodies = (messages: Message[]) => messages.map((m) => m.body);
    const history = async (s: Session, query = "after=0") =>
      (await json<{ messages: Message[]; hasMore: boolean }>(`/conversations/${conv.id}/messages?${query}`, { token: s.token })).messages;
    /** Every message of this conversation in `s`'s sync from 0, once its members' objects were told of `through`. */
    const synced = async (s: Session, through: number) => {
      await inD1(conv.id);
      expect((await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: admin.token })).conversation.lastSeq).toBeGreaterThanOrEqual(through);
      const page = await json<{ messages: Message[] }>("/messages?since=0&limit=500", { token: s.token });
      return page.messages.filter((m) => m.conversationId === conv.id).map((m) => m.seq);
    };

    // cy, added later: nothing from before the message that added her, over REST, the socket and sync.
    const cyView = (await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: cy.token })).conversation;
    expect(cyView).toMatchObject({ joinedSeq, readSeq: joinedSeq - 1, unread: 1, threadUnread: 0 });
    expect((await history(cy)).map((m) => m.seq)).toEqual([joinedSeq, joinedSeq + 1]);
    expect((await history(cy, "limit=100")).map((m) => m.seq)).toEqual([joinedSeq, joinedSeq + 1]);
    expect(await history(cy, `before=${joinedSeq}`)).toEqual([]);
    const cySocket = await openConversation(cy, conv.id, 0);
    expect(cySocket.messages().map((m) => m.seq)).toEqual([joinedSeq, joinedSeq + 1]);
    cySocket.close();
    expect(await synced(cy, joinedSeq + 1)).toEqual([joinedSeq, joinedSeq + 1]);
    expect(bodies(await history(bob)).filter((b) => b === "before cy")).toHaveLength(1);
    const cyListed = (await json<{ conversations: Conversation[] }>("/conversations", { token: cy.token })).conversations[0]!;
    expect(cyListed).toMatchObject({ id: conv.id, joinedSeq, unread: 1, lastMessage: expect.objectContaining({ body: "with cy" }) });
    expect(cyListed.leftSeq).toBeUndefined();

    // cy removed: she reads through the message that removed her, and nothing said after it.
    expect((await call(`/conversations/${conv.id}/members/${cy.user.id}`, { method: "DELETE", token: admin.token })).status).toBe(204);
    const leftSeq = joinedSeq + 2;
    await sendRest(admin, conv.id, "after cy");
    const former = (await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: cy.token })).conversation;
    expect(former).toMatchObject({ leftSeq, lastSeq: leftSeq, members: [], unread: 0, lastMessage: expect.objectContaining({ seq: leftSeq, kind: "system" }) });
    expect((await history(cy)).map((m) => m.seq)).toEqual([joinedSeq, joinedSeq + 1, leftSeq]);
    expect((await history(cy, `after=${leftSeq}`))).toEqual([]);
    expect(await synced(cy, leftSeq + 1)).toEqual([joinedSeq, joinedSeq + 1, leftSeq]);
    const listed = (await json<{ conversations: Conversation[] }>("/conversations", { token: cy.token })).conversations;
    expect(listed).toEqual([expect.objectContaining({ id: conv.id, leftSeq, lastSeq: leftSeq, members: [], unread: 0, lastMessage: expect.objectContaining({ seq: leftSeq }) })]);
    await expectError(await call(`/conversations/${conv.id}/ws`, { token: cy.token, headers: { upgrade: "websocket" } }), 404, "not_found");
    await expectError(await call("/send", { token: cy.token, body: { conversationId: conv.id, clientMsgId: "late", body: "x" } }), 404, "not_found");
    await expectError(await call(`/conversations/${conv.id}/receipts`, { token: cy.token, body: { type: "read", seq: 1 } }), 404, "not_found");

    // cy added back: she reads from her new joining; what was said while she was out stays hidden.
    await json(`/conversations/${conv.id}/members`, { token: admin.token, body: { userIds: [cy.user.id] } });
    const back = leftSeq + 2;
    await sendRest(admin, conv.id, "welcome back");
    expect(bodies(await history(cy)).includes("after cy")).toBe(false);
    expect((await history(cy)).map((m) => m.seq)).toEqual([back, back + 1]);
    expect((await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: cy.token })).conversation).toMatchObject({ joinedSeq: back, unread: 1 });
    expect(await synced(cy, back + 1)).toEqual([back, back + 1]);
    // Never a member: nothing at all.
    const stranger = await register();
    await expectError(await call(`/conversations/${conv.id}/messages?after=0`, { token: stranger.token }), 404, "not_found");
    await expectError(await call(`/conversations/${conv.id}`, { token: stranger.token }), 404, "not_found");
  });

  it("counts thread replies apart: unread and lastMessage are top-level, threadUnread the replies", async () => {
    const [a, b] = [await register(), await register()];
    const conv = await group(a, [b], "threads");
    const root = await sendRest(a, conv.id, "root");
    await json("/send", { token: a.token, body: { conversationId: conv.id, clientMsgId: unique("r"), body: "reply 1", threadRootSeq: root.message.seq } }, 201);
    await json("/send", { token: a.token, body: { conversationId: conv.id, clientMsgId: unique("r"), body: "reply 2", threadRootSeq: root.message.seq } }, 201);
    const expected = { unread: 1, threadUnread: 2, lastSeq: root.message.seq + 2, lastMessage: expect.objectContaining({ body: "root" }) };
    expect((await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: b.token })).conversation).toMatchObject(expected);
    const listed = await waitFor(async () => {
      const c = (await json<{ conversations: Conversation[] }>("/conversations", { token: b.token })).conversations[0];
      return c && c.lastSeq === expected.lastSeq ? c : undefined;
    }, "the list to have the replies");
    expect(listed).toMatchObject(expected);
    await json(`/conversations/${conv.id}/receipts`, { token: b.token, body: { type: "read", seq: expected.lastSeq } });
    expect((await json<{ conversations: Conversation[] }>("/conversations", { token: b.token })).conversations[0]).toMatchObject({ unread: 0, threadUnread: 0 });
  });

  it("keeps direct conversations at two members", async () => {
    const [a, b, c] = [await register(), await register(), await register()];
    const conv = await direct(a, b);
    await expectError(await call(`/conversations/${conv.id}/members`, { token: a.token, body: { userIds: [c.user.id] } }), 400, "bad_request");
    await expectError(await call(`/conversations/${conv.id}/members/${a.user.id}`, { method: "DELETE", token: a.token }), 400, "bad_request");
  });
});

describe("messages", () => {
  let a: Session;
  let b: Session;
  let conv: Conversation;

  it("sends with contiguous seq and idempotent retries (200, same id and seq)", async () => {
    a = await register();
    b = await register();
    conv = await direct(a, b);
    const first = await call("/send", { token: a.token, body: { conversationId: conv.id, clientMsgId: "c1", body: "one" } });
    expect(first.status).toBe(201);
    const m1 = ((await first.json()) as { message: Message }).message;
    expect(m1).toMatchObject({ seq: 2, senderId: a.user.id, senderDeviceId: a.device.id, clientMsgId: "c1", kind: "text", body: "one", media: [], threadRootSeq: null });
    const retry = await call("/send", { token: a.token, body: { conversationId: conv.id, clientMsgId: "c1", body: "one" } });
    expect(retry.status).toBe(200);
    expect(((await retry.json()) as { message: Message }).message).toEqual(m1);
    // The same clientMsgId from another sender is another message.
    const other = await json<{ message: Message }>("/send", { token: b.token, body: { conversationId: conv.id, clientMsgId: "c1", body: "b" } }, 201);
    expect(other.message.seq).toBe(3);
    const { messages } = await json<{ messages: Message[] }>(`/conversations/${conv.id}/messages?after=0`, { token: a.token });
    expect(messages.map((m) => m.seq)).toEqual([1, 2, 3]);
  });

  it("rejects bad sends with 400 and stores nothing", async () => {
    const base = { conversationId: conv.id, clientMsgId: "bad" };
    for (const body of [
      base,
      { ...base, body: "" },
      { ...base, body: "x".repeat(8193) },
      { ...base, clientMsgId: "", body: "x" },
      { ...base, clientMsgId: "x".repeat(65), body: "x" },
      { ...base, body: "x", threadRootSeq: 99 },
      { ...base, body: "x", threadRootSeq: 1 }, // a system message is no thread root
      { ...base, body: "x", mediaIds: ["nope"] },
      { ...base, body: "x", mediaIds: new Array(11).fill("m") },
      { ...base, body: "x", extra: true },
      // Ill-formed UTF-16 (lone surrogates) in any string: stored it would change after the ack.
      { ...base, body: "x\ud800y" },
      { ...base, body: "\udc00".repeat(8192) },
      { ...base, clientMsgId: "id\udbff", body: "x" },
    ]) {
      await expectError(await call("/send", { token: a.token, body }), 400, "bad_request");
    }
    // A well-formed pair is one character, as ever.
    expect((await json<{ message: Message }>("/send", { token: a.token, body: { ...base, clientMsgId: "pair", body: "x\ud83d\ude00y" } }, 201)).message.body).toBe("x😀y");
    await expectError(await call("/group/send", { token: a.token, body: { groupId: conv.id, clientMsgId: "g", body: "x" } }), 400, "bad_request");
    for (const [path, body] of [
      ["/auth/register", { username: unique("s"), password: "long enough", displayName: "a\ud800" }],
      ["/group/create", { title: "t\udfff", memberIds: [] }],
    ] as const) {
      await expectError(await call(path, { token: a.token, body }), 400, "bad_request");
    }
    const { conversation } = await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: a.token });
    expect(conversation.lastSeq).toBe(4);
  });

  it("accepts exactly 8,192 characters", async () => {
    const { message } = await json<{ message: Message }>("/send", { token: a.token, body: { conversationId: conv.id, clientMsgId: "long", body: "é".repeat(8192) } }, 201);
    expect(message.body).toHaveLength(8192);
  });

  it("sends to groups by /group/send and keeps threads one level deep", async () => {
    const c = await register();
    const g = await group(a, [b, c], "threads");
    const root = await json<{ message: Message }>("/group/send", { token: a.token, body: { groupId: g.id, clientMsgId: "root", body: "root" } }, 201);
    const r1 = await json<{ message: Message }>("/group/send", { token: b.token, body: { groupId: g.id, clientMsgId: "r1", body: "reply 1", threadRootSeq: root.message.seq } }, 201);
    await json("/send", { token: c.token, body: { conversationId: g.id, clientMsgId: "r2", body: "reply 2", threadRootSeq: root.message.seq } }, 201);
    await sendRest(a, g.id, "unrelated");
    await expectError(await call("/send", { token: a.token, body: { conversationId: g.id, clientMsgId: "r3", body: "x", threadRootSeq: r1.message.seq } }), 400, "bad_request");

    const thread = await json<{ messages: Message[] }>(`/conversations/${g.id}/messages?after=0&thread=${root.message.seq}`, { token: c.token });
    expect(thread.messages.map((m) => m.body)).toEqual(["root", "reply 1", "reply 2"]);
    expect(thread.messages[0]!.thread).toEqual({ replyCount: 2, lastReplySeq: 4, lastReplyAt: expect.any(Number) });
    expect(thread.messages[1]!.thread).toBeUndefined();
    const { conversation } = await json<{ conversation: Conversation }>(`/conversations/${g.id}`, { token: a.token });
    expect(conversation.lastSeq).toBe(5);
  });

  it("pages history with after, before and limit, ascending", async () => {
    const [x, y] = [await register(), await register()];
    const c = await direct(x, y);
    for (let i = 0; i < 9; i++) await sendRest(x, c.id, `m${i}`);
    const path = `/conversations/${c.id}/messages`;
    const latest = await json<{ messages: Message[]; hasMore: boolean }>(`${path}?limit=3`, { token: y.token });
    expect(latest.messages.map((m) => m.seq)).toEqual([8, 9, 10]);
    expect(latest.hasMore).toBe(true);
    const before = await json<{ messages: Message[]; hasMore: boolean }>(`${path}?before=8&limit=5`, { token: y.token });
    expect(before.messages.map((m) => m.seq)).toEqual([3, 4, 5, 6, 7]);
    const first = await json<{ messages: Message[]; hasMore: boolean }>(`${path}?before=3&limit=5`, { token: y.token });
    expect(first.messages.map((m) => m.seq)).toEqual([1, 2]);
    expect(first.hasMore).toBe(false);
    const after = await json<{ messages: Message[]; hasMore: boolean }>(`${path}?after=8`, { token: y.token });
    expect(after.messages.map((m) => m.seq)).toEqual([9, 10]);
    expect(after.hasMore).toBe(false);
    for (const q of ["limit=0", "limit=501", "after=-1", "after=x", "after=1&before=5", "thread=0", "bogus=1", "after=1&after=2"]) {
      await expectError(await call(`${path}?${q}`, { token: y.token }), 400, "bad_request");
    }
  });

  it("rate-limits sends per user with 429 and Retry-After", async () => {
    const [x, y] = [await register(), await register()];
    const c = await direct(x, y);
    // The test configuration allows a burst of 120 at 100/s.
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => call("/send", { token: x.token, body: { conversationId: c.id, clientMsgId: `r${i}`, body: "x" } })),
    );
    const limited = results.filter((r) => r.status === 429);
    expect(limited.length).toBeGreaterThan(0);
    const sample = limited[0]!;
    expect(Number(sample.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    await expectError(sample, 429, "rate_limited");
    const accepted = results.filter((r) => r.status === 201).length;
    const { conversation } = await json<{ conversation: Conversation }>(`/conversations/${c.id}`, { token: x.token });
    expect(conversation.lastSeq).toBe(1 + accepted);
    for (const r of results) if (r.bodyUsed === false) await r.body?.cancel();
  });
});

describe("receipts", () => {
  it("keeps watermarks that only move forward, with read implying delivered", async () => {
    const [a, b] = [await register(), await register()];
    const conv = await direct(a, b);
    for (let i = 0; i < 4; i++) await sendRest(a, conv.id, `m${i}`);
    const path = `/conversations/${conv.id}/receipts`;
    const d = await json<{ receipt: Receipt }>(path, { token: b.token, body: { type: "delivered", seq: 3 } });
    expect(d.receipt).toMatchObject({ userId: b.user.id, deliveredSeq: 3, readSeq: 0 });
    const r = await json<{ receipt: Receipt }>(path, { token: b.token, body: { type: "read", seq: 5 } });
    expect(r.receipt).toMatchObject({ deliveredSeq: 5, readSeq: 5 });
    const back = await json<{ receipt: Receipt }>(path, { token: b.token, body: { type: "read", seq: 2 } });
    expect(back.receipt).toMatchObject({ deliveredSeq: 5, readSeq: 5 });
    await expectError(await call(path, { token: b.token, body: { type: "read", seq: 6 } }), 400, "bad_request");
    await expectError(await call(path, { token: b.token, body: { type: "seen", seq: 1 } }), 400, "bad_request");
    const { receipts } = await json<{ receipts: Receipt[] }>(path, { token: a.token });
    expect(receipts).toHaveLength(2);
    expect(receipts.find((x) => x.userId === b.user.id)).toMatchObject({ deliveredSeq: 5, readSeq: 5 });
    expect(receipts.find((x) => x.userId === a.user.id)).toMatchObject({ deliveredSeq: 0, readSeq: 0 });
    const { conversation } = await json<{ conversation: Conversation }>(`/conversations/${conv.id}`, { token: b.token });
    expect(conversation.readSeq).toBe(5);
    expect(conversation.unread).toBe(0);
  });
});

describe("errors", () => {
  it("answers unknown API routes with the error shape and serves the app elsewhere", async () => {
    await expectError(await call("/conversations/x/nothing", { token: "A".repeat(43) }), 401, "unauthorized");
    const a = await register();
    await expectError(await call("/conversations/x/y/z", { token: a.token }), 404, "not_found");
    await expectError(await call("/auth/nothing", { method: "POST", body: {} }), 404, "not_found");
    const page = await call("/");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toContain("text/html");
    // Client-side routes are the app too, for GET and HEAD alike.
    for (const method of ["GET", "HEAD"]) {
      const route = await call("/c/some-conversation", { method });
      expect(route.status).toBe(200);
      expect(route.headers.get("content-type")).toContain("text/html");
    }
  });

  it("refuses client-supplied identity headers", async () => {
    const a = await register();
    await expectError(await call("/me", { token: a.token, headers: { "x-chat-user-id": "someone" } }), 400, "bad_request");
  });
});

describe("security headers", () => {
  it("marks API JSON answers nosniff and no-store, errors included, and sets HSTS on HTML over https", async () => {
    const a = await register();
    for (const res of [await call("/me", { token: a.token }), await call("/me"), await call("/conversations", { token: a.token })]) {
      expect(res.headers.get("content-type")).toContain("application/json");
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(res.headers.get("cache-control")).toBe("no-store");
    }
    const page = await exports.default.fetch(new Request("https://chat.test/"));
    expect(page.headers.get("strict-transport-security")).toMatch(/^max-age=\d+/);
    expect((await call("/")).headers.get("strict-transport-security")).toBeNull();
  });
});

messageActionTests();
groupInfoTests();
conversationSettingsTests();
conversationListTests();
shardTests();
