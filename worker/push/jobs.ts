// What goes onto the push Queue. The recipient's UserDO calls `enqueuePushes` for the stored
// messages of a delivery when the recipient has no live user socket; everything after the queue
// (subscriptions, encryption, retries) is the consumer's (./consumer.ts).
//
// The queue carries only what the notification needs, never the whole message: a preview is cut
// here, and nothing of the body is queued for E2EE conversations or encrypted messages.
import * as z from "zod";
import { PushPayload, type Message } from "../../protocol";

export interface PushJob {
  userId: string;
  conversation: { id: string; type: "direct" | "group"; title: string | null; e2ee: boolean };
  message: Message;
}

/** A preview longer than this is cut (code points) and ends with an ellipsis. */
export const PREVIEW_MAX = 120;

const Id = z.string().min(1).max(128);

/** One message pushed to one user: expanded by the consumer into one delivery per subscription. */
export const PushJobMessage = z.object({
  kind: z.literal("job"),
  userId: Id,
  conversation: z.object({
    id: Id,
    type: z.enum(["direct", "group"]),
    title: z.string().nullable(),
  }),
  message: z.object({
    id: Id,
    seq: z.number().int().positive(),
    senderId: Id,
    /** Absent for E2EE conversations and encrypted messages. */
    preview: z.string().optional(),
  }),
});

/**
 * A notification still owed to one subscription after a retryable failure. The payload is final
 * (title resolved); it is encrypted afresh on each try. `tries` counts the tries made before this
 * queue message was first delivered; the queue's own `attempts` counts the rest.
 */
export const PushDeliveryMessage = z.object({
  kind: z.literal("delivery"),
  userId: Id,
  endpoint: z.string().min(1).max(2048),
  topic: z.string(),
  payload: PushPayload,
  tries: z.number().int().nonnegative(),
});

export const PushQueueMessage = z.discriminatedUnion("kind", [PushJobMessage, PushDeliveryMessage]);

export type PushJobMessage = z.infer<typeof PushJobMessage>;
export type PushDeliveryMessage = z.infer<typeof PushDeliveryMessage>;
export type PushQueueMessage = z.infer<typeof PushQueueMessage>;

/** A short, single-line preview of a plaintext message, or undefined when there is nothing to show. */
export function previewOf(message: Message): string | undefined {
  if (message.kind === "encrypted") return undefined;
  const text = message.body?.replace(/\s+/g, " ").trim();
  if (text) {
    const chars = Array.from(text);
    return chars.length > PREVIEW_MAX ? `${chars.slice(0, PREVIEW_MAX - 1).join("")}…` : text;
  }
  const [first, ...rest] = message.media;
  if (first) return `📎 ${first.name}${rest.length > 0 ? ` +${rest.length}` : ""}`;
  return undefined;
}

export function toQueueMessage(job: PushJob): PushJobMessage {
  const preview = job.conversation.e2ee ? undefined : previewOf(job.message);
  return {
    kind: "job",
    userId: job.userId,
    conversation: { id: job.conversation.id, type: job.conversation.type, title: job.conversation.title },
    message: {
      id: job.message.id,
      seq: job.message.seq,
      senderId: job.message.senderId,
      ...(preview === undefined ? {} : { preview }),
    },
  };
}

/** The most messages one `sendBatch` takes (Cloudflare Queues: 100 messages and 256 KB). */
export const PUSH_SEND_BATCH_MAX = 100;

/**
 * Queues the push of each message to its user, in as few queue calls as the Queue allows: one
 * `sendBatch` per PUSH_SEND_BATCH_MAX jobs (a job is at most about 1.5 KB, with its preview and
 * title at their longest, so 100 stay under the 256 KB). System messages (membership changes)
 * are not pushed: the conversation list tells the user about them on the next open. Nor is a
 * message pushed to its sender.
 */
export async function enqueuePushes(env: Env, jobs: PushJob[]): Promise<void> {
  const wanted = jobs.filter((job) => job.message.kind !== "system" && job.message.senderId !== job.userId);
  const calls: Promise<unknown>[] = [];
  for (let i = 0; i < wanted.length; i += PUSH_SEND_BATCH_MAX) {
    const chunk = wanted.slice(i, i + PUSH_SEND_BATCH_MAX);
    calls.push(
      env.PUSH_QUEUE.sendBatch(chunk.map((job) => ({ body: toQueueMessage(job) satisfies PushQueueMessage, contentType: "json" as const }))),
    );
  }
  await Promise.all(calls);
}
