// Accounts and devices: register, login (one device per login), logout, /me. WebSocket tickets
// are routes/realtime.ts.
import { eq } from "drizzle-orm";
import { newId } from "../../kernel/ids";
import { LoginBody, RegisterBody, type Device } from "../../protocol";
import { newApp, requireAuth, type AppContext } from "../app";
import { db, schema } from "../../kernel/d1/db";
import { ApiError } from "../lib/apiError";
import { PBKDF2_ITERATIONS, base64url, constantTimeEqual, fromBase64url, hashPassword, sha256 } from "../lib/crypto";
import { SIGNED_IN_MARK } from "../../kernel/d1/devices";
import { requireSecret } from "../../kernel/settings";
import { mintSessionToken, sessionKeys } from "../lib/sessionTokens";
import { conversationStub, userStub } from "../../kernel/objects";
import { e2eeConversationsOf } from "../lib/deviceKeys";
import { toUser } from "../lib/userRecords";
import { passwordProblem } from "../lib/passwords";
import { LoginThrottle, clientAddress, takeHourly, throttleKeys } from "../lib/throttle";
import { readJson } from "../lib/validate";

export const auth = newApp();

// A fixed salt for the decoy hash computed for unknown usernames, so that "no such user" and
// "wrong password" take the same time and give the same answer.
const DECOY_SALT = new Uint8Array(16);

/**
 * A login's device and its signed token. The session goes to the user's object first: should the
 * D1 write then fail, what is left is a session whose token nobody was given.
 */
async function newDevice(c: AppContext, userId: string, name: string | undefined) {
  const settings = c.get("settings");
  const device = { id: newId(), name: name ?? "device", createdAt: Date.now() };
  const keys = sessionKeys(requireSecret("SESSION_SECRET", settings.sessionSecret));
  const { token, claims } = await mintSessionToken({ userId, deviceId: device.id }, device.createdAt + settings.tokenTtlMs, keys);
  await userStub(c.env, userId).startSession(userId, device.id, claims.sessionId, claims.expiresAt);
  await db(c.env)
    .insert(schema.devices)
    .values({ id: device.id, userId, name: device.name, tokenHash: SIGNED_IN_MARK + (await sha256(token)), createdAt: device.createdAt });
  return { device: device satisfies Device, token };
}

auth.post("/register", async (c) => {
  const settings = c.get("settings");
  const body = await readJson(c.req.raw, RegisterBody, settings.maxRequestBytes);
  const problem = passwordProblem(body.password, body.username);
  if (problem) throw new ApiError("bad_request", problem, { issues: [{ path: "password", message: problem }] });
  await takeHourly(c.env, throttleKeys.registerAddress(clientAddress(c.req.raw)), settings.abuse.registrationsPerAddressPerHour, "registrations");
  const usernameLower = body.username.toLowerCase();
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const row = {
    id: newId(),
    username: body.username,
    usernameLower,
    displayName: body.displayName ?? body.username,
    passwordHash: await hashPassword(body.password, salt),
    passwordSalt: base64url(salt),
    passwordIterations: PBKDF2_ITERATIONS,
    createdAt: Date.now(),
  };
  // The unique index decides a race between two registrations of one name.
  const inserted = await db(c.env).insert(schema.users).values(row).onConflictDoNothing().returning({ id: schema.users.id });
  if (inserted.length === 0) throw new ApiError("conflict", "username is taken");
  const { device, token } = await newDevice(c, row.id, body.deviceName);
  return c.json({ user: toUser(row), device, token }, 201);
});

auth.post("/login", async (c) => {
  const settings = c.get("settings");
  const body = await readJson(c.req.raw, LoginBody, settings.maxRequestBytes);
  // Unknown names are throttled as known ones are, so a 429 tells nothing about which exist.
  const throttle = new LoginThrottle(c.env, settings.abuse, body.username, clientAddress(c.req.raw));
  await throttle.check();
  const user = await db(c.env).query.users.findFirst({
    where: eq(schema.users.usernameLower, body.username.toLowerCase()),
  });
  const hash = await hashPassword(
    body.password,
    user ? fromBase64url(user.passwordSalt) : DECOY_SALT,
    user?.passwordIterations ?? PBKDF2_ITERATIONS,
  );
  if (!user || !constantTimeEqual(hash, user.passwordHash)) throw await throttle.failed();
  await throttle.succeeded();
  const { device, token } = await newDevice(c, user.id, body.deviceName);
  return c.json({ user: toUser(user), device, token }, 200);
});

auth.post("/logout", requireAuth, async (c) => {
  const { userId, deviceId } = c.get("auth");
  // The user's object ends the device's sessions and its tickets: from here on its token is
  // refused everywhere. It then marks the device logged out in D1 and drops its push subscriptions,
  // from its alarm while D1 fails. Should the call fail, nothing has changed and the logout can be
  // retried with the same token.
  await userStub(c.env, userId).revokeDevice(userId, deviceId);
  // Now close what the device still holds open.
  await userStub(c.env, userId).closeDevice(deviceId);
  await noticeLoggedOutDevice(c.env, { userId, deviceId });
  return c.body(null, 204);
});

/**
 * Tells each E2EE conversation of the user that the device is gone: those where it holds a leaf
 * append a `deviceLoggedOut` system message, on which members' devices commit its Remove. The
 * logout stands even if some are not reached: a client also looks for leaves of devices no longer
 * listed when it opens a conversation (docs/e2ee.md, "Logout").
 */
async function noticeLoggedOutDevice(env: Env, device: { userId: string; deviceId: string }): Promise<void> {
  let ids: string[];
  try {
    ids = await e2eeConversationsOf(env, device.userId);
  } catch (err) {
    console.warn("deviceLoggedOut: the user's E2EE conversations could not be read", String(err));
    return;
  }
  const now = Date.now();
  const results = await Promise.allSettled(ids.map((id) => conversationStub(env, id).mlsDeviceLoggedOut(device, now)));
  for (const [i, r] of results.entries()) {
    if (r.status === "rejected") console.warn(`deviceLoggedOut in ${ids[i]} failed`, String(r.reason));
  }
}

export const me = newApp();

me.get("/", requireAuth, async (c) => {
  const { userId, deviceId } = c.get("auth");
  const [user, device] = await Promise.all([
    db(c.env).query.users.findFirst({ where: eq(schema.users.id, userId) }),
    db(c.env).query.devices.findFirst({ where: eq(schema.devices.id, deviceId) }),
  ]);
  if (!user || !device) throw new ApiError("unauthorized", "account no longer exists");
  return c.json({ user: toUser(user), device: { id: device.id, name: device.name, createdAt: device.createdAt } });
});
