import { describe, expect, it } from "vitest";
import { AlarmScheduler, type AlarmStorage } from "../../../durable-objects/lib/alarms";

/** The platform's single alarm, with a count of the writes made to it. */
function alarmStorage(initial: number | null = null) {
  const storage = { alarm: initial, sets: 0 };
  const api: AlarmStorage = {
    getAlarm: async () => storage.alarm,
    setAlarm: async (at) => {
      storage.alarm = at;
      storage.sets++;
    },
  };
  return { storage, api };
}

describe("AlarmScheduler", () => {
  it("keeps the one alarm at the earliest deadline asked for, writing only when it moves earlier", async () => {
    const { storage, api } = alarmStorage();
    const alarms = new AlarmScheduler(api, { pass: () => null, typing: () => null });
    await alarms.wakeAt("pass", 5_000);
    await alarms.wakeAt("typing", 6_000);
    expect(storage.alarm).toBe(5_000);
    await alarms.wakeAt("typing", 2_000);
    expect(storage.alarm).toBe(2_000);
    expect(storage.sets).toBe(2);
    // Already set no later: answered in the same step, with nothing to wait for.
    expect(alarms.wakeAt("pass", 9_000)).toBeUndefined();
    expect(storage.sets).toBe(2);
  });

  it("keeps the earliest deadline when several are asked for at once, before the stored alarm is read", async () => {
    const { storage, api } = alarmStorage();
    // The stored alarm is read asynchronously, as it was when asked: calls made meanwhile
    // interleave with the read.
    const slow: AlarmStorage = {
      getAlarm: () => {
        const stored = storage.alarm;
        return new Promise((resolve) => setTimeout(() => resolve(stored), 1));
      },
      setAlarm: api.setAlarm,
    };
    const alarms = new AlarmScheduler(slow, { presence: () => null, keepalive: () => null });
    await Promise.all([alarms.wakeAt("presence", 600), alarms.wakeAt("keepalive", 6_000)]);
    expect(storage.alarm).toBe(600);
    const other = new AlarmScheduler(slow, { presence: () => null, keepalive: () => null });
    storage.alarm = null;
    await Promise.all([other.wakeAt("keepalive", 6_000), other.wakeAt("presence", 600)]);
    expect(storage.alarm).toBe(600);
  });

  it("reads the stored alarm once after a wake-up instead of assuming none", async () => {
    const { storage, api } = alarmStorage(1_000);
    const alarms = new AlarmScheduler(api, { pass: () => null });
    await alarms.wakeAt("pass", 3_000);
    expect(storage.alarm).toBe(1_000);
    expect(storage.sets).toBe(0);
  });

  it("runs every task when the alarm fires, in order, and sets the next alarm at the earliest deadline they report", async () => {
    const { storage, api } = alarmStorage(1_000);
    const ran: string[] = [];
    const alarms = new AlarmScheduler(api, {
      keepalive: (now) => (ran.push(`keepalive@${now}`), now + 60_000),
      presence: (now) => (ran.push(`presence@${now}`), now + 3_000),
      prune: async () => (ran.push("prune"), null),
    });
    await alarms.run(1_000);
    expect(ran).toEqual(["keepalive@1000", "presence@1000", "prune"]);
    expect(storage.alarm).toBe(4_000);
    expect(alarms.deadline("presence")).toBe(4_000);
    expect(alarms.deadline("prune")).toBeUndefined();
  });

  it("sets no alarm when no task has more to do, and keeps a deadline asked for while the tasks ran", async () => {
    const { storage, api } = alarmStorage(1_000);
    let alarms: AlarmScheduler<"pass" | "typing">;
    alarms = new AlarmScheduler(api, {
      pass: () => {
        void alarms.wakeAt("typing", 2_500);
        return null;
      },
      typing: () => null,
    });
    await alarms.run(1_000);
    expect(storage.alarm).toBe(2_500);

    const idle = alarmStorage(1_000);
    const quiet = new AlarmScheduler(idle.api, { pass: () => null });
    await quiet.run(1_000);
    expect(idle.storage.sets).toBe(0);
  });

  it("never sets the alarm in the past: a deadline already due fires as soon as possible", async () => {
    const { storage, api } = alarmStorage(1_000);
    const alarms = new AlarmScheduler(api, { retry: () => 500 });
    await alarms.run(1_000);
    expect(storage.alarm).toBe(1_000);
  });
});
