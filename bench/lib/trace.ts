// `npm run bench -- --only S1 --trace`: a timeline of the conversation object's work during each
// S1 rate (bench/traced/worker.ts records it in the app), set beside the stalls the receivers saw.
//
// For each stall it answers two questions. Did its messages wait before the conversation object
// took them off the socket (its thread was busy with something else: under `wrangler dev` one
// thread runs the objects, local D1 and the users' objects), or were they late after it? And what
// was running when the first of them was sent: a deferred pass's D1 batch or fan-out, or neither?
// The trace costs a regular expression and an array entry per frame; like --profile and --gc, these
// runs explain the stalls, they are not the numbers of the table. S1 has one conversation, so its
// passes run one at a time and each start pairs with the next end.
//
// Beside the app's own record, the runtime's main thread (the one running every isolate; its
// thread id is the process's) is read every SCHED_POLL_MS from /proc/<pid>/task/<pid>/schedstat
// (time run and time waiting for a CPU, in ns). For each stall it tells whether that thread was
// running all along (busy with work the trace does not name: another object, local D1, a GC),
// waiting for a CPU (another process had it), or neither (idle, or its virtual CPU was not
// running). Where `perf` is installed, the thread is also sampled with its call stacks
// (bench/lib/perf.ts), which names the work: a major or minor GC, SQLite, or other.
import { readFileSync } from "node:fs";
import { majorGcPauses, perfInstalled, sampledBetween, threadSampler, type Sample } from "./perf.ts";
import { percentile, STALL_MS, type Stall } from "./scenarios.ts";

/** An event of bench/traced/worker.ts: [kind, at (ms), detail (a frame's send time for "took")]. */
type TraceEvent = [kind: "d1" | "d1-done" | "fanout" | "fanout-done" | "took" | "deliver", at: number, detail: number];

/** A reading of the main thread's schedstat: ran and waited in ns so far, at a wall-clock time (ms). */
interface SchedReading {
  at: number;
  ran: number;
  waited: number;
}

export interface Trace {
  events: TraceEvent[];
  /** The main thread's schedstat over time. */
  sched: SchedReading[];
  /** From perf, or null without it. */
  perf: Sample[] | null;
}

/** How often the runtime's threads' scheduler statistics are read. */
const SCHED_POLL_MS = 5;

/** The main thread of `pid`: { ran, waited } in ns so far, or null once the process is gone. */
function schedstat(pid: number | null): { ran: number; waited: number } | null {
  if (pid === null) return null;
  try {
    const [ran = 0, waited = 0] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, "utf8").split(" ").map(Number);
    return { ran, waited };
  } catch {
    return null;
  }
}

/** Hooks around one S1 rate: empties the trace at the start and collects it at the end. */
export function traceHooks(base: string, pid: number | null): Trace & { start(): Promise<void>; stop(): Promise<void> } {
  let timer: NodeJS.Timeout | undefined;
  const sampler = perfInstalled() ? threadSampler(pid) : null;
  const take = async (): Promise<TraceEvent[]> => {
    const res = await fetch(`${base}/__bench/trace`, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new Error(`GET /__bench/trace: ${res.status} (is the app running bench/traced/worker.ts?)`);
    return (await res.json()) as TraceEvent[];
  };
  const hooks: Trace & { start(): Promise<void>; stop(): Promise<void> } = {
    events: [],
    sched: [],
    perf: null,
    async start() {
      await sampler?.start();
      await take();
      const poll = () => {
        const now = schedstat(pid);
        if (now) hooks.sched.push({ at: performance.timeOrigin + performance.now(), ...now });
      };
      poll();
      timer = setInterval(poll, SCHED_POLL_MS);
    },
    async stop() {
      clearInterval(timer);
      hooks.events = await take();
      if (sampler) {
        await sampler.stop();
        hooks.perf = sampler.samples;
      }
    },
  };
  return hooks;
}

/** Pairs each start event with the next end event: [{ from, to }]. */
function spans(events: TraceEvent[], start: TraceEvent[0], end: TraceEvent[0]): { from: number; to: number }[] {
  const out: { from: number; to: number }[] = [];
  let open: number | null = null;
  for (const [kind, at] of events) {
    if (kind === start) open = at;
    else if (kind === end && open !== null) {
      out.push({ from: open, to: at });
      open = null;
    }
  }
  return out;
}

const ms = (xs: number[], p: number): string => {
  const sorted = [...xs].sort((a, b) => a - b);
  const v = percentile(sorted, p);
  return v === null ? "?" : String(Math.round(v) + 0);
};

/**
 * What the runtime's main thread did between two times: ms run, ms waiting for a CPU, and the
 * span the readings around it cover. Null without readings on both sides.
 */
function threadBetween(sched: SchedReading[], from: number, to: number): { ranMs: number; waitedMs: number; spanMs: number } | null {
  const before = sched.findLast((s) => s.at <= from) ?? sched[0];
  const after = sched.find((s) => s.at >= to) ?? sched.at(-1);
  if (!before || !after || after.at <= before.at) return null;
  return { ranMs: (after.ran - before.ran) / 1e6, waitedMs: (after.waited - before.waited) / 1e6, spanMs: after.at - before.at };
}

/** Lines for one traced S1 rate. */
export function traceReport(label: string, { events, sched, perf }: Trace, result: { stalls?: Stall[]; windowStart: number; p99?: number | null }): string[] {
  const took = events.filter(([kind]) => kind === "took").map(([, at, sentAt]) => ({ at, sentAt, wait: at - sentAt }));
  const d1 = spans(events, "d1", "d1-done");
  const fanout = spans(events, "fanout", "fanout-done");
  const delivers = events.filter(([kind]) => kind === "deliver").map(([, at]) => at);
  const stalls = (result.stalls ?? []).filter((st) => st.at >= result.windowStart);
  const rel = (t: number) => `${((t - result.windowStart) / 1000).toFixed(2)} s`;
  const running = (list: { from: number; to: number }[], t: number) => list.find((s) => s.from <= t + 2 && s.to >= t);

  let waitedBefore = 0;
  let inD1 = 0;
  let inFanout = 0;
  const lines = stalls.map((st) => {
    const mine = took.filter((m) => m.sentAt >= st.at - 0.5 && m.sentAt <= st.lastSentAt + 0.5);
    const wait = mine.length ? Math.max(...mine.map((m) => m.wait)) : null;
    if (wait !== null && wait >= st.maxMs / 2) waitedBefore++;
    const d = running(d1, st.at);
    const f = running(fanout, st.at);
    if (d) inD1++;
    if (f) inFanout++;
    const thread = threadBetween(sched, st.at, st.at + st.maxMs);
    const what = [
      thread
        ? `its thread ran ${thread.ranMs.toFixed(0)} ms and waited for a CPU ${thread.waitedMs.toFixed(0)} ms of the ${thread.spanMs.toFixed(0)} ms around it`
        : null,
      perf ? `its thread sampled: ${describeSampled(sampledBetween(perf, st.at, st.at + st.maxMs))}` : null,
      d ? `in a D1 batch of ${d.to - d.from} ms` : null,
      f ? `in a fan-out of ${f.to - f.from} ms` : null,
      `${delivers.filter((t) => t >= st.at && t <= st.at + st.maxMs).length} user-object calls meanwhile`,
    ].filter(Boolean);
    return `    ${rel(st.at)} ${st.messages} msgs, max ${st.maxMs.toFixed(0)} ms; waited ${wait === null ? "?" : wait.toFixed(0)} ms before the object took them; ${what.join(", ")}`;
  });
  return [
    `trace ${label}: p99 ${result.p99?.toFixed(1)} ms; ${took.length} frames taken, wait before taken p50 ${ms(took.map((m) => m.wait), 50)} / p99 ${ms(took.map((m) => m.wait), 99)} ms`,
    `  deferred passes: ${d1.length} D1 batches, ${ms(d1.map((s) => s.to - s.from), 50)} / ${ms(d1.map((s) => s.to - s.from), 99)} ms (p50 / p99); ` +
      `${fanout.length} fan-outs, ${ms(fanout.map((s) => s.to - s.from), 50)} / ${ms(fanout.map((s) => s.to - s.from), 99)} ms; ${delivers.length} user-object calls`,
    perf ? perfSummary(perf, stalls) : "  (perf is not installed: no samples of the thread)",
    `  stalls (messages >= ${STALL_MS} ms late): ${stalls.length}; ${waitedBefore} waited at least half their latency before the object took them; ` +
      `${inD1} began during a D1 batch, ${inFanout} during a fan-out`,
    ...lines,
  ];
}

/** "major GC 44 ms, other 3 ms", largest first. */
function describeSampled(byWhat: Partial<Record<string, number>>): string {
  const parts = Object.entries(byWhat)
    .filter((e): e is [string, number] => e[1] !== undefined)
    .sort((a, b) => b[1] - a[1]);
  return parts.length ? parts.map(([what, ms]) => `${what} ${ms.toFixed(0)} ms`).join(", ") : "no samples";
}

/** How many major GC pauses the samples show, how long, and how many stalls held one. */
function perfSummary(perf: Sample[], stalls: Stall[]): string {
  const pauses = majorGcPauses(perf);
  const lengths = pauses.map((p) => p.ms).sort((a, b) => a - b);
  const held = stalls.filter((st) => pauses.some((p) => p.to >= st.at && p.from <= st.at + st.maxMs)).length;
  const overall = describeSampled(sampledBetween(perf, -Infinity, Infinity));
  return (
    `  thread sampled by perf: ${overall}; ${pauses.length} major GC pauses of 5 ms or more, ` +
    `${lengths.length ? `${lengths[0]?.toFixed(0)}-${lengths.at(-1)?.toFixed(0)} ms` : "none"}; ${held} of the stalls held one`
  );
}
