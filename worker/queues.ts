// Queue consumers, dispatched by queue name. Each message is acked or retried on its own, so one
// failing recipient does not redeliver a whole batch.
import { deliverFanoutJob, type FanoutJob } from "../durable-objects/conversation/fanout";

export const QUEUES = { fanout: "edge-chat-fanout" } as const;

function isFanoutJob(body: unknown): body is FanoutJob {
  return (
    typeof body === "object" &&
    body !== null &&
    "userIds" in body &&
    Array.isArray(body.userIds) &&
    "events" in body &&
    Array.isArray(body.events)
  );
}

export async function consumeFanout(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  await Promise.all(
    batch.messages.map(async (message) => {
      if (!isFanoutJob(message.body)) {
        console.error(`fanout: dropping malformed job ${message.id}`);
        message.ack();
        return;
      }
      try {
        await deliverFanoutJob(env, message.body);
        message.ack();
      } catch (err) {
        console.warn(`fanout: job ${message.id} failed (attempt ${message.attempts}), retrying:`, String(err));
        message.retry({ delaySeconds: Math.min(60, 2 ** message.attempts) });
      }
    }),
  );
}
