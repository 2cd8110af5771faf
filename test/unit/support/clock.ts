// A clock the tests move by hand: the modules take `now` as an argument, so no test sleeps.

export class Clock {
  constructor(private current = 1_800_000_000_000) {}

  now(): number {
    return this.current;
  }

  /** Moves the clock forward by `ms` and returns the new time. */
  advance(ms: number): number {
    this.current += ms;
    return this.current;
  }
}
