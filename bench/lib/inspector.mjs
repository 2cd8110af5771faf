// CPU profiles of the app's isolate through workerd's inspector (wrangler's --inspector-port),
// for `npm run bench -- --profile`: the Chrome DevTools protocol's Profiler domain.
import WebSocket from "ws";

export async function inspectorTargets(port) {
  const res = await fetch(`http://127.0.0.1:${port}/json`, { signal: AbortSignal.timeout(5_000) });
  return res.json();
}

export class Inspector {
  static async connect(port, match = () => true) {
    const targets = await inspectorTargets(port);
    const target = targets.find(match) ?? targets[0];
    if (!target) throw new Error(`no inspector target on port ${port}`);
    return Inspector.open(target);
  }

  static async open(target) {
    const ws = new WebSocket(target.webSocketDebuggerUrl, { perMessageDeflate: false, maxPayload: 1 << 30 });
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    return new Inspector(ws, target);
  }

  constructor(ws, target) {
    this.ws = ws;
    this.target = target;
    this.nextId = 1;
    this.pending = new Map();
    ws.on("message", (data) => {
      const msg = JSON.parse(data.toString());
      const p = msg.id !== undefined ? this.pending.get(msg.id) : null;
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(JSON.stringify(msg.error)));
      else p.resolve(msg.result);
    });
  }

  call(method, params = {}) {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  async startProfile(intervalUs = 1000) {
    await this.call("Profiler.enable");
    await this.call("Profiler.setSamplingInterval", { interval: intervalUs });
    await this.call("Profiler.start");
  }

  async stopProfile() {
    const { profile } = await this.call("Profiler.stop");
    return profile;
  }

  close() {
    this.ws.close();
  }
}

/**
 * The isolate's live JavaScript heap in bytes, read right after a full garbage collection: what
 * the code still holds, unlike the process's RSS, which also keeps memory the runtime freed.
 * workerd's inspector does not answer `HeapProfiler.collectGarbage`; a heap snapshot collects
 * garbage before it is taken (its chunks, streamed as events, are dropped).
 */
export async function liveHeapBytes(port) {
  const inspector = await Inspector.connect(port);
  try {
    await inspector.call("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
    const { usedSize } = await inspector.call("Runtime.getHeapUsage");
    return usedSize;
  } finally {
    inspector.close();
  }
}

/** Samples in a profile that were not idle: the isolate's busy share. */
export function busySamples(profile) {
  const idle = new Set(profile.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id));
  return profile.samples.filter((s) => !idle.has(s)).length;
}

/** A profile node's function, as the summaries name it: `name dir/file:line`. */
export function frameName(f) {
  const file = f.url ? f.url.split("/").slice(-2).join("/") : "";
  return `${f.functionName || "(anonymous)"} ${file}:${f.lineNumber + 1}`;
}

/** Self and inclusive time per function (top `n`), from a V8 .cpuprofile. */
export function summarize(profile, n = 40) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map();
  for (const node of profile.nodes) for (const c of node.children ?? []) parent.set(c, node.id);
  const counts = new Map();
  for (const s of profile.samples) counts.set(s, (counts.get(s) ?? 0) + 1);
  const total = profile.samples.length;
  const key = (node) => frameName(node.callFrame);
  const self = new Map();
  const incl = new Map();
  for (const [id, c] of counts) {
    const node = byId.get(id);
    self.set(key(node), (self.get(key(node)) ?? 0) + c);
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const k = key(byId.get(cur));
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + c);
    }
  }
  const pct = (c) => `${((100 * c) / total).toFixed(1).padStart(5)}%`;
  const top = (m) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, c]) => `${pct(c)}  ${k}`);
  return { total, self: top(self), inclusive: top(incl) };
}
