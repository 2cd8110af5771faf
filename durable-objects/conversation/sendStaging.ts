// Group commit for socket sends. Each step of an object that writes ends in its own SQLite commit,
// which costs more than the insert itself (about 60 µs against 10 here): a burst of sends stored
// in one step shares one commit.
//
// A send that arrives within GROUP_COMMIT_BURST_MS of the one before it (by default, in the same millisecond)
// is staged: a burst. Any other is stored at once, with whatever is staged before it, so a
// conversation at a human pace or a steady rate never waits. The staged sends are stored, in the
// order they arrived, when a send arrives after a longer gap, when GROUP_COMMIT_MAX are staged, when the
// runtime has nothing else to deliver (a 0 ms timer, which a saturated runtime may not fire; see
// DeferredPass), and before any other frame, call or event reaches the conversation (the object
// calls `storeStaged` first in each), so none sees it without them. Each is acked and broadcast
// in the step that stores it, so the output gate holds those frames until the commit is durable:
// a send is never acked unstored, and one lost with its object (an eviction, a reset) was never
// acked, so its device sends it again.
import type { Identity } from "../../kernel/identity";
import type { Settings } from "../../kernel/settings";
import type { SendRequest } from "./conversation";

/** A socket send received and checked, waiting to be stored with the others. */
export interface StagedSend {
  ws: WebSocket;
  identity: Identity;
  frame: SendRequest;
  /** When it arrived: its createdAt and its rate limit's clock. */
  now: number;
}

export interface Timers {
  setTimeout(run: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const runtimeTimers: Timers = {
  setTimeout: (run, ms) => setTimeout(run, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export class SendStaging {
  private staged: StagedSend[] = [];
  private timer: unknown = null;
  /** When the latest send arrived (ms): the next one, if close behind, is part of a burst. */
  private lastSendAt = 0;

  /**
   * `store` stores, acks and broadcasts a batch, in arrival order, in one synchronous step. The
   * settings are read at each send (a test changes them on a live object).
   */
  constructor(
    private readonly settings: Pick<Settings, "groupCommitBurstMs" | "groupCommitMax">,
    private readonly store: (batch: StagedSend[]) => void,
    private readonly timers: Timers = runtimeTimers,
  ) {}

  /** Stores a socket send now, or stages it to be stored with the sends that arrive with it. */
  stage(send: StagedSend): void {
    const burst = send.now - this.lastSendAt < this.settings.groupCommitBurstMs;
    this.lastSendAt = send.now;
    this.staged.push(send);
    if (!burst || this.staged.length >= this.settings.groupCommitMax) {
      this.storeStaged();
      return;
    }
    this.timer ??= this.timers.setTimeout(() => {
      this.timer = null;
      this.storeStaged();
    }, 0);
  }

  /** Stores every staged send, in arrival order, in this one step. */
  storeStaged(): void {
    if (this.staged.length === 0) return;
    const batch = this.staged;
    this.staged = [];
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.store(batch);
  }

  get size(): number {
    return this.staged.length;
  }
}
