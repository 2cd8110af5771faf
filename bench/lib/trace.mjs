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
// Beside the app's own record, the runtime process's threads are read every SCHED_POLL_MS from
// /proc/<pid>/task/*/schedstat (time run and time waiting for a CPU, in ns). For each stall it
// tells whether the runtime's busiest thread (the one running the isolate) was running all along
// (busy with work the trace does not name: another object, local D1, a GC), waiting for a CPU
// (another process had it), or neither (idle, or its virtual CPU was not running). Where `perf`
// is installed, that thread is also sampled with its call stacks (bench/lib/perf.mjs), which
// names the work: a major or minor GC, SQLite, or other.
import { readdirSync, readFileSync } from "node:fs";
import { majorGcPauses, perfInstalled, sampledBetween, threadSampler } from "./perf.mjs";
import { percentile, STALL_MS } from "./scenarios.mjs";

/** How often the runtime's threads' scheduler statistics are read. */
const SCHED_POLL_MS = 5;

/** Per thread of `pid`: [ran ns, waited ns] now. */
function schedstat(pid) {
  const out = new Map();
  let tasks = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      const [ran, waited] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ").map(Number);
      out.set(tid, [ran, waited]);
    } catch {
      // the thread exited
    }
  }
  return out;
}

/** Hooks around one S1 rate: empties the trace at the start and collects it at the end. */
export function traceHooks(base, pid) {
  let timer = null;
  // The runtime's main thread has the process's id.
  const sampler = perfInstalled() ? threadSampler(pid) : null;
  const take = async () => {
    const res = await fetch(`${base}/__bench/trace`, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new Error(`GET /__bench/trace: ${res.status} (is the app running bench/traced/worker.ts?)`);
    return res.json();
  };
  const hooks = {
    events: [],
    /** [{ at, threads: Map(tid -> [ran ns, waited ns]) }] */
    sched: [],
    /** [{ at, what }] from perf, or null without it. */
    perf: null,
    async start() {
      await sampler?.start();
      await take();
      const poll = () => hooks.sched.push({ at: performance.timeOrigin + performance.now(), threads: schedstat(pid) });
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
function spans(events, start, end) {
  const out = [];
  let open = null;
  for (const [kind, at] of events) {
    if (kind === start) open = at;
    else if (kind === end && open !== null) {
      out.push({ from: open, to: at });
      open = null;
    }
  }
  return out;
}

const ms = (xs, p) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const v = percentile(sorted, p);
  return v === null ? "?" : String(Math.round(v) + 0);
};

/**
 * What the runtime's busiest thread did between two times: ms run, ms waiting for a CPU, and the
 * span actually covered by samples. Null without samples around it.
 */
function threadBetween(sched, from, to) {
  if (sched.length < 2) return null;
  const first = sched[0].threads;
  const last = sched[sched.length - 1].threads;
  let main = null;
  let most = -1;
  for (const [tid, [ran]] of last) {
    const grew = ran - (first.get(tid)?.[0] ?? 0);
    if (grew > most) [main, most] = [tid, grew];
  }
  const before = sched.findLast((s) => s.at <= from) ?? sched[0];
  const after = sched.find((s) => s.at >= to) ?? sched[sched.length - 1];
  const a = before.threads.get(main);
  const b = after.threads.get(main);
  if (!a || !b || after.at <= before.at) return null;
  return { ranMs: (b[0] - a[0]) / 1e6, waitedMs: (b[1] - a[1]) / 1e6, spanMs: after.at - before.at };
}

/** Lines for one traced S1 rate. */
export function traceReport(label, { events, sched, perf }, result) {
  const took = events.filter(([kind]) => kind === "took").map(([, at, sentAt]) => ({ at, sentAt, wait: at - sentAt }));
  const d1 = spans(events, "d1", "d1-done");
  const fanout = spans(events, "fanout", "fanout-done");
  const delivers = events.filter(([kind]) => kind === "deliver").map(([, at]) => at);
  const stalls = (result.stalls ?? []).filter((st) => st.at >= result.windowStart);
  const rel = (t) => `${((t - result.windowStart) / 1000).toFixed(2)} s`;
  const running = (list, t) => list.find((s) => s.from <= t + 2 && s.to >= t);

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
function describeSampled(byWhat) {
  const parts = Object.entries(byWhat).sort((a, b) => b[1] - a[1]);
  return parts.length ? parts.map(([what, ms]) => `${what} ${ms.toFixed(0)} ms`).join(", ") : "no samples";
}

/** How many major GC pauses the samples show, how long, and how many stalls held one. */
function perfSummary(perf, stalls) {
  const pauses = majorGcPauses(perf);
  const lengths = pauses.map((p) => p.to - p.from).sort((a, b) => a - b);
  const held = stalls.filter((st) => pauses.some((p) => p.to >= st.at && p.from <= st.at + st.maxMs)).length;
  const overall = describeSampled(sampledBetween(perf, -Infinity, Infinity));
  return (
    `  thread sampled by perf: ${overall}; ${pauses.length} major GC pauses of 5 ms or more, ` +
    `${lengths.length ? `${lengths[0].toFixed(0)}-${lengths[lengths.length - 1].toFixed(0)} ms` : "none"}; ${held} of the stalls held one`
  );
}
