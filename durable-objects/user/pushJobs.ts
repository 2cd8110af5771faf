// What goes onto the push Queue. The recipient's user object calls `enqueuePushes` for the stored
// messages of a delivery when the recipient has no live user socket; everything after the queue
// (subscriptions, encryption, retries) is the consumer's (worker/push/consumer.ts). The job's
// schema is PushJobMessage in ../contract.ts.
//
// The queue carries only what the notification needs, never the whole message: a preview is cut
// here, and nothing of the body is queued for E2EE conversations or encrypted messages.
import type { Message } from "../../protocol";
import type { ConversationSummary, PushJobMessage, PushQueueMessage } from "../contract";

export interface PushJob {
  userId: string;
  conversation: ConversationSummary;
  message: Message;
}

/** A preview longer than this is cut (code points) and ends with an ellipsis. */
export const PREVIEW_MAX = 120;

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
export async function enqueuePushes(queue: Pick<Queue<PushQueueMessage>, "sendBatch">, jobs: PushJob[]): Promise<void> {
  const wanted = jobs.filter((job) => job.message.kind !== "system" && job.message.senderId !== job.userId);
  const calls: Promise<unknown>[] = [];
  for (let i = 0; i < wanted.length; i += PUSH_SEND_BATCH_MAX) {
    const chunk = wanted.slice(i, i + PUSH_SEND_BATCH_MAX);
    calls.push(
      queue.sendBatch(chunk.map((job) => ({ body: toQueueMessage(job) satisfies PushQueueMessage, contentType: "json" as const }))),
    );
  }
  await Promise.all(calls);
}
