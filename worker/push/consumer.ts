// The push Queue's consumer. A job (one message for one user) is sent at once to each of the
// user's subscriptions; a subscription that answers 429/5xx (or does not answer) gets its own
// `delivery` queue message, retried with backoff, so a retry never re-sends to the subscriptions
// that already have the push. 404/410 delete the subscription. A push that still fails after
// PUSH_MAX_TRIES, or fails in a way retrying cannot fix, is logged with console.error.
//
// Delivery is at least once: a job retried after a crash mid-way may push twice to a device. The
// per-conversation Topic lets the push service replace an undelivered duplicate.
import type { VapidKeys } from "@block65/webcrypto-web-push";
import { inArray } from "drizzle-orm";
import type { PushPayload } from "../../protocol";
import { drizzleOf, schema } from "../../kernel/d1/db";
import { d1Shards } from "../../kernel/d1/shards";
import { userStub } from "../../kernel/objects";
import { readSettings, type PushSettings } from "../../kernel/settings";
import { originOf } from "./endpoint";
import { PushQueueMessage, type PushDeliveryMessage, type PushJobMessage, type PushTarget } from "../../durable-objects/contract";
import { retryDelaySeconds, sendPush, topicFor, vapidKeys, type Outcome } from "./send";

interface Context {
  env: Env;
  settings: PushSettings;
  vapid: VapidKeys;
  /** The subscriptions of a job's user, asked of the user's object once per batch for every job in it. */
  subscriptionsOf: (userId: string) => Promise<PushTarget[]>;
  /** A sender's display name (a direct conversation's push title), read once per batch likewise. */
  displayNameOf: (userId: string) => Promise<string | undefined>;
}

/** What to do with a queue message once handled. */
type Disposition = { type: "ack" } | { type: "retry"; delaySeconds: number };

export async function handlePushBatch(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  const settings = readSettings(env).push;
  const vapid = vapidKeys(env, settings);
  const messages = batch.messages.map((msg) => ({ msg, parsed: PushQueueMessage.safeParse(msg.body) }));
  const jobs = messages.flatMap(({ parsed }) => (parsed.success && parsed.data.kind === "job" ? [parsed.data] : []));
  // One call to each job's user's object for its subscriptions, however many of the batch's jobs
  // are that user's (a busy group queues a job per message for each of its offline members), and
  // one D1 read per shard for the senders' names that title direct conversations' pushes. Each is
  // read on first use, so a batch of deliveries alone reads nothing; a failed read fails (and
  // retries) its jobs.
  const subscriptions = new Map<string, Promise<PushTarget[]>>();
  const names = once(() => displayNames(env, jobs.filter((job) => job.conversation.type === "direct").map((job) => job.message.senderId)));
  const subscriptionsOf = (userId: string) => {
    let found = subscriptions.get(userId);
    if (!found) subscriptions.set(userId, (found = userStub(env, userId).pushTargets(userId)));
    return found;
  };
  const displayNameOf = async (userId: string) => (await names()).get(userId);
  await Promise.all(
    messages.map(async ({ msg, parsed }) => {
      if (!parsed.success) {
        console.error(`push queue: dropped malformed message ${msg.id}: ${parsed.error.message}`);
        msg.ack();
        return;
      }
      let disposition: Disposition;
      try {
        // Without keys nothing can be sent; retrying gives the operator time to set them.
        if (!vapid) throw new Error("VAPID_PUBLIC_KEY / VAPID_PRIVATE_KEY are not set");
        const ctx = { env, settings, vapid, subscriptionsOf, displayNameOf };
        disposition =
          parsed.data.kind === "job" ? await handleJob(ctx, parsed.data) : await handleDelivery(ctx, parsed.data, msg.attempts);
      } catch (err) {
        if (msg.attempts >= settings.maxTries) {
          console.error(`push queue: ${parsed.data.kind} ${msg.id} failed ${msg.attempts} times, dropped:`, String(err));
          disposition = { type: "ack" };
        } else {
          console.warn(`push queue: ${parsed.data.kind} ${msg.id} failed (attempt ${msg.attempts}), will retry:`, String(err));
          disposition = { type: "retry", delaySeconds: retryDelaySeconds(msg.attempts + 1, settings.retryBaseSeconds) };
        }
      }
      if (disposition.type === "ack") msg.ack();
      else msg.retry({ delaySeconds: disposition.delaySeconds });
    }),
  );
}

/** `load`, called at most once: by the first caller, whose promise every later caller shares. */
function once<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | null = null;
  return () => (loaded ??= load());
}

/** The display names of these users (at most a batch's worth, as above). */
async function displayNames(env: Env, userIds: string[]): Promise<Map<string, string>> {
  const unique = [...new Set(userIds)];
  if (unique.length === 0) return new Map();
  const rows = await d1Shards(env).query(unique, (database, ids) =>
    drizzleOf(database).select({ id: schema.users.id, displayName: schema.users.displayName }).from(schema.users).where(inArray(schema.users.id, ids)),
  );
  return new Map(rows.map((row) => [row.id, row.displayName]));
}

async function handleJob(ctx: Context, job: PushJobMessage): Promise<Disposition> {
  const subscriptions = await ctx.subscriptionsOf(job.userId);
  if (subscriptions.length === 0) return { type: "ack" };
  const payload: PushPayload = {
    type: "message",
    conversationId: job.conversation.id,
    seq: job.message.seq,
    messageId: job.message.id,
    senderId: job.message.senderId,
    title: await titleOf(ctx, job),
    ...(job.message.preview === undefined ? {} : { body: job.message.preview }),
  };
  const topic = await topicFor(job.conversation.id);
  const retries: { body: PushDeliveryMessage; delaySeconds: number; contentType: "json" }[] = [];
  await Promise.all(
    subscriptions.map(async (sub) => {
      const outcome = await sendPush(sub, payload, topic, ctx.vapid, ctx.settings);
      if (outcome.type === "retry") {
        retries.push({
          body: { kind: "delivery", userId: job.userId, endpoint: sub.endpoint, topic, payload, tries: 1 },
          delaySeconds: retryDelaySeconds(2, ctx.settings.retryBaseSeconds, outcome.retryAfterSeconds),
          contentType: "json",
        });
      } else {
        await settle(ctx, outcome, sub, 1, job.userId);
      }
    }),
  );
  // Before the job is acked: if this fails, the job is retried rather than the retries lost.
  if (retries.length > 0) await ctx.env.PUSH_QUEUE.sendBatch(retries);
  return { type: "ack" };
}

async function handleDelivery(ctx: Context, delivery: PushDeliveryMessage, attempts: number): Promise<Disposition> {
  // Only while the endpoint still belongs to the user the push is for: a browser that has since
  // subscribed for another account must not get this user's notification.
  const sub = await userStub(ctx.env, delivery.userId).pushTarget(delivery.userId, delivery.endpoint);
  if (!sub) return { type: "ack" };
  const tries = delivery.tries + attempts;
  const outcome = await sendPush(sub, delivery.payload, delivery.topic, ctx.vapid, ctx.settings);
  if (outcome.type === "retry" && tries < ctx.settings.maxTries) {
    return { type: "retry", delaySeconds: retryDelaySeconds(tries + 1, ctx.settings.retryBaseSeconds, outcome.retryAfterSeconds) };
  }
  await settle(ctx, outcome, sub, tries, delivery.userId);
  return { type: "ack" };
}

/** A final outcome: nothing more will be tried for this push on this subscription. */
async function settle(ctx: Context, outcome: Outcome, sub: PushTarget, tries: number, userId: string): Promise<void> {
  const origin = originOf(sub.endpoint);
  switch (outcome.type) {
    case "delivered":
      return;
    case "gone":
      await userStub(ctx.env, userId).removePushSubscription(userId, sub.endpoint);
      console.log(`push: subscription at ${origin} is gone (status ${outcome.status}), deleted`);
      return;
    case "failed":
      console.error(`push to ${origin} failed with status ${outcome.status}, dropped: ${outcome.reason}`);
      return;
    case "retry":
      console.error(`push to ${origin} still failing with status ${outcome.status} after ${tries} tries, dropped`);
      return;
  }
}

async function titleOf(ctx: Context, job: PushJobMessage): Promise<string> {
  if (job.conversation.type === "group") return job.conversation.title ?? "Group";
  return (await ctx.displayNameOf(job.message.senderId)) ?? "New message";
}
