// The fan-out queue's consumer: each job parsed, delivered to its users' objects, acked or retried
// on its own, and the objects' answers reported back to the job's conversation when it asked.
import { describe, expect, it } from "vitest";
import type { ConversationPeer, DeliveryAnswer, FanoutJob, Peers } from "../../../durable-objects/contract";
import { consumeFanout, deliverFanoutJob } from "../../../worker/queues";
import { messageEvent } from "../support/user";

const ASKED = 1_800_000_000_000;

/** Peers whose user objects record their calls and answer from `answers`; `fail` names what throws. */
function fakePeers() {
  const delivered: unknown[][] = [];
  const reported: unknown[][] = [];
  const answers = new Map<string, DeliveryAnswer>();
  const fail = new Set<string>();
  const peers: Peers = {
    user: (userId) =>
      ({
        deliver: async (...args: unknown[]) => {
          delivered.push(args);
          if (fail.has(userId)) throw new Error(`${userId} unreachable`);
          return answers.get(userId) ?? null;
        },
      }) as unknown as ReturnType<Peers["user"]>,
    conversation: (conversationId) =>
      ({
        membersAnswered: async (byUser, askedAt) => {
          reported.push([conversationId, byUser, askedAt]);
          if (fail.has(conversationId)) throw new Error(`${conversationId} unreachable`);
        },
      }) as Pick<ConversationPeer, "membersAnswered"> as ConversationPeer,
  };
  // The runtime's namespaces, as peersOf(env) addresses them: by name, to these fakes.
  const env = {
    USER: { idFromName: (name: string) => name, get: (id: string) => peers.user(id) },
    CONVERSATION: { idFromName: (name: string) => name, get: (id: string) => peers.conversation(id) },
  } as unknown as Env;
  return { peers, env, delivered, reported, answers, fail };
}

const job = (over: Partial<FanoutJob> = {}): FanoutJob => ({
  userIds: ["bob", "carol"],
  events: [messageEvent(4, { conversationId: "c7" })],
  liveOn: { bob: { "bob-phone": 3 } },
  askedAt: ASKED,
  ...over,
});

/** A queue batch whose messages record their ack and retry. */
function batchOf(bodies: Array<{ body: unknown; attempts?: number }>) {
  const outcomes: Record<string, unknown> = {};
  const messages = bodies.map(({ body, attempts = 1 }, i) => ({
    id: `q${i}`,
    timestamp: new Date(0),
    body,
    attempts,
    ack: () => void (outcomes[`q${i}`] = "ack"),
    retry: (options?: QueueRetryOptions) => void (outcomes[`q${i}`] = { retry: options }),
  }));
  const batch = { messages, queue: "edge-chat-fanout" } as unknown as MessageBatch<unknown>;
  return { batch, outcomes };
}

describe("deliverFanoutJob", () => {
  it("calls each user's object with the job's events, asking for answers, and reports them to the job's conversation", async () => {
    const t = fakePeers();
    t.answers.set("bob", { devices: ["bob-phone"], epoch: 2 });
    const j = job();
    await deliverFanoutJob(t.peers, j);
    expect(t.delivered).toEqual([
      ["bob", j.events, false, { "bob-phone": 3 }, true],
      ["carol", j.events, false, undefined, true],
    ]);
    expect(t.reported).toEqual([["c7", { bob: { devices: ["bob-phone"], epoch: 2 }, carol: null }, ASKED]]);
  });

  it("neither asks nor reports for a job queued without askedAt", async () => {
    const t = fakePeers();
    await deliverFanoutJob(t.peers, job({ askedAt: undefined, liveOn: undefined }));
    expect(t.delivered.map((call) => call.slice(2))).toEqual([
      [false, undefined, false],
      [false, undefined, false],
    ]);
    expect(t.reported).toEqual([]);
  });

  it("throws, reporting nothing, when a delivery fails", async () => {
    const t = fakePeers();
    t.fail.add("carol");
    await expect(deliverFanoutJob(t.peers, job())).rejects.toThrow("carol unreachable");
    expect(t.reported).toEqual([]);
  });

  it("does not throw when the report fails", async () => {
    const t = fakePeers();
    t.fail.add("c7");
    await expect(deliverFanoutJob(t.peers, job())).resolves.toBeUndefined();
    expect(t.reported).toHaveLength(1);
  });
});

describe("consumeFanout", () => {
  it.each<[string, unknown, string[], Record<string, unknown>]>([
    ["acks a job delivered", job(), [], { q0: "ack" }],
    ["acks and drops a malformed job", { userIds: [], events: [] }, [], { q0: "ack" }],
    ["acks and drops a body that is no job at all", "hello", [], { q0: "ack" }],
    ["retries a job whose delivery throws", job(), ["bob"], { q0: { retry: { delaySeconds: 2 } } }],
    ["acks a job whose report fails: the report costs only calls", job(), ["c7"], { q0: "ack" }],
  ])("%s", async (_, body, failing, outcomes) => {
    const t = fakePeers();
    for (const id of failing) t.fail.add(id);
    const b = batchOf([{ body }]);
    await consumeFanout(b.batch, t.env);
    expect(b.outcomes).toEqual(outcomes);
  });

  it("settles each job on its own, retrying with a backoff that doubles up to a minute", async () => {
    const t = fakePeers();
    t.fail.add("dave");
    const failing = job({ userIds: ["dave"], liveOn: undefined });
    const b = batchOf([{ body: job() }, ...[1, 3, 5, 6, 9].map((attempts) => ({ body: failing, attempts })), { body: {} }]);
    await consumeFanout(b.batch, t.env);
    expect(b.outcomes).toEqual({
      q0: "ack",
      q1: { retry: { delaySeconds: 2 } },
      q2: { retry: { delaySeconds: 8 } },
      q3: { retry: { delaySeconds: 32 } },
      q4: { retry: { delaySeconds: 60 } },
      q5: { retry: { delaySeconds: 60 } },
      q6: "ack",
    });
    expect(t.delivered.filter((call) => call[0] === "bob")).toHaveLength(1);
  });
});
