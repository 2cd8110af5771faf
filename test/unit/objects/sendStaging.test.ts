import { describe, expect, it } from "vitest";
import { SendStaging, type StagedSend, type Timers } from "../../../durable-objects/conversation/sendStaging";

/** Timers that run only when the test says so. */
function manualTimers() {
  const pending = new Map<number, () => void>();
  let next = 1;
  const timers: Timers = {
    setTimeout: (run) => (pending.set(next, run), next++),
    clearTimeout: (handle) => void pending.delete(handle as number),
  };
  return {
    timers,
    pending: () => pending.size,
    fire: () => {
      const runs = [...pending.values()];
      pending.clear();
      for (const run of runs) run();
    },
  };
}

const send = (n: number, now: number): StagedSend => ({
  ws: {} as WebSocket,
  identity: { userId: "u", deviceId: "d" },
  frame: { clientMsgId: `m${n}`, body: `body ${n}` },
  now,
});

function staging(limits = { groupCommitBurstMs: 1, groupCommitMax: 3 }) {
  const stored: string[][] = [];
  const clock = manualTimers();
  const stage = new SendStaging(limits, (batch) => stored.push(batch.map((s) => s.frame.clientMsgId)), clock.timers);
  return { stage, stored, clock };
}

describe("SendStaging (group commit of socket sends)", () => {
  it("stores a send that is not part of a burst at once, alone", () => {
    const { stage, stored, clock } = staging();
    stage.stage(send(1, 1_000));
    stage.stage(send(2, 1_050));
    expect(stored).toEqual([["m1"], ["m2"]]);
    expect(clock.pending()).toBe(0);
  });

  it("stages a burst and stores it, in arrival order, in one step when the runtime is idle", () => {
    const { stage, stored, clock } = staging({ groupCommitBurstMs: 1, groupCommitMax: 10 });
    stage.stage(send(1, 1_000));
    stage.stage(send(2, 1_000));
    stage.stage(send(3, 1_000));
    expect(stored).toEqual([["m1"]]);
    expect(stage.size).toBe(2);
    clock.fire();
    expect(stored).toEqual([["m1"], ["m2", "m3"]]);
  });

  it("stores a full batch at once, and what is staged before anything else reaches the conversation", () => {
    const { stage, stored, clock } = staging({ groupCommitBurstMs: 1, groupCommitMax: 2 });
    stage.stage(send(1, 1_000));
    stage.stage(send(2, 1_000));
    stage.stage(send(3, 1_000));
    expect(stored).toEqual([["m1"], ["m2", "m3"]]);
    stage.stage(send(4, 1_000));
    stage.storeStaged();
    expect(stored).toEqual([["m1"], ["m2", "m3"], ["m4"]]);
    // The idle timer was cleared with the batch: firing it stores nothing again.
    clock.fire();
    expect(stored).toHaveLength(3);
  });

  it("stores the burst staged before a send that arrives after a gap, together with it", () => {
    const { stage, stored } = staging({ groupCommitBurstMs: 1, groupCommitMax: 10 });
    stage.stage(send(1, 1_000));
    stage.stage(send(2, 1_000));
    stage.stage(send(3, 1_020));
    expect(stored).toEqual([["m1"], ["m2", "m3"]]);
  });
});
