// The fan-out queue's consumer: a large group's news for its members' user objects, in jobs of
// up to 100 members (durable-objects/conversation/fanout.ts queues them). Each job is acked or
// retried on its own, so one failing recipient does not redeliver a whole batch.
import { FanoutJob, conversationOf, peersOf, type Peers } from "../durable-objects/contract";

export async function consumeFanout(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  const peers = peersOf(env);
  await Promise.all(
    batch.messages.map(async (message) => {
      const job = FanoutJob.safeParse(message.body);
      if (!job.success) {
        console.error(`fanout: dropping malformed job ${message.id}: ${job.error.issues[0]?.message ?? "invalid"}`);
        message.ack();
        return;
      }
      try {
        await deliverFanoutJob(peers, job.data);
        message.ack();
      } catch (err) {
        console.warn(`fanout: job ${message.id} failed (attempt ${message.attempts}), retrying:`, String(err));
        message.retry({ delaySeconds: Math.min(60, 2 ** message.attempts) });
      }
    }),
  );
}

/**
 * Delivers one queued job: every user's object in parallel. A throw retries the whole job. Then
 * the objects' answers go back to the conversation, so that it can skip the quiet ones in its next
 * jobs; losing them costs only calls, so a failure to report does not retry the job.
 */
export async function deliverFanoutJob(peers: Peers, job: FanoutJob): Promise<void> {
  const { askedAt } = job;
  const reportTo = conversationOf(job.events[0]);
  const report = askedAt !== undefined && reportTo !== null;
  const answers = await Promise.all(
    job.userIds.map((userId) => peers.user(userId).deliver(userId, job.events, false, job.liveOn?.[userId], report)),
  );
  if (!report) return;
  try {
    const byUser = Object.fromEntries(job.userIds.map((userId, i) => [userId, answers[i] ?? null]));
    await peers.conversation(reportTo).membersAnswered(byUser, askedAt);
  } catch (err) {
    console.warn(`fanout: could not report answers to conversation ${reportTo}:`, err instanceof Error ? err.message : String(err));
  }
}
