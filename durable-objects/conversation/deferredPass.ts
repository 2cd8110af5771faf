// The work a send leaves for later, off the send path: the outbox to D1, then the fan-out to the
// members' user objects, with a retry on its own backoff for each.
//
// A pass is asked for BATCH_DELAY_MS after the first write not yet in a pass, so that one pass
// carries many messages: one D1 batch and one call per member for all of them. Passes are at
// least that far apart: run back to back, a pass as fast as its awaits took one message each and
// cost several times the CPU.
//
// Neither the alarm nor a timer can be relied on to start it under load: with a steady stream of
// socket messages, workerd fired neither until the stream stopped (so user sockets, pushes and D1
// lagged seconds behind). So a timer starts the pass when the object is quiet, and a write that
// finds it due starts it itself. The alarm is only the durable backstop, for an object evicted
// with work pending.
import type { Settings } from "../../kernel/settings";
import type { ConversationStore } from "./conversationStore";
import { backoffDelay, type Outbox } from "./d1Outbox";
import type { Fanout } from "./fanout";
import { runtimeTimers, type Timers } from "./sendStaging";

/** When the alarm runs the pass if the in-memory timer did not (an eviction). */
export const DEFERRED_BACKSTOP_MS = 5_000;

export interface DeferredPassDeps {
  store: ConversationStore;
  outbox: Outbox;
  fanout: Fanout;
  /** Read at each write (a test changes it on a live object). */
  settings: Pick<Settings, "batchDelayMs">;
  /** Asks for the object's alarm at `at` or earlier (AlarmScheduler.wakeAt for this task). */
  wakeAt(at: number): Promise<void> | undefined;
  now(): number;
  timers?: Timers;
}

export class DeferredPass {
  /**
   * While D1 or the fan-out is failing, its retries wait for their own backoff however busy we
   * are; the other goes on meanwhile.
   */
  private d1RetryAt = 0;
  private fanoutRetryAt = 0;
  /** When the oldest write not yet in a pass asked for one, and the timer set for it. */
  private deferredSince: number | null = null;
  private timer: unknown = null;
  /** The pass in progress: the timer, a write and the alarm may all ask for one. */
  private running: Promise<void> | null = null;
  private readonly timers: Timers;

  constructor(private readonly deps: DeferredPassDeps) {
    this.timers = deps.timers ?? runtimeTimers;
  }

  /** A write asks for a pass: soon, with the writes that follow it. */
  defer(): void {
    const now = this.deps.now();
    void this.deps.wakeAt(now + DEFERRED_BACKSTOP_MS);
    this.deferredSince ??= now;
    this.startWhenDue(now);
  }

  /** Runs a pass now (or joins the one running). */
  run(): Promise<void> {
    if (this.running) return this.running;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.deferredSince = null;
    this.running = this.pass().finally(() => {
      this.running = null;
      // Writes made during the pass wait for the next one, due BATCH_DELAY_MS after the first.
      this.startWhenDue(this.deps.now());
    });
    return this.running;
  }

  /** The earliest retry still ahead, or null: the alarm task's next deadline. */
  nextRetry(now: number): number | null {
    const retries = [this.d1RetryAt, this.fanoutRetryAt].filter((at) => at > now);
    return retries.length > 0 ? Math.min(...retries) : null;
  }

  /**
   * Writes the outbox to D1 before a call returns (membership, a read over REST), so the caller's
   * next GET /conversations shows it. While D1 is failing the alarm retries with backoff; calls do
   * not add their own attempts.
   */
  async flushNow(): Promise<void> {
    if (this.deps.now() < this.d1RetryAt) return;
    const flushed = await this.deps.outbox.flush();
    this.deps.store.keepRecentFor("d1", flushed);
    if (flushed) return;
    this.d1RetryAt = this.deps.now() + backoffDelay(this.deps.outbox.failures);
    await this.wakeForRetries();
  }

  /**
   * flushNow, then the fan-out of what the call appended (a membership change, a group setting),
   * so that the members' objects, whose inbox index `GET /messages?since=` reads, have it when the
   * call returns. While the fan-out is failing its retries keep their backoff.
   */
  async settleNow(): Promise<void> {
    const target = this.deps.store.meta?.lastSeq ?? 0;
    await this.flushNow();
    // A pass already running may have started before this call's write: the next one takes it.
    for (let i = 0; i < 2 && this.deps.store.fanoutSeq() < target && this.deps.now() >= this.fanoutRetryAt; i++) await this.run();
  }

  /** For operators and tests: a failed step is retried by the next pass, not after its backoff. */
  retryNow(): void {
    this.d1RetryAt = 0;
    this.fanoutRetryAt = 0;
  }

  private startWhenDue(now: number): void {
    if (this.running || this.deferredSince === null) return;
    const due = this.deferredSince + this.deps.settings.batchDelayMs;
    if (now >= due) {
      void this.run();
      return;
    }
    this.timer ??= this.timers.setTimeout(() => {
      this.timer = null;
      this.startWhenDue(this.deps.now());
    }, due - now);
  }

  /**
   * D1 first, then the members' objects, and only for messages D1 now holds: a device told of a
   * message (user socket, push) then finds it in GET /conversations. Each step takes what is there
   * when it starts; what arrives meanwhile goes in the next pass, as one batch.
   *
   * While D1 is failing, or waiting out its backoff, the fan-out goes on regardless (messages
   * flow, D1 catches up later): waiting for D1's retry held every member's other devices and
   * pushes back by up to BACKOFF_MAX_MS.
   */
  private async pass(): Promise<void> {
    const { store, outbox, fanout } = this.deps;
    const started = this.deps.now();
    const written = store.meta?.lastSeq ?? 0;
    const d1Due = started >= this.d1RetryAt;
    const flushed = d1Due && (await outbox.flush(false));
    if (d1Due && !flushed) this.d1RetryAt = this.deps.now() + backoffDelay(outbox.failures);
    store.keepRecentFor("d1", flushed);
    const fanoutDue = started >= this.fanoutRetryAt;
    const fannedOut = fanoutDue && (await fanout.run(flushed ? written : Number.POSITIVE_INFINITY, flushed));
    if (fanoutDue && !fannedOut) this.fanoutRetryAt = this.deps.now() + backoffDelay(fanout.failures);
    store.keepRecentFor("fanout", fannedOut);
    await this.wakeForRetries();
  }

  /** The alarm at the earliest retry still ahead, so a failed step is retried with no new writes. */
  private async wakeForRetries(): Promise<void> {
    const next = this.nextRetry(this.deps.now());
    if (next !== null) await this.deps.wakeAt(next);
  }
}
