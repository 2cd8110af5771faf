// One alarm per object, many deadlines: each object names its tasks (a deferred pass, a typing
// lapse, a presence debounce...) and asks for a wake-up on behalf of one; the scheduler keeps the
// single platform alarm at the earliest deadline, and when it fires runs every task, each of which
// does what is due from its own stored state and says when it next needs to run.
//
// Deadlines asked for live only in memory: after an eviction the alarm still fires (the platform
// keeps it), and then every task runs and reports its next deadline from storage, so a deadline
// is never lost, only recomputed.

/** The part of `ctx.storage` the scheduler uses. */
export interface AlarmStorage {
  getAlarm(): Promise<number | null>;
  setAlarm(scheduledTime: number): Promise<void>;
}

/** A task: does what is due at `now`; returns when it next needs to run, or null for never. */
export type AlarmTask = (now: number) => Promise<number | null> | number | null;

export class AlarmScheduler<Key extends string> {
  /** The alarm time last set (null: none; undefined: not read since this wake-up). */
  private alarmAt: number | null | undefined = undefined;
  /** Each task's next deadline, as last asked for or reported. */
  private readonly deadlines = new Map<Key, number>();

  constructor(
    private readonly storage: AlarmStorage,
    private readonly tasks: Record<Key, AlarmTask>,
  ) {}

  /**
   * Asks for the alarm at `at` or earlier on behalf of `key`. Not `async`: when the alarm is
   * already set no later than `at` (most calls, in a burst of sends), it answers in this step,
   * with no promise to wait on.
   */
  wakeAt(key: Key, at: number): Promise<void> | undefined {
    const current = this.deadlines.get(key);
    if (current === undefined || at < current) this.deadlines.set(key, at);
    if (this.alarmAt !== undefined && this.alarmAt !== null && this.alarmAt <= at) return undefined;
    return this.setAlarmBy(at);
  }

  /** The object's `alarm()`: runs every task in the order they were named, then sets the next alarm. */
  async run(now: number): Promise<void> {
    this.alarmAt = null;
    this.deadlines.clear();
    let next = Number.POSITIVE_INFINITY;
    for (const key of Object.keys(this.tasks) as Key[]) {
      const at = await this.tasks[key](now);
      if (at === null) continue;
      const current = this.deadlines.get(key);
      // A deadline asked for while the tasks ran stays if it is sooner.
      if (current === undefined || at < current) this.deadlines.set(key, at);
    }
    for (const at of this.deadlines.values()) next = Math.min(next, at);
    if (next !== Number.POSITIVE_INFINITY) await this.setAlarmBy(Math.max(next, now));
  }

  /** The deadline last asked for or reported for `key` (for tests and operators). */
  deadline(key: Key): number | undefined {
    return this.deadlines.get(key);
  }

  private async setAlarmBy(at: number): Promise<void> {
    if (this.alarmAt === undefined) {
      const stored = await this.storage.getAlarm();
      // Another call may have set the alarm while this one read it: its value is newer.
      if (this.alarmAt === undefined) this.alarmAt = stored;
    }
    if (this.alarmAt !== null && this.alarmAt <= at) return;
    this.alarmAt = at;
    await this.storage.setAlarm(at);
  }
}
