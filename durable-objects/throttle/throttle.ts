// The rules of ThrottleDO, on one key's state: failures that block for a growing time (logins),
// and a token bucket (registrations, group creation). Plain functions of the state and the
// clock, so test/unit runs them without a runtime.

/** Failures so far and until when the key is blocked. */
export interface Failures {
  failures: number;
  lastFailureAt: number;
  blockedUntil: number;
}

export interface FailureRule {
  /** Failures allowed before the first block. */
  free: number;
  /** The first block; each failure after it doubles the block, up to `maxSeconds`. */
  baseSeconds: number;
  maxSeconds: number;
  /** A key with no failure for this long starts again from zero. */
  forgetMs: number;
}

export const NO_FAILURES: Failures = { failures: 0, lastFailureAt: 0, blockedUntil: 0 };

/** Seconds until the key may try again; 0 when it may now. */
export const blockedFor = (state: Failures, now: number): number => Math.max(0, Math.ceil((state.blockedUntil - now) / 1000));

/** The state after one more failure at `now`. */
export function addFailure(state: Failures, rule: FailureRule, now: number): Failures {
  const failures = (now - state.lastFailureAt > rule.forgetMs ? 0 : state.failures) + 1;
  const over = failures - rule.free;
  const blockSeconds = over > 0 ? Math.min(rule.maxSeconds, rule.baseSeconds * 2 ** Math.min(over - 1, 30)) : 0;
  return { failures, lastFailureAt: now, blockedUntil: over > 0 ? now + blockSeconds * 1000 : state.blockedUntil };
}

/** A bucket of `burst` tokens refilled at `perHour`. */
export interface Bucket {
  tokens: number;
  at: number;
}

export interface BucketRule {
  perHour: number;
  burst: number;
}

/** Takes a token: the new state and 0, or the unchanged state and the seconds until one is there. */
export function takeToken(state: Bucket | null, rule: BucketRule, now: number): { state: Bucket; retryAfterSeconds: number } {
  const perMs = rule.perHour / 3_600_000;
  const tokens = Math.min(rule.burst, state ? state.tokens + (now - state.at) * perMs : rule.burst);
  if (tokens >= 1) return { state: { tokens: tokens - 1, at: now }, retryAfterSeconds: 0 };
  return { state: { tokens, at: now }, retryAfterSeconds: Math.max(1, Math.ceil((1 - tokens) / perMs / 1000)) };
}
