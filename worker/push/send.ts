// One Web Push request: RFC 8291 (aes128gcm) encryption and RFC 8292 (VAPID) authorization by
// @block65/webcrypto-web-push, then the fetch, and what the push service's answer means for us.
import { buildPushPayload, type VapidKeys } from "@block65/webcrypto-web-push";
import type { PushPayload } from "../../protocol";
import { sha256 } from "../lib/crypto";
import type { PushSettings } from "../../kernel/settings";
import type { PushTarget } from "../../durable-objects/contract";
import { buildUrlFor, endpointProblem } from "./endpoint";
import { vapidAuthorization } from "./vapid";

export type Outcome =
  | { type: "delivered"; status: number }
  /** 404/410: the subscription is gone for good (RFC 8030 §7.3); delete it. */
  | { type: "gone"; status: number }
  /** 429, 5xx or no answer at all (status 0): try again later. */
  | { type: "retry"; status: number; retryAfterSeconds?: number }
  /** Anything else (400, 401, 403, 413, ...): trying again would not help. */
  | { type: "failed"; status: number; reason: string };

/** Queues accept at most 12 h of delay. */
export const MAX_DELAY_SECONDS = 12 * 3600;
const MAX_BACKOFF_SECONDS = 3600;

export function vapidKeys(env: Env, settings: PushSettings): VapidKeys | null {
  if (!env.VAPID_PUBLIC_KEY || !env.VAPID_PRIVATE_KEY) return null;
  return { subject: settings.vapidSubject, publicKey: env.VAPID_PUBLIC_KEY, privateKey: env.VAPID_PRIVATE_KEY };
}

/**
 * RFC 8030 §5.4: a Topic is at most 32 characters of the URL-safe base64 alphabet. A hash of the
 * conversation id fits whatever the id looks like and tells the push service nothing about it.
 */
export async function topicFor(conversationId: string): Promise<string> {
  return (await sha256(`edge-chat/conversation/${conversationId}`)).slice(0, 32);
}

export async function sendPush(
  subscription: PushTarget,
  payload: PushPayload,
  topic: string,
  vapid: VapidKeys,
  settings: PushSettings,
): Promise<Outcome> {
  const problem = endpointProblem(subscription.endpoint, settings.allowInsecureLocalhost);
  // Stored while PUSH_ALLOW_INSECURE_LOCALHOST was on; it can never be delivered now.
  if (problem) return { type: "gone", status: 0 };
  let request: Awaited<ReturnType<typeof buildPushPayload>>;
  try {
    request = await buildPushPayload(
      { data: payload, options: { ttl: settings.ttlSeconds, urgency: "high", topic } },
      { endpoint: buildUrlFor(subscription.endpoint), expirationTime: null, keys: { p256dh: subscription.p256dh, auth: subscription.auth } },
      vapid,
    );
    const origin = new URL(subscription.endpoint).origin;
    if (!origin.startsWith("https:")) request.headers = { ...request.headers, authorization: await vapidAuthorization(origin, vapid) };
  } catch (err) {
    return { type: "failed", status: 0, reason: `could not build the request: ${String(err)}` };
  }
  let res: Response;
  try {
    res = await fetch(subscription.endpoint, { method: "POST", headers: request.headers, body: request.body });
  } catch (err) {
    console.warn(`push fetch failed: ${String(err)}`);
    return { type: "retry", status: 0 };
  }
  // The body only matters for a log line; never keep the connection waiting on it.
  const detail = res.ok ? "" : (await res.text().catch(() => "")).slice(0, 200);
  if (res.ok) return { type: "delivered", status: res.status };
  if (res.status === 404 || res.status === 410) return { type: "gone", status: res.status };
  if (res.status === 429 || res.status >= 500) {
    const retryAfterSeconds = parseRetryAfter(res.headers.get("retry-after"), Date.now());
    return retryAfterSeconds === undefined
      ? { type: "retry", status: res.status }
      : { type: "retry", status: res.status, retryAfterSeconds };
  }
  return { type: "failed", status: res.status, reason: detail };
}

/** Retry-After is delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

/**
 * The delay before try number `nextTry` (2, 3, ...): the push service's Retry-After when it gave
 * one, else exponential backoff from the configured base. Whole seconds, within the queue's limit.
 */
export function retryDelaySeconds(nextTry: number, baseSeconds: number, retryAfterSeconds?: number): number {
  const delay =
    retryAfterSeconds !== undefined
      ? retryAfterSeconds
      : Math.min(baseSeconds * 2 ** Math.max(0, nextTry - 2), MAX_BACKOFF_SECONDS);
  return Math.min(Math.max(0, Math.ceil(delay)), MAX_DELAY_SECONDS);
}
