// `npm run bench -- --only S1 --gc`: what the isolate's garbage collector does during each S1
// rate, through workerd's inspector, set beside the stalls the receivers saw.
//
// Two things are watched. The heap's used size, polled every POLL_MS: a major GC (mark-compact)
// shows as a drop of more than half. And a sampling heap profile that keeps only what survived a
// minor GC (a scavenge): the allocations that pile up in the old generation until a major GC
// frees them, by the function that allocated them. Polling and sampling cost the isolate time:
// these runs explain the stalls; they are not the numbers of the table.
import { Inspector, frameName } from "./inspector.mjs";
import { STALL_MS } from "./scenarios.mjs";

const POLL_MS = 20;

export function gcWatcher(inspectorPort) {
  let inspector = null;
  let timer = null;
  let stopped = false;
  const heap = [];
  const findings = { majorGcs: [], promotedBytes: 0, promotedBy: [], heapMinMB: null, heapMaxMB: null };
  return {
    findings,
    async start() {
      inspector = await Inspector.connect(inspectorPort);
      await inspector.call("HeapProfiler.enable");
      await inspector.call("HeapProfiler.startSampling", {
        samplingInterval: 16_384,
        includeObjectsCollectedByMajorGC: true,
        includeObjectsCollectedByMinorGC: false,
      });
      const poll = async () => {
        const askedAt = performance.timeOrigin + performance.now();
        try {
          const { usedSize } = await inspector.call("Runtime.getHeapUsage");
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
      const { profile } = await inspector.call("HeapProfiler.stopSampling");
      inspector.close();
      for (let i = 1; i < heap.length; i++) {
        const [before, after] = [heap[i - 1], heap[i]];
        if (after.used < before.used / 2 && before.used - after.used > 2e6) {
          // Between two answers; the slower answer is about how long the isolate was paused.
          findings.majorGcs.push({ at: before.at, beforeMB: before.used / 1e6, afterMB: after.used / 1e6, answerMs: after.answerMs });
        }
      }
      const used = heap.map((h) => h.used / 1e6);
      findings.heapMinMB = used.length ? Math.min(...used) : null;
      findings.heapMaxMB = used.length ? Math.max(...used) : null;
      const byFunction = new Map();
      const walk = (node) => {
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
export function gcReport(label, findings, result) {
  const { majorGcs } = findings;
  const near = (stall) => majorGcs.some((gc) => gc.at >= stall.at - 50 && gc.at <= stall.at + stall.maxMs + 50);
  const inWindow = (result.stalls ?? []).filter((st) => st.at >= result.windowStart);
  const rel = (t) => `${((t - result.windowStart) / 1000).toFixed(2)} s`;
  const mb = (x) => (x === null ? "?" : x.toFixed(1));
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
