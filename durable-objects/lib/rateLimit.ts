// A token bucket per key (a user), refilled continuously.
//
// It lives in memory on purpose: an object is only evicted after ~10 s without events, and by then
// any bucket (default 20/s, burst 40) has refilled completely, so forgetting it loses nothing.

export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {}

  /** Whether `take` would allow one now; takes nothing. */
  available(key: string, now: number): boolean {
    const bucket = this.buckets.get(key);
    return !bucket || Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond) >= 1;
  }

  /** Takes one token; returns 0 when allowed, else the seconds until a token is available. */
  take(key: string, now: number): number {
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, at: now };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
    bucket.at = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    if (this.buckets.size > 10_000) this.prune(now);
    return (1 - bucket.tokens) / this.perSecond;
  }

  private prune(now: number): void {
    const full = (this.burst / this.perSecond) * 1000;
    for (const [key, b] of this.buckets) if (now - b.at > full) this.buckets.delete(key);
  }
}
