// CPU profiles of the app's isolate through workerd's inspector (wrangler's --inspector-port),
// for `npm run bench -- --profile`: the Chrome DevTools protocol's Profiler domain.
import WebSocket from "ws";

/** An entry of the inspector's /json list. */
export interface InspectorTarget {
  id: string;
  title: string;
  url: string;
  webSocketDebuggerUrl: string;
}

/** A call frame of a V8 profile (CPU or sampling heap profile). */
export interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

/** A V8 .cpuprofile (Profiler.stop). */
export interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame; children?: number[] }[];
  samples: number[];
  startTime: number;
  endTime: number;
  timeDeltas: number[];
}

export async function inspectorTargets(port: number): Promise<InspectorTarget[]> {
  const res = await fetch(`http://127.0.0.1:${port}/json`, { signal: AbortSignal.timeout(5_000) });
  return (await res.json()) as InspectorTarget[];
}

/** A message from the inspector: an answer to a call (with its id), or an event. */
interface InspectorMessage {
  id?: number;
  result?: unknown;
  error?: unknown;
}

export class Inspector {
  readonly ws: WebSocket;
  readonly target: InspectorTarget;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (result: unknown) => void; reject: (err: Error) => void }>();

  static async connect(port: number, match: (target: InspectorTarget) => boolean = () => true): Promise<Inspector> {
    const targets = await inspectorTargets(port);
    const target = targets.find(match) ?? targets[0];
    if (!target) throw new Error(`no inspector target on port ${port}`);
    return Inspector.open(target);
  }

  static async open(target: InspectorTarget): Promise<Inspector> {
    const ws = new WebSocket(target.webSocketDebuggerUrl, { perMessageDeflate: false, maxPayload: 1 << 30 });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    return new Inspector(ws, target);
  }

  constructor(ws: WebSocket, target: InspectorTarget) {
    this.ws = ws;
    this.target = target;
    ws.on("message", (data) => {
      const msg = JSON.parse(data.toString()) as InspectorMessage;
      const p = msg.id !== undefined ? this.pending.get(msg.id) : undefined;
      if (!p || msg.id === undefined) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(JSON.stringify(msg.error)));
      else p.resolve(msg.result);
    });
  }

  /** A DevTools protocol call; `T` is what its result is taken to be. */
  call<T = unknown>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, method, params }));
    return new Promise<T>((resolve, reject) => this.pending.set(id, { resolve: (result) => resolve(result as T), reject }));
  }

  async startProfile(intervalUs = 1000): Promise<void> {
    await this.call("Profiler.enable");
    await this.call("Profiler.setSamplingInterval", { interval: intervalUs });
    await this.call("Profiler.start");
  }

  async stopProfile(): Promise<CpuProfile> {
    const { profile } = await this.call<{ profile: CpuProfile }>("Profiler.stop");
    return profile;
  }

  close(): void {
    this.ws.close();
  }
}

/**
 * The isolate's live JavaScript heap in bytes, read right after a full garbage collection: what
 * the code still holds, unlike the process's RSS, which also keeps memory the runtime freed.
 * workerd's inspector does not answer `HeapProfiler.collectGarbage`; a heap snapshot collects
 * garbage before it is taken (its chunks, streamed as events, are dropped).
 */
export async function liveHeapBytes(port: number): Promise<number> {
  const inspector = await Inspector.connect(port);
  try {
    await inspector.call("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
    const { usedSize } = await inspector.call<{ usedSize: number }>("Runtime.getHeapUsage");
    return usedSize;
  } finally {
    inspector.close();
  }
}

/** Samples in a profile that were not idle: the isolate's busy share. */
export function busySamples(profile: CpuProfile): number {
  const idle = new Set(profile.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id));
  return profile.samples.filter((s) => !idle.has(s)).length;
}

/** A profile node's function, as the summaries name it: `name dir/file:line`. */
export function frameName(f: CallFrame): string {
  const file = f.url ? f.url.split("/").slice(-2).join("/") : "";
  return `${f.functionName || "(anonymous)"} ${file}:${f.lineNumber + 1}`;
}

/** Self and inclusive time per function (top `n`), from a V8 .cpuprofile. */
export function summarize(profile: CpuProfile, n = 40): { total: number; self: string[]; inclusive: string[] } {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const c of node.children ?? []) parent.set(c, node.id);
  const counts = new Map<number, number>();
  for (const s of profile.samples) counts.set(s, (counts.get(s) ?? 0) + 1);
  const total = profile.samples.length;
  const key = (id: number) => {
    const node = byId.get(id);
    return node ? frameName(node.callFrame) : `(node ${id})`;
  };
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  for (const [id, c] of counts) {
    self.set(key(id), (self.get(key(id)) ?? 0) + c);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = key(cur);
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + c);
    }
  }
  const pct = (c: number) => `${((100 * c) / total).toFixed(1).padStart(5)}%`;
  const top = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, c]) => `${pct(c)}  ${k}`);
  return { total, self: top(self), inclusive: top(incl) };
}
