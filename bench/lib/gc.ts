// `npm run bench -- --only S1 --gc`: what the isolate's garbage collector does during each S1
// rate, through workerd's inspector, set beside the stalls the receivers saw.
//
// Two things are watched. The heap's used size, polled every POLL_MS: a major GC (mark-compact)
// shows as a drop of more than half. And a sampling heap profile that keeps only what survived a
// minor GC (a scavenge): the allocations that pile up in the old generation until a major GC
// frees them, by the function that allocated them. Polling and sampling cost the isolate time:
// these runs explain the stalls; they are not the numbers of the table.
import { Inspector, frameName, type CallFrame } from "./inspector.ts";
import { STALL_MS, type Stall } from "./scenarios.ts";

const POLL_MS = 20;

export interface MajorGc {
  at: number;
  beforeMB: number;
  afterMB: number;
  answerMs: number;
}

export interface GcFindings {
  majorGcs: MajorGc[];
  promotedBytes: number;
  /** [function, bytes], the top 5. */
  promotedBy: [string, number][];
  heapMinMB: number | null;
  heapMaxMB: number | null;
}

/** A node of a sampling heap profile (HeapProfiler.stopSampling). */
interface HeapProfileNode {
  callFrame: CallFrame;
  selfSize: number;
  children: HeapProfileNode[];
}

export interface GcWatcher {
  findings: GcFindings;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function gcWatcher(inspectorPort: number): GcWatcher {
  let inspector: Inspector | null = null;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const heap: { at: number; used: number; answerMs: number }[] = [];
  const findings: GcFindings = { majorGcs: [], promotedBytes: 0, promotedBy: [], heapMinMB: null, heapMaxMB: null };
  return {
    findings,
    async start() {
      const connected = await Inspector.connect(inspectorPort);
      inspector = connected;
      await connected.call("HeapProfiler.enable");
      await connected.call("HeapProfiler.startSampling", {
        samplingInterval: 16_384,
        includeObjectsCollectedByMajorGC: true,
        includeObjectsCollectedByMinorGC: false,
      });
      const poll = async () => {
        const askedAt = performance.timeOrigin + performance.now();
        try {
          const { usedSize } = await connected.call<{ usedSize: number }>("Runtime.getHeapUsage");
          heap.push({ at: askedAt, used: usedSize, answerMs: performance.timeOrigin + performance.now() - askedAt });
        } catch {
          // the inspector closed
        }
        if (!stopped) timer = setTimeout(poll, POLL_MS);
      };
      void poll();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      if (!inspector) throw new Error("gcWatcher: stop before start");
      const { profile } = await inspector.call<{ profile: { head: HeapProfileNode } }>("HeapProfiler.stopSampling");
      inspector.close();
      for (let i = 1; i < heap.length; i++) {
        const [before, after] = [heap[i - 1], heap[i]];
        if (!before || !after) continue;
        if (after.used < before.used / 2 && before.used - after.used > 2e6) {
          // Between two answers; the slower answer is about how long the isolate was paused.
          findings.majorGcs.push({ at: before.at, beforeMB: before.used / 1e6, afterMB: after.used / 1e6, answerMs: after.answerMs });
        }
      }
      const used = heap.map((h) => h.used / 1e6);
      findings.heapMinMB = used.length ? Math.min(...used) : null;
      findings.heapMaxMB = used.length ? Math.max(...used) : null;
      const byFunction = new Map<string, number>();
      const walk = (node: HeapProfileNode) => {
        const name = frameName(node.callFrame);
        byFunction.set(name, (byFunction.get(name) ?? 0) + node.selfSize);
        findings.promotedBytes += node.selfSize;
        for (const child of node.children) walk(child);
      };
      walk(profile.head);
      findings.promotedBy = [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, 5);
    },
  };
}

/** Lines for one watched S1 rate: the major GCs, the stalls, and which stalls a GC was in. */
export function gcReport(label: string, findings: GcFindings, result: { stalls?: Stall[]; windowStart: number; p99?: number | null }): string[] {
  const { majorGcs } = findings;
  const near = (stall: Stall) => majorGcs.some((gc) => gc.at >= stall.at - 50 && gc.at <= stall.at + stall.maxMs + 50);
  const inWindow = (result.stalls ?? []).filter((st) => st.at >= result.windowStart);
  const rel = (t: number) => `${((t - result.windowStart) / 1000).toFixed(2)} s`;
  const mb = (x: number | null) => (x === null ? "?" : x.toFixed(1));
  return [
    `gc ${label}: p99 ${result.p99?.toFixed(1)} ms; heap ${mb(findings.heapMinMB)}-${mb(findings.heapMaxMB)} MB; ` +
      `${(findings.promotedBytes / 1e6).toFixed(1)} MB survived a scavenge (sampled), allocated by:`,
    ...findings.promotedBy.map(([name, bytes]) => `    ${(bytes / 1e6).toFixed(1).padStart(6)} MB  ${name}`),
    `  major GCs (time from window start, heap before -> after, the slow inspector answer): ` +
      (majorGcs.map((gc) => `${rel(gc.at)} ${mb(gc.beforeMB)} -> ${mb(gc.afterMB)} MB, ${gc.answerMs.toFixed(0)} ms`).join("; ") || "none"),
    `  stalls (messages >= ${STALL_MS} ms late): ` +
      (inWindow.map((st) => `${rel(st.at)} ${st.messages} msgs, max ${st.maxMs.toFixed(0)} ms${near(st) ? " [major GC]" : ""}`).join("; ") || "none"),
  ];
}
