// One small object per throttled key (an account's logins, an address's logins or registrations,
// a user's group creations): the Worker runs in many isolates, so a limit must live in one place
// that all of them reach. The key is the object's name; its state is one storage value, read and
// written only when a limit is checked, a failure counted or a token taken (./throttle.ts).
import { DurableObject } from "cloudflare:workers";
import { NO_FAILURES, addFailure, blockedFor, takeToken, type Bucket, type BucketRule, type FailureRule, type Failures } from "./throttle";

export class ThrottleDO extends DurableObject<Env> {
  /** Seconds until this key may try again (0: now). */
  async blocked(now = Date.now()): Promise<number> {
    return blockedFor((await this.ctx.storage.get<Failures>("failures")) ?? NO_FAILURES, now);
  }

  /** Counts a failure; returns the seconds the key is now blocked for (0: not blocked). */
  async failed(rule: FailureRule, now = Date.now()): Promise<number> {
    const state = addFailure((await this.ctx.storage.get<Failures>("failures")) ?? NO_FAILURES, rule, now);
    await this.ctx.storage.put("failures", state);
    return blockedFor(state, now);
  }

  /** A success (the right password): failures are forgotten. */
  async succeeded(): Promise<void> {
    await this.ctx.storage.delete("failures");
  }

  /** Takes a token of the key's bucket: 0, or the seconds until one is there. */
  async take(rule: BucketRule, now = Date.now()): Promise<number> {
    const { state, retryAfterSeconds } = takeToken((await this.ctx.storage.get<Bucket>("bucket")) ?? null, rule, now);
    await this.ctx.storage.put("bucket", state);
    return retryAfterSeconds;
  }
}
