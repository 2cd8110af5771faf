// The client side of bench/counted/worker.ts: its log of D1 queries, and which of them an
// operation waited for.
//
// An operation (a request, or a socket send until its ack) runs on a quiet server, between two
// readings of the client's clock. The server stamps each query, and the span of each answer (the
// Worker's handler of a request, a conversation object's handler of a frame), with its own clock,
// the same machine's. A query that began after the operation's answer began and settled before the
// answer was given is one the answer may have waited for ("awaited"; on a quiet server nothing
// else was running); one that began during it but settled after was not waited for; one that began
// after the answer is the work the operation left behind (the outbox, the fan-out, the queues).
// The answer's span is the server's, not the client's: on a loaded host a response can reach the
// client after the deferred pass, due 25 ms after a send, has come and gone.
import type { Reachable } from "./proc.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One query or batch as the counted worker recorded it (bench/counted/worker.ts D1Entry). */
export interface D1Entry {
  origin: string;
  binding: string;
  kind: string;
  statements: number;
  writes: number;
  rowsRead: number | null;
  rowsWritten: number | null;
  rowsReturned: number | null;
  startedAt: number;
  settledAt: number | null;
  failed: boolean;
  sql: string;
}

/** When the app answered a request or a conversation frame (bench/counted/worker.ts Answer). */
export interface Answer {
  what: string;
  startedAt: number;
  settledAt: number;
}

/** What the counted worker recorded, settled, since the last reading. */
export interface D1Log {
  entries: D1Entry[];
  answers: Answer[];
}

/**
 * The queries and answers the counted worker saw settle since the last call (it forgets them),
 * and how many are still running (handed over once they settle).
 */
export async function takeD1Log(server: Reachable): Promise<D1Log & { pending: number }> {
  const res = await fetch(`${server.base}/__bench/d1`, { signal: AbortSignal.timeout(30_000) });
  if (!res.ok) throw new Error(`GET /__bench/d1: ${res.status} (is the server bench/counted/worker.ts?)`);
  return (await res.json()) as D1Log & { pending: number };
}

/**
 * Waits until no D1 query has begun for `quietMs` (at least `minMs` in all, at most `timeoutMs`)
 * and returns every entry recorded meanwhile. Throws when the server never went quiet.
 */
export async function untilD1Quiet(server: Reachable, { quietMs = 500, minMs = 0, timeoutMs = 60_000, pollMs = 100 } = {}): Promise<D1Log> {
  const start = Date.now();
  const seen: D1Log = { entries: [], answers: [] };
  let lastActivity = start;
  for (;;) {
    const { entries, answers, pending } = await takeD1Log(server);
    seen.entries.push(...entries);
    seen.answers.push(...answers);
    // A query still running counts as activity until it settles.
    if (entries.length > 0 || pending > 0) lastActivity = Date.now();
    const now = Date.now();
    if (now - lastActivity >= quietMs && now - start >= minMs) return seen;
    if (now - start > timeoutMs) throw new Error(`D1 not quiet after ${timeoutMs} ms (${seen.entries.length} queries meanwhile)`);
    await sleep(pollMs);
  }
}

/** The D1 work of one operation, split by when it ran against the operation's answer. */
export interface OperationD1 {
  /** Began after the operation began and settled before its answer arrived. */
  awaited: D1Entry[];
  /** Began during the operation, settled after its answer. */
  notAwaited: D1Entry[];
  /** Began after the answer: what the operation left behind. */
  after: D1Entry[];
  /** Began before the operation: another's, left out of the counts (a quiet server has none). */
  before: D1Entry[];
  ms: number;
}

/**
 * The span of the server's answer to an operation the client ran from `t0` to `t1`: from the first
 * answer that began in that time to the last one's end; the client's own span when none did.
 */
export function answerSpan(answers: readonly Answer[], t0: number, t1: number): [number, number] {
  const mine = answers.filter((a) => a.startedAt >= t0 && a.startedAt <= t1);
  if (mine.length === 0) return [t0, t1];
  return [Math.min(...mine.map((a) => a.startedAt)), Math.max(...mine.map((a) => a.settledAt))];
}

/** Splits `entries` by an answer given from `t0` to `t1` (the server's clock). */
export function splitByAnswer(entries: D1Entry[], t0: number, t1: number): Omit<OperationD1, "ms"> {
  const out: Omit<OperationD1, "ms"> = { awaited: [], notAwaited: [], after: [], before: [] };
  for (const e of entries) {
    if (e.startedAt < t0) out.before.push(e);
    else if (e.startedAt > t1) out.after.push(e);
    else if (e.settledAt !== null && e.settledAt <= t1) out.awaited.push(e);
    else out.notAwaited.push(e);
  }
  return out;
}

/**
 * Runs `op` on a quiet server and returns its D1 work: what its answer waited for, and what it
 * left behind until the server was quiet again (`settleMs` at least, so that a deferred pass
 * due BATCH_DELAY_MS later has run).
 */
export async function measureOperation(server: Reachable, op: () => Promise<unknown>, { settleMs = 400 } = {}): Promise<OperationD1> {
  await untilD1Quiet(server, { quietMs: 300 });
  const t0 = Date.now();
  const p0 = performance.now();
  await op();
  const ms = performance.now() - p0;
  const t1 = Date.now();
  const { entries, answers } = await untilD1Quiet(server, { quietMs: 400, minMs: settleMs });
  return { ...splitByAnswer(entries, ...answerSpan(answers, t0, t1)), ms };
}

/** Queries (statements: a batch counts its statements), writes, rows read and written, of `entries`. */
export interface D1Totals {
  calls: number;
  statements: number;
  writes: number;
  rowsRead: number;
  rowsWritten: number;
  /** Calls whose rows read D1 did not report (`raw`). */
  unreported: number;
  /** Milliseconds from each call's start to its settling, summed (the server's clock). */
  ms: number;
}

export function totals(entries: readonly D1Entry[]): D1Totals {
  const t: D1Totals = { calls: 0, statements: 0, writes: 0, rowsRead: 0, rowsWritten: 0, unreported: 0, ms: 0 };
  for (const e of entries) {
    t.calls++;
    t.statements += e.statements;
    t.writes += e.writes;
    t.rowsRead += e.rowsRead ?? 0;
    t.rowsWritten += e.rowsWritten ?? 0;
    if (e.rowsRead === null) t.unreported++;
    if (e.settledAt !== null) t.ms += e.settledAt - e.startedAt;
  }
  return t;
}

/** `entries` counted per binding (one D1 database, or shard, each). */
export function byBinding(entries: readonly D1Entry[]): Record<string, D1Totals> {
  const groups = new Map<string, D1Entry[]>();
  for (const e of entries) groups.set(e.binding, [...(groups.get(e.binding) ?? []), e]);
  return Object.fromEntries([...groups].map(([binding, es]) => [binding, totals(es)]));
}

/** "origin kind: sql" of each entry, counted, for the report (what the counts are made of). */
export function describe(entries: readonly D1Entry[]): string[] {
  const counts = new Map<string, number>();
  for (const e of entries) {
    const key = `${e.origin} ${e.kind}${e.statements > 1 ? ` of ${e.statements}` : ""}: ${e.sql.slice(0, 90)}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([key, n]) => (n > 1 ? `${n}x ${key}` : key));
}
