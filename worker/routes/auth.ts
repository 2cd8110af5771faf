// Accounts and devices: register, login (one device per login), logout, /me. WebSocket tickets
// are routes/realtime.ts; the caller's device list and remote sign-out are routes/devices.ts.
import { eq } from "drizzle-orm";
import { d1Shards } from "../../kernel/d1/shards";
import { LoginBody, ProfileBody, RegisterBody, type Device, type User } from "../../protocol";
import { newApp, requireAuth, type AppContext } from "../app";
import { db, schema } from "../../kernel/d1/db";
import { ApiError } from "../lib/apiError";
import { PBKDF2_ITERATIONS, base64url, constantTimeEqual, fromBase64url, hashPassword, sha256 } from "../lib/crypto";
import { SIGNED_IN_MARK } from "../../kernel/d1/devices";
import { requireSecret } from "../../kernel/settings";
import { mintSessionToken, sessionKeys } from "../lib/sessionTokens";
import { userStub } from "../../kernel/objects";
import { signOutDevice } from "../lib/signOut";
import { toUser } from "../lib/userRecords";
import { ownMedia } from "../../kernel/d1/mediaRecords";
import { kindOf, storedType } from "../lib/mediaTypes";
import { passwordProblem } from "../lib/passwords";
import { LoginThrottle, clientAddress, takeHourly, throttleKeys } from "../lib/throttle";
import { readJson } from "../lib/validate";

export const auth = newApp();

/**
 * How long a registration that created its account but not its device (the user object or D1
 * failed in between) can be completed by sending it again.
 */
const UNFINISHED_REGISTRATION_MS = 60 * 60 * 1000;

// A fixed salt for the decoy hash computed for unknown usernames, so that "no such user" and
// "wrong password" take the same time and give the same answer.
const DECOY_SALT = new Uint8Array(16);

/**
 * A login's device and its signed token. The session goes to the user's object first: should the
 * D1 write then fail, what is left is a session whose token nobody was given.
 */
async function newDevice(c: AppContext, user: User, name: string | undefined) {
  const settings = c.get("settings");
  const userId = user.id;
  // Drawn on the user's D1 shard, so that the device id alone names it (kernel/d1/shards.ts).
  const device = { id: d1Shards(c.env).idBeside(userId), name: name ?? "device", createdAt: Date.now() };
  const keys = sessionKeys(requireSecret("SESSION_SECRET", settings.sessionSecret));
  const { token, claims } = await mintSessionToken({ userId, deviceId: device.id }, device.createdAt + settings.tokenTtlMs, keys);
  // The user's object keeps what GET /me answers, so that request reads no D1.
  await userStub(c.env, userId).startSession(userId, device.id, claims.sessionId, claims.expiresAt, { user, device });
  await db(c.env, userId)
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
    // Drawn on the username's D1 shard: a lookup by name and one by id reach the same database.
    id: d1Shards(c.env).idBeside(usernameLower),
    username: body.username,
    usernameLower,
    displayName: body.displayName ?? body.username,
    passwordHash: await hashPassword(body.password, salt),
    passwordSalt: base64url(salt),
    passwordIterations: PBKDF2_ITERATIONS,
    createdAt: Date.now(),
  };
  // The unique index decides a race between two registrations of one name.
  const inserted = await db(c.env, usernameLower).insert(schema.users).values(row).onConflictDoNothing().returning({ id: schema.users.id });
  const account = inserted.length > 0 ? row : await unfinishedRegistration(c, usernameLower, body.password);
  if (!account) throw new ApiError("conflict", "username is taken");
  const { device, token } = await newDevice(c, toUser(account), body.deviceName);
  return c.json({ user: toUser(account), device, token }, 201);
});

/**
 * The account a retried registration names, if an earlier attempt created it and failed before
 * its first device: recent, with no device ever, and the same password. Anything else is a
 * taken name.
 */
async function unfinishedRegistration(c: AppContext, usernameLower: string, password: string) {
  const user = await db(c.env, usernameLower).query.users.findFirst({ where: eq(schema.users.usernameLower, usernameLower) });
  if (!user || Date.now() - user.createdAt > UNFINISHED_REGISTRATION_MS) return null;
  const device = await db(c.env, user.id).query.devices.findFirst({ where: eq(schema.devices.userId, user.id), columns: { id: true } });
  if (device) return null;
  const hash = await hashPassword(password, fromBase64url(user.passwordSalt), user.passwordIterations);
  return constantTimeEqual(hash, user.passwordHash) ? user : null;
}

auth.post("/login", async (c) => {
  const settings = c.get("settings");
  const body = await readJson(c.req.raw, LoginBody, settings.maxRequestBytes);
  // Unknown names are throttled as known ones are, so a 429 tells nothing about which exist.
  const throttle = new LoginThrottle(c.env, settings.abuse, body.username, clientAddress(c.req.raw));
  await throttle.check();
  const usernameLower = body.username.toLowerCase();
  const user = await db(c.env, usernameLower).query.users.findFirst({
    where: eq(schema.users.usernameLower, usernameLower),
  });
  const hash = await hashPassword(
    body.password,
    user ? fromBase64url(user.passwordSalt) : DECOY_SALT,
    user?.passwordIterations ?? PBKDF2_ITERATIONS,
  );
  if (!user || !constantTimeEqual(hash, user.passwordHash)) throw await throttle.failed();
  await throttle.succeeded();
  const { device, token } = await newDevice(c, toUser(user), body.deviceName);
  return c.json({ user: toUser(user), device, token }, 200);
});

auth.post("/logout", requireAuth, async (c) => {
  // Should it fail, the logout can be retried with the same token (worker/lib/signOut.ts).
  await signOutDevice(c.env, c.get("auth"));
  return c.body(null, 204);
});

export const me = newApp();

me.get("/", requireAuth, async (c) => {
  const { userId, deviceId } = c.get("auth");
  const kept = await userStub(c.env, userId).me(userId, deviceId);
  if (kept) return c.json(kept);
  // A device signed in before the user's object kept the copy: the directory answers.
  const [user, device] = await Promise.all([
    db(c.env, userId).query.users.findFirst({ where: eq(schema.users.id, userId) }),
    db(c.env, deviceId).query.devices.findFirst({ where: eq(schema.devices.id, deviceId) }),
  ]);
  if (!user || !device) throw new ApiError("unauthorized", "account no longer exists");
  return c.json({ user: toUser(user), device: { id: device.id, name: device.name, createdAt: device.createdAt } });
});

/**
 * The caller's profile: a display name, and a photo that is an image they uploaded (media ids
 * that are not theirs, not complete or not an image answer alike: 400). The photo is then visible
 * to every signed-in user, as the user is (kernel/d1/mediaRecords.ts visibleTo).
 */
me.patch("/", requireAuth, async (c) => {
  const body = await readJson(c.req.raw, ProfileBody, c.get("settings").maxRequestBytes);
  const { userId } = c.get("auth");
  if (typeof body.photo === "string") {
    const row = (await ownMedia(c.env, userId, [body.photo])).get(body.photo);
    if (!row || kindOf(storedType(row.contentType)) !== "image") throw new ApiError("bad_request", "photo must be the id of an image you uploaded");
  }
  const set: { displayName?: string; photoId?: string | null } = {};
  if (body.displayName !== undefined) set.displayName = body.displayName;
  if (body.photo !== undefined) set.photoId = body.photo;
  const [user] = await db(c.env, userId).update(schema.users).set(set).where(eq(schema.users.id, userId)).returning();
  if (!user) throw new ApiError("unauthorized", "account no longer exists");
  await userStub(c.env, userId).profileChanged(userId, toUser(user));
  return c.json({ user: toUser(user) });
});
