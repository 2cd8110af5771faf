// Web Push subscriptions (API.md "Push notifications"). Delivery is in worker/push/.
import { and, eq } from "drizzle-orm";
import { PushEndpointQuery, PushSubscriptionBody } from "../../protocol";
import { newApp, requireAuth, stillSignedIn } from "../app";
import { db, schema } from "../../kernel/d1/db";
import { d1Shards } from "../../kernel/d1/shards";
import { fromBase64url } from "../lib/crypto";
import { ApiError } from "../lib/apiError";
import { readJson, readQuery } from "../lib/validate";
import { endpointProblem } from "../push/endpoint";

export const push = newApp();

/**
 * Each message fans out into one outbound request per subscription, so a user's subscriptions
 * are capped: beyond this, subscribing drops the user's least recently (re)subscribed one.
 */
export const PUSH_SUBSCRIPTIONS_PER_USER = 20;

push.get("/vapid-public-key", (c) => {
  if (!c.env.VAPID_PUBLIC_KEY) throw new ApiError("unavailable", "push is not configured");
  return c.json({ publicKey: c.env.VAPID_PUBLIC_KEY });
});

/** Base64url without padding: one spelling per key, whatever padding the client sent. */
const unpadded = (text: string) => text.replace(/=+$/, "");

/** The encryption of every push would fail on a key that is not a point of P-256: refuse it now. */
async function isP256Point(p256dh: string): Promise<boolean> {
  try {
    await crypto.subtle.importKey("raw", fromBase64url(p256dh), { name: "ECDH", namedCurve: "P-256" }, false, []);
    return true;
  } catch {
    return false;
  }
}

push.post("/subscriptions", requireAuth, async (c) => {
  const { userId, deviceId } = c.get("auth");
  const settings = c.get("settings");
  const body = await readJson(c.req.raw, PushSubscriptionBody, settings.maxRequestBytes);
  const problem = endpointProblem(body.endpoint, settings.push.allowInsecureLocalhost);
  if (problem) throw new ApiError("bad_request", problem, { issues: [{ path: "endpoint", message: problem }] });
  const p256dh = unpadded(body.keys.p256dh);
  if (!(await isP256Point(p256dh))) {
    throw new ApiError("bad_request", "invalid subscription key", { issues: [{ path: "keys.p256dh", message: "not a P-256 public key" }] });
  }
  const row = { endpoint: body.endpoint, userId, deviceId, p256dh, auth: unpadded(body.keys.auth), createdAt: Date.now() };
  // Idempotent per endpoint. An endpoint belongs to one browser profile: when it subscribes again
  // under another account or device, the latest subscriber owns it and the previous owner stops
  // getting pushes there.
  const shards = d1Shards(c.env);
  const own = shards.of(userId);
  await db(c.env, userId)
    .insert(schema.pushSubscriptions)
    .values(row)
    .onConflictDoUpdate({
      target: schema.pushSubscriptions.endpoint,
      set: { userId: row.userId, deviceId: row.deviceId, p256dh: row.p256dh, auth: row.auth, createdAt: row.createdAt },
    });
  // The previous owner's row is on its own shard when that user is on another.
  await Promise.all(
    shards.all
      .filter((database) => database !== own)
      .map((database) => database.prepare("DELETE FROM push_subscriptions WHERE endpoint = ?").bind(row.endpoint).run()),
  );
  await own.prepare(
    `DELETE FROM push_subscriptions WHERE user_id = ?1 AND endpoint NOT IN
       (SELECT endpoint FROM push_subscriptions WHERE user_id = ?1 ORDER BY created_at DESC, endpoint LIMIT ?2)`,
  )
    .bind(userId, PUSH_SUBSCRIPTIONS_PER_USER)
    .run();
  // A logout of this device that ran since the check above dropped its subscriptions before this
  // one was written: drop it too.
  if (!(await stillSignedIn(c))) {
    await db(c.env, userId)
      .delete(schema.pushSubscriptions)
      .where(and(eq(schema.pushSubscriptions.endpoint, row.endpoint), eq(schema.pushSubscriptions.deviceId, deviceId)));
    throw new ApiError("unauthorized", "the device was signed out");
  }
  return c.json({ subscription: { endpoint: row.endpoint, deviceId } }, 201);
});

push.delete("/subscriptions", requireAuth, async (c) => {
  const { userId } = c.get("auth");
  const { endpoint } = readQuery(c.req.url, PushEndpointQuery);
  // Any of the user's devices may remove any of the user's subscriptions; another user's is
  // untouched, and an unknown endpoint is already unsubscribed: 204 either way.
  await db(c.env, userId)
    .delete(schema.pushSubscriptions)
    .where(and(eq(schema.pushSubscriptions.endpoint, endpoint), eq(schema.pushSubscriptions.userId, userId)));
  return c.body(null, 204);
});
