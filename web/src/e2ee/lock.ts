// One writer at a time. The app takes a Web Lock (navigator.locks), shared by every tab of the
// browser profile; where there is none (an old browser, a test), this in-page queue stands in,
// which at least keeps one page's own calls from interleaving.

export type Exclusive = <T>(name: string, fn: () => Promise<T>) => Promise<T>;

/** Runs calls with the same name one after another, in the order they were made. */
export function inPageLock(): Exclusive {
  const tails = new Map<string, Promise<unknown>>();
  return <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const before = tails.get(name) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const tail = run.catch(() => undefined);
    tails.set(name, tail);
    void tail.then(() => {
      if (tails.get(name) === tail) tails.delete(name);
    });
    return run;
  };
}

/** navigator.locks when the browser has it (every tab of the profile), else an in-page queue. */
export function browserLock(locks: LockManager | undefined): Exclusive {
  if (!locks) return inPageLock();
  return <T>(name: string, fn: () => Promise<T>) => locks.request(name, { mode: "exclusive" }, fn) as Promise<T>;
}
