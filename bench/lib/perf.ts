// With `--trace` or `--gc-pauses`, when Linux `perf` is installed: a runtime's main thread sampled
// with its call stacks during each S1 rate, so that its work can be named from the native side.
// With `--trace` (the app only), beside the app's own timeline (bench/lib/trace.ts), which says
// when the thread was busy outside the conversation object; this says with what: a garbage
// collection (major or minor), SQLite, or other work. With `--gc-pauses` (every target), only
// the major GC pauses in the measured window (gcPausesIn), as rows of the table.
//
// `perf record -k CLOCK_REALTIME` stamps samples with the wall clock, the clock the bench's own
// times use, so samples and stalls line up. Sampling costs the runtime a little: these runs
// explain the stalls, they are not the numbers to report.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";

/** Samples per second. Each stands for 1000 / PERF_HZ ms of the thread's time. */
const PERF_HZ = 1999;
/** How long `perf record` is given to attach before the rate starts. */
const ATTACH_MS = 500;

export function perfInstalled(): boolean {
  return spawnSync("perf", ["--version"], { stdio: "ignore" }).status === 0;
}

/** What a sample of the thread was doing. */
export type SampleKind = "minor GC" | "major GC" | "other GC" | "SQLite" | "idle" | "other";

export interface Sample {
  /** Wall clock, ms. */
  at: number;
  what: SampleKind;
}

export interface ThreadSampler {
  samples: Sample[];
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** What one sample's call stack (innermost first) was doing. */
function classify(frames: string[]): SampleKind {
  const any = (re: RegExp) => frames.some((f) => re.test(f));
  if (any(/ScavengerCollector::|MinorMarkSweepCollector::/)) return "minor GC";
  // A full collection of the JavaScript heap and workerd's C++ heap (cppgc): marking, and in the
  // same pause the C++ heap's sweep and the embedder's epilogue callbacks.
  if (any(/Heap::MarkCompact|MarkCompactCollector::|Heap::CollectGarbage|cppgc::internal::Sweeper/)) return "major GC";
  if (any(/^v8::internal::Heap::|^cppgc::internal::/)) return "other GC";
  if (any(/sqlite3/)) return "SQLite";
  if (any(/epoll_wait/)) return "idle";
  return "other";
}

/** Samples `tid` between start() and stop(): `samples` is [{ at (ms, wall clock), what }]. */
export function threadSampler(tid: number | null): ThreadSampler {
  const dir = mkdtempSync(join(os.tmpdir(), "bench-perf-"));
  const file = join(dir, "perf.data");
  let child: ChildProcess | null = null;
  const sampler: ThreadSampler = {
    samples: [],
    async start() {
      child = spawn("perf", ["record", "-q", "-k", "CLOCK_REALTIME", "-F", String(PERF_HZ), "-g", "-t", String(tid), "-o", file], { stdio: "ignore" });
      await new Promise((resolve) => setTimeout(resolve, ATTACH_MS));
    },
    async stop() {
      if (!child) return;
      const exited = once(child, "exit");
      child.kill("SIGINT");
      await exited;
      const script = spawnSync("perf", ["script", "-i", file, "-F", "time,ip,sym"], { encoding: "utf8", maxBuffer: 1 << 30 });
      rmSync(dir, { recursive: true, force: true });
      sampler.samples = parse(script.stdout ?? "");
    },
  };
  return sampler;
}

/** `perf script -F time,ip,sym` output: a "<seconds>:" line, then one "<ip> <symbol>" line per frame. */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  let at: number | null = null;
  let frames: string[] = [];
  const flush = () => {
    if (at !== null) samples.push({ at, what: classify(frames) });
    at = null;
    frames = [];
  };
  for (const line of text.split("\n")) {
    const header = /^\s*(\d+\.\d+):\s*$/.exec(line);
    if (header) {
      flush();
      at = Number(header[1]) * 1000;
    } else if (line.trim() !== "") {
      frames.push(line.trim().replace(/^[0-9a-f]+\s+/, ""));
    }
  }
  flush();
  return samples;
}

/** The thread's sampled time between two times, by what it was doing: { "major GC": ms, ... }. */
export function sampledBetween(samples: Sample[], from: number, to: number): Partial<Record<SampleKind, number>> {
  const out: Partial<Record<SampleKind, number>> = {};
  for (const s of samples) if (s.at >= from && s.at <= to) out[s.what] = (out[s.what] ?? 0) + 1000 / PERF_HZ;
  return out;
}

/**
 * Major GC pauses of 5 ms or more: runs of "major GC" samples less than 5 ms apart,
 * [{ from, to, ms }]: its first and last sample, and its length (first to last plus one sample's
 * time). Shorter runs are left out: a lone sample is most often the epilogue callbacks after a
 * minor GC, which the stack alone does not tell from a major one's.
 */
export function majorGcPauses(samples: Sample[]): { from: number; to: number; ms: number }[] {
  const pauses: { from: number; to: number }[] = [];
  for (const s of samples) {
    if (s.what !== "major GC") continue;
    const last = pauses.at(-1);
    if (last && s.at - last.to < 5) last.to = s.at;
    else pauses.push({ from: s.at, to: s.at });
  }
  return pauses.filter((p) => p.to - p.from >= 5).map((p) => ({ ...p, ms: p.to - p.from + 1000 / PERF_HZ }));
}

/** The major GC pauses that began between `from` and `to` (wall-clock ms): how many, the longest and their sum in ms. */
export function gcPausesIn(samples: Sample[], from: number, to: number): { count: number; longestMs: number; totalMs: number } {
  const lengths = majorGcPauses(samples)
    .filter((p) => p.from >= from && p.from < to)
    .map((p) => p.ms);
  return {
    count: lengths.length,
    longestMs: lengths.length ? Math.max(...lengths) : 0,
    totalMs: lengths.reduce((a, b) => a + b, 0),
  };
}
