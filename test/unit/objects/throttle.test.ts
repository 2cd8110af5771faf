// ThrottleDO's rules: a block that doubles per failure past the free ones, and token buckets.
import { describe, expect, it } from "vitest";
import { NO_FAILURES, addFailure, blockedFor, takeToken } from "../../../durable-objects/throttle/throttle";

const rule = { free: 2, baseSeconds: 1, maxSeconds: 8, forgetMs: 60_000 };

describe("failures", () => {
  it("blocks after the free ones, doubling up to the most, and forgets after a quiet while", () => {
    let state = NO_FAILURES;
    const blocks: number[] = [];
    for (let i = 0; i < 7; i++) {
      state = addFailure(state, rule, 1000 + i);
      blocks.push(blockedFor(state, 1000 + i));
    }
    expect(blocks).toEqual([0, 0, 1, 2, 4, 8, 8]);
    const later = 1006 + 60_001;
    expect(blockedFor(state, later)).toBe(0);
    expect(blockedFor(addFailure(state, rule, later), later)).toBe(0);
  });
});

describe("buckets", () => {
  it("gives a burst, then one token per 1/perHour, with the wait until the next", () => {
    const bucket = { perHour: 3600, burst: 2 };
    let state = takeToken(null, bucket, 0);
    expect(state.retryAfterSeconds).toBe(0);
    state = takeToken(state.state, bucket, 0);
    expect(state.retryAfterSeconds).toBe(0);
    state = takeToken(state.state, bucket, 0);
    expect(state.retryAfterSeconds).toBe(1);
    expect(takeToken(state.state, bucket, 1000).retryAfterSeconds).toBe(0);
  });
});
