// The fan-out over a real conversation store: inline calls to small groups' user objects, queued
// jobs for large ones, the cursor moved only past what every recipient got, receipts riding on the
// calls, and quiet members skipped only when that cannot lose a message.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FanoutJob, QUIET_HINT_MS, frameOf, type DeliveryAnswer, type InboxEvent, type LiveOn } from "../../../durable-objects/contract";
import { Fanout, USERS_PER_JOB } from "../../../durable-objects/conversation/fanout";
import type { LiveCopy } from "../../../durable-objects/conversation/quiet";
import { ConversationHarness, expectOk, identity } from "../support/conversation";
import { receipt } from "../support/user";

const T = 1_800_000_000_000;

const closers: Array<() => void> = [];
beforeEach(() => {
  // The fan-out reads Date.now() for its quiet members' hints: pinned here, moved by the tests.
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T);
});
afterEach(() => {
  vi.useRealTimers();
  closers.splice(0).forEach((close) => close());
});

interface Call {
  userId: string;
  events: InboxEvent[];
  inOrder: boolean | undefined;
  liveOn: LiveOn | undefined;
}

/** A group of alice (its admin) and `others`, its creation already fanned out. */
async function setup(others: string[], inlineMax = 50) {
  const h = new ConversationHarness();
  closers.push(() => h.sql.close());
  h.group("alice", others);
  const calls: Call[] = [];
  const jobs: unknown[] = [];
  const sendBatches: number[] = [];
  const users = {
    failing: new Set<string>(),
    /** Per user, what its object answers. */
    answers: new Map<string, DeliveryAnswer>(),
    /** Runs during a user's call, before it answers or fails. */
    during: null as (() => void) | null,
  };
  const queue = { failing: false };
  const live = new Map<string, Record<string, LiveCopy>>();
  const fanout = new Fanout(
    h.store,
    (userId) => ({
      deliver: async (_userId, events, inOrder, liveOn) => {
        calls.push({ userId, events, inOrder, liveOn });
        users.during?.();
        if (users.failing.has(userId)) throw new Error(`${userId} unreachable`);
        return users.answers.get(userId) ?? null;
      },
    }),
    {
      sendBatch: async (messages) => {
        if (queue.failing) throw new Error("queue unavailable");
        const bodies = [...messages].map((m) => m.body);
        sendBatches.push(bodies.length);
        jobs.push(...bodies);
        return {} as QueueSendBatchResponse;
      },
    },
    inlineMax,
    () => live,
  );
  expect(await fanout.run()).toBe(true);
  const clear = () => void [calls, jobs, sendBatches].forEach((list) => list.splice(0));
  clear();
  const send = (count: number, body = "hi") =>
    Array.from({ length: count }, () => expectOk(h.send("alice", { clientMsgId: crypto.randomUUID(), body })).message.seq);
  return { h, fanout, calls, jobs, sendBatches, users, queue, live, send, clear };
}

/** Each event as a short label: `m<seq>`, `m<seq>!` for a system message, `changed`, `r:<reader>@<readSeq>`. */
const labels = (events: InboxEvent[]) =>
  events.map((e) =>
    e.type === "message" ? `m${e.message.seq}${e.message.kind === "system" ? "!" : ""}` : e.type === "changed" ? "changed" : e.type === "hidden" ? `h:${e.seqs.join(",")}` : `r:${e.receipt.userId}@${e.receipt.readSeq}`,
  );
/** Per user called, the labels of each call's events. */
const callsByUser = (calls: Call[]) => {
  const out: Record<string, string[][]> = {};
  for (const c of calls) (out[c.userId] ??= []).push(labels(c.events));
  return out;
};
const userIds = (n: number) => Array.from({ length: n }, (_, i) => `u${i + 1}`);

describe("Fanout: inline calls and queued jobs", () => {
  it.each([
    ["calls each member's object directly up to inlineMax members", 3, true],
    ["queues jobs above inlineMax members", 2, false],
  ])("%s", async (_, inlineMax, inline) => {
    const t = await setup(["bob", "carol"], inlineMax);
    t.send(2);
    expect(await t.fanout.run()).toBe(true);
    expect(t.calls.map((c) => [c.userId, c.inOrder]).sort()).toEqual(inline ? [["alice", true], ["bob", true], ["carol", true]] : []);
    expect((t.jobs as FanoutJob[]).flatMap((j) => j.userIds).sort()).toEqual(inline ? [] : ["alice", "bob", "carol"]);
    expect(t.h.store.fanoutSeq()).toBe(3);
  });

  it.each([
    ["inline", 50],
    ["queued", 1],
  ])("relays an edit of a message from before a member's joining to that member without its text (%s)", async (_, inlineMax) => {
    const t = await setup(["bob"], inlineMax);
    const [early] = t.send(1, "before dave");
    expectOk(t.h.conversation.addMembers(identity("alice"), ["dave"], T));
    expectOk(t.h.conversation.actions.act(identity("alice"), "e1", { type: "edit", targetSeq: early!, body: "secret text" }, T, null));
    expect(await t.fanout.run()).toBe(true);
    const delivered = inlineMax > 1 ? t.calls.map((c) => ({ userIds: [c.userId], events: c.events })) : (t.jobs as FanoutJob[]);
    const editFor = (userId: string) => {
      const events = delivered.filter((d) => d.userIds.includes(userId)).flatMap((d) => d.events);
      const e = events.find((x) => x.type === "message" && x.message.kind === "action");
      return e?.type === "message" ? JSON.parse(frameOf(e.message)) as { message: { body: string } } : null;
    };
    expect(JSON.parse(editFor("bob")!.message.body)).toEqual({ type: "edit", targetSeq: early, body: "secret text" });
    expect(JSON.parse(editFor("alice")!.message.body)).toEqual({ type: "edit", targetSeq: early, body: "secret text" });
    expect(JSON.parse(editFor("dave")!.message.body)).toEqual({ type: "edit", targetSeq: early });
  });

  it("queues jobs of at most 100 users, their events chunked by bytes, each a valid FanoutJob", async () => {
    const t = await setup(userIds(249), 10);
    t.live.set("u1", { "u1-tab": { after: 1, order: 0 } });
    const seqs = t.send(5, "x".repeat(6000));
    expect(await t.fanout.run()).toBe(true);
    const jobs = t.jobs.map((body) => FanoutJob.parse(body));
    expect(jobs.every((j) => j.userIds.length <= USERS_PER_JOB && j.askedAt === T)).toBe(true);
    // Two chunks of events, each to the 250 members in jobs of 100, 100 and 50.
    expect(jobs.map((j) => [j.userIds.length, labels(j.events).join(" ")])).toEqual([
      [100, "m2 m3 m4"],
      [100, "m2 m3 m4"],
      [50, "m2 m3 m4"],
      [100, "m5 m6"],
      [100, "m5 m6"],
      [50, "m5 m6"],
    ]);
    for (const job of jobs) expect(JSON.stringify(job.events).length * 3).toBeLessThan(64 * 1024 + 1000);
    const eventsOf = (userId: string) => jobs.filter((j) => j.userIds.includes(userId)).flatMap((j) => labels(j.events));
    expect(["alice", "u1", "u249"].map(eventsOf)).toEqual(Array(3).fill(seqs.map((s) => `m${s}`)));
    expect(jobs.filter((j) => j.userIds.includes("u1")).map((j) => j.liveOn)).toEqual(Array(2).fill({ u1: { "u1-tab": 1 } }));
    // At most two jobs per sendBatch.
    expect(t.sendBatches).toEqual([2, 2, 2]);
    expect(t.h.store.fanoutSeq()).toBe(6);
  });

  it("puts an event over 64 KiB (a large group's MLS commit) alone in jobs of 20 users that stay under 128 KB, batched under 256 KB", async () => {
    const t = await setup(userIds(49), 10);
    for (let i = 1; i <= 49; i++) t.live.set(`u${i}`, { [`u${i}-phone`]: { after: 1, order: 0 }, [`u${i}-laptop`]: { after: 1, order: 1 } });
    const [small] = t.send(1);
    const [large] = t.send(1, "x".repeat(112 * 1024));
    expect(await t.fanout.run()).toBe(true);
    const jobs = t.jobs.map((body) => FanoutJob.parse(body));
    expect(jobs.map((j) => [j.userIds.length, labels(j.events).join(" ")])).toEqual([
      [50, `m${small}`],
      [20, `m${large}`],
      [20, `m${large}`],
      [10, `m${large}`],
    ]);
    for (const job of t.jobs) expect(new TextEncoder().encode(JSON.stringify(job)).byteLength).toBeLessThan(128_000);
    // The small job and the first large one fit one batch; two large ones would not.
    expect(t.sendBatches).toEqual([2, 1, 1]);
  });
});

describe("Fanout: system messages", () => {
  it.each([
    ["inline", 50],
    ["queued", 1],
  ])("reach the removed users they name, with one changed event, and nothing after their span (%s)", async (_, inlineMax) => {
    const t = await setup(["bob", "carol", "dave"], inlineMax);
    t.send(1);
    expectOk(t.h.conversation.removeMember(identity("alice"), "carol", T));
    expectOk(t.h.conversation.removeMember(identity("dave"), "dave", T));
    expectOk(t.h.conversation.addMembers(identity("alice"), ["erin"], T));
    t.send(1);
    expect(await t.fanout.run()).toBe(true);
    const received = (userId: string) =>
      inlineMax === 50
        ? callsByUser(t.calls)[userId]
        : (t.jobs as FanoutJob[]).filter((j) => j.userIds.includes(userId)).map((j) => labels(j.events));
    for (const userId of ["alice", "bob"]) expect(received(userId)).toEqual([["m2", "m3!", "changed", "m4!", "m5!", "m6"]]);
    // A removed member reads through the message that removed them, not what came after it.
    expect(received("carol")).toEqual([["m2", "m3!", "changed"]]);
    expect(received("dave")).toEqual([["m2", "m3!", "changed", "m4!"]]);
    // A member added in the batch reads from the message that added them.
    expect(received("erin")).toEqual([["m5!", "changed", "m6"]]);
  });
});

describe("Fanout: the cursor", () => {
  it("moves only past the batches every recipient got, and a retry resends the rest", async () => {
    const t = await setup(["bob", "carol"]);
    t.send(150);
    let bobCalls = 0;
    t.users.during = () => {
      if (t.calls.at(-1)!.userId === "bob" && ++bobCalls === 2) t.users.failing.add("bob");
    };
    expect(await t.fanout.run()).toBe(false);
    expect([t.h.store.fanoutSeq(), t.fanout.failures]).toEqual([101, 1]);
    t.users.failing.clear();
    t.users.during = null;
    expect(await t.fanout.run()).toBe(true);
    expect([t.h.store.fanoutSeq(), t.fanout.failures]).toEqual([151, 0]);
    const ranges = callsByUser(t.calls).bob!.map((l) => `${l[0]}..${l.at(-1)}`);
    expect(ranges).toEqual(["m2..m101", "m102..m151", "m102..m151"]);
  });

  it("stops at throughSeq", async () => {
    const t = await setup(["bob"]);
    t.send(5);
    expect(await t.fanout.run(4)).toBe(true);
    expect([t.h.store.fanoutSeq(), callsByUser(t.calls).bob]).toEqual([4, [["m2", "m3", "m4"]]]);
  });

  it("stays put when the queue fails", async () => {
    const t = await setup(["bob", "carol"], 1);
    t.send(2);
    t.queue.failing = true;
    expect(await t.fanout.run()).toBe(false);
    expect(t.h.store.fanoutSeq()).toBe(1);
  });
});

describe("Fanout: receipts", () => {
  it("ride on a member's first call of the pass", async () => {
    const t = await setup(["bob", "carol"]);
    t.fanout.noteReceipt(["bob"], receipt("carol", 1), 0);
    t.send(101);
    expect(await t.fanout.run()).toBe(true);
    const byUser = callsByUser(t.calls);
    expect(byUser.bob!.map((l) => l.filter((x) => x.startsWith("r:")))).toEqual([["r:carol@1"], []]);
    expect(byUser.bob![0]!.at(-1)).toBe("r:carol@1");
    expect([...byUser.alice!, ...byUser.carol!].flat().filter((x) => x.startsWith("r:"))).toEqual([]);
  });

  it.each([
    ["with no messages to deliver", 50, 0],
    ["in a queued group, beside the jobs", 1, 1],
  ])("go in calls of their own %s", async (_, inlineMax, messages) => {
    const t = await setup(["bob", "carol"], inlineMax);
    t.send(messages);
    t.fanout.noteReceipt(["bob", "alice"], receipt("carol", 1), 0);
    t.fanout.noteReceipt(["bob"], receipt("carol", 2), 0);
    expect(await t.fanout.run()).toBe(true);
    expect(callsByUser(t.calls)).toEqual({ bob: [["r:carol@2"]], alice: [["r:carol@1"]] });
    expect(t.calls.every((c) => c.inOrder === true)).toBe(true);
    expect((t.jobs as FanoutJob[]).flatMap((j) => j.events).filter((e) => e.type === "receipt")).toEqual([]);
  });

  it("are kept after a failure for the retry, unless a newer one of the same reader came meanwhile", async () => {
    const t = await setup(["bob", "carol"]);
    t.fanout.noteReceipt(["bob"], receipt("carol", 2), 0);
    t.fanout.noteReceipt(["bob"], receipt("alice", 2), 0);
    t.users.failing.add("bob");
    t.users.during = () => t.fanout.noteReceipt(["bob"], receipt("carol", 4), 0);
    expect(await t.fanout.run()).toBe(false);
    t.users.failing.clear();
    t.users.during = null;
    t.clear();
    expect(await t.fanout.run()).toBe(true);
    expect(callsByUser(t.calls).bob!.map((l) => l.sort())).toEqual([["r:alice@2", "r:carol@4"]]);
  });
});

describe("Fanout: quiet members", () => {
  /** bob's object answered that bob-phone holds his only user socket, which holds a dedupe socket here. */
  async function quietBob(inlineMax = 50) {
    const t = await setup(["bob", "carol"], inlineMax);
    t.users.answers.set("bob", { devices: ["bob-phone"], epoch: 0 });
    t.fanout.noteReceipt(["bob"], receipt("carol", 1), 0);
    await t.fanout.run();
    t.fanout.quiet.answered("bob", { devices: ["bob-phone"], epoch: 0 }, T);
    t.live.set("bob", { "bob-phone": { after: 1, order: 0 } });
    t.clear();
    return t;
  }

  it.each<[string, boolean, "text" | "system", number, boolean]>([
    ["are skipped when D1 holds the pass's messages", true, "text", 0, false],
    ["are called while D1 does not", false, "text", 0, true],
    ["are called for a system message", true, "system", 0, true],
    ["are called once the answer has lapsed", true, "text", QUIET_HINT_MS, true],
  ])("%s", async (_, inD1, kind, advance, called) => {
    const t = await quietBob();
    if (kind === "system") expectOk(t.h.conversation.addMembers(identity("alice"), ["dave"], T));
    else t.send(1);
    vi.setSystemTime(T + advance);
    expect(await t.fanout.run(Number.POSITIVE_INFINITY, inD1)).toBe(true);
    expect(t.calls.some((c) => c.userId === "bob")).toBe(called);
    expect(t.calls.some((c) => c.userId === "carol")).toBe(true);
    if (called) expect(t.calls.find((c) => c.userId === "bob")!.liveOn).toEqual({ "bob-phone": 1 });
  });

  it.each([
    ["left out of the jobs when D1 holds the messages", true, false],
    ["kept in the jobs while D1 does not", false, true],
  ])("in a queued group are %s", async (_, inD1, included) => {
    const t = await quietBob(1);
    t.send(1);
    expect(await t.fanout.run(Number.POSITIVE_INFINITY, inD1)).toBe(true);
    expect((t.jobs as FanoutJob[]).flatMap((j) => j.userIds).sort()).toEqual(included ? ["alice", "bob", "carol"] : ["alice", "carol"]);
  });
});
