// Web Push subscriptions (API.md "Push notifications"), kept by each user's object
// (durable-objects/user/pushSubscriptions.ts). Delivery is in worker/push/.
import { PushEndpointQuery, PushSubscriptionBody } from "../../protocol";
import { newApp, requireAuth } from "../app";
import { claimPushEndpoint } from "../../kernel/d1/pushEndpoints";
import { d1Shards } from "../../kernel/d1/shards";
import { userStub } from "../../kernel/objects";
import { fromBase64url } from "../lib/crypto";
import { ApiError } from "../lib/apiError";
import { readJson, readQuery } from "../lib/validate";
import { endpointProblem } from "../push/endpoint";

export const push = newApp();

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
  const record = { endpoint: body.endpoint, deviceId, p256dh, auth: unpadded(body.keys.auth), createdAt: Date.now() };
  // Kept by the user's object, which refuses it if the device has signed out meanwhile.
  if (!(await userStub(c.env, userId).subscribePush(userId, c.get("session").sessionId, record))) {
    throw new ApiError("unauthorized", "the device was signed out");
  }
  // Idempotent per endpoint. An endpoint belongs to one browser profile: when it subscribes again
  // under another account, the latest subscriber owns it and the previous owner stops getting
  // pushes there. The claim comes after the object kept it, so a claim by another user that
  // follows always finds it there to remove.
  const previous = await claimPushEndpoint(d1Shards(c.env).of(record.endpoint), record.endpoint, userId);
  if (previous) await userStub(c.env, previous).removePushSubscription(previous, record.endpoint);
  return c.json({ subscription: { endpoint: record.endpoint, deviceId } }, 201);
});

push.delete("/subscriptions", requireAuth, async (c) => {
  const { userId } = c.get("auth");
  const { endpoint } = readQuery(c.req.url, PushEndpointQuery);
  // Any of the user's devices may remove any of the user's subscriptions; another user's is
  // untouched (it is in that user's object), and an unknown endpoint is already unsubscribed:
  // 204 either way. D1's claim stays: it only tells a later claimer whom to ask.
  await userStub(c.env, userId).removePushSubscription(userId, endpoint);
  return c.body(null, 204);
});
