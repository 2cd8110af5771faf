#!/usr/bin/env node
// `npm run bench:media`: upload throughput of a 50 MiB file through `wrangler dev`, and the peak
// resident memory of the runtime (workerd) while the Worker streams it into local R2: by raw body
// with content-length, by multipart/form-data, and by resumable multipart parts.
//
// Reading the numbers: workerd's RSS grows with the bytes a request streams through it even when
// the Worker keeps none of them (freed chunks are returned lazily), and local R2 runs in the same
// process. So the last row is a control, a Worker that reads the body and drops it; an upload that
// held the whole file would sit a file's size (50 MiB) above the control, a streamed one does not.
//
// Each row runs on a fresh server (`npm run dev -- --port P --inspector-port Q --persist-to <tmp>`
// on free loopback ports, local observability off: it slows storage-heavy code tenfold), started
// in its own process group, which is killed when the row is done. Bounded: DEADLINE_MS in all.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DevServer, freePorts, groupProcesses, rssKiB } from "../scripts/lib/dev-server.ts";

const MiB = 1024 * 1024;
const SIZE = 50 * MiB;
const DEADLINE_MS = 5 * 60_000;
const REQUEST_TIMEOUT_MS = 120_000;
const SAMPLE_MS = 50;

/** Processes of process group `pgid` with their resident set size in KiB. */
function groupMemory(pgid: number): { name: string; rssKiB: number }[] {
  return groupProcesses(pgid).map((p) => ({ name: p.name, rssKiB: rssKiB(p.pid) ?? 0 }));
}

/** Samples the group's memory every SAMPLE_MS until stopped; reports the peaks. */
interface MemoryPeaks {
  peakWorkerdMiB: number;
  peakAllMiB: number;
  samples: number;
}

function sampleMemory(pgid: number): () => MemoryPeaks {
  let peakWorkerd = 0;
  let peakAll = 0;
  let samples = 0;
  const tick = () => {
    const procs = groupMemory(pgid);
    const workerd = procs.filter((p) => p.name.startsWith("workerd")).reduce((n, p) => n + p.rssKiB, 0);
    const all = procs.reduce((n, p) => n + p.rssKiB, 0);
    peakWorkerd = Math.max(peakWorkerd, workerd);
    peakAll = Math.max(peakAll, all);
    samples++;
  };
  tick();
  const timer = setInterval(tick, SAMPLE_MS);
  return () => {
    clearInterval(timer);
    tick();
    return { peakWorkerdMiB: peakWorkerd / 1024, peakAllMiB: peakAll / 1024, samples };
  };
}

const workerdRssMiB = (pgid: number): number =>
  groupMemory(pgid)
    .filter((p) => p.name.startsWith("workerd"))
    .reduce((n, p) => n + p.rssKiB, 0) / 1024;

async function request(base: string, path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${base}${path}`, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
}

/** The JSON body of `res`, taken to be a `T`, when its status is `status`. */
async function expectJson<T>(res: Response, status: number, what: string): Promise<T> {
  const text = await res.text();
  if (res.status !== status) throw new Error(`${what}: ${res.status} ${text.slice(0, 500)}`);
  return JSON.parse(text) as T;
}

/** Downloads through the signed URL and checks the SHA-256 against what was sent. */
async function verify(base: string, url: string, digest: string): Promise<void> {
  const u = new URL(url);
  const res = await request(base, `${u.pathname}${u.search}`);
  if (res.status !== 200) throw new Error(`download: ${res.status}`);
  const hash = createHash("sha256");
  const reader = res.body?.getReader();
  for (let read = await reader?.read(); read && !read.done; read = await reader?.read()) hash.update(read.value);
  if (hash.digest("hex") !== digest) throw new Error("downloaded bytes differ from the upload");
}

interface Measured<T> extends MemoryPeaks {
  seconds: number;
  mibPerSecond: number;
  workerdBeforeMiB: number;
  result: T;
}

async function measure<T>(pgid: number, run: () => Promise<T>): Promise<Measured<T>> {
  const before = workerdRssMiB(pgid);
  const stop = sampleMemory(pgid);
  const started = performance.now();
  let result: T;
  let memory: MemoryPeaks;
  try {
    result = await run();
  } finally {
    memory = stop();
  }
  const seconds = (performance.now() - started) / 1000;
  return { seconds, mibPerSecond: SIZE / MiB / seconds, workerdBeforeMiB: before, ...memory, result };
}

/** Servers still running, for the deadline's last resort. */
const live = new Set<DevServer>();

/**
 * Starts a server in its own process group on free loopback ports (scripts/lib/dev-server.ts):
 * the app (`npm run dev`), or with `config` a bare `wrangler dev` of another Worker (the control).
 */
async function startServer(persistTo: string, config?: string): Promise<{ base: string; pgid: number; stop: () => Promise<void> }> {
  const [port = 0, inspectorPort = 0] = await freePorts(2);
  const server = new DevServer({
    name: config ? "the control's wrangler dev" : "npm run dev",
    port,
    inspectorPort,
    persistTo,
    ...(config ? { config } : {}),
    localObservability: false,
    ready: async (base) => {
      const res = await fetch(`${base}/me`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      return res.status === (config ? 200 : 401);
    },
    keepLines: 4000,
  });
  live.add(server);
  const stop = async () => {
    await server.stop();
    live.delete(server);
  };
  try {
    await server.start(90_000);
    if (server.pgid === undefined) throw new Error(`${server.name} has no process`);
    return { base: server.base, pgid: server.pgid, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

const CONTROL_WORKER = `export default {
  async fetch(request) {
    let n = 0;
    if (request.body) for await (const chunk of request.body) n += chunk.byteLength;
    return new Response(String(n));
  },
};
`;

async function register(base: string): Promise<Record<string, string>> {
  const user = await expectJson<{ token: string }>(
    await request(base, "/auth/register", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: `bench_${randomBytes(4).toString("hex")}`, password: "bench password" }),
    }),
    201,
    "register",
  );
  return { authorization: `Bearer ${user.token}` };
}

/** What the app answers about a stored upload (protocol/media.ts MediaInfo), as far as read here. */
interface Uploaded {
  url: string;
  note?: string;
}

/** The three ways to upload, each run on a fresh server so one's garbage does not hide another's. */
const UPLOADS: { label: string; run: (base: string, auth: Record<string, string>, data: Buffer<ArrayBuffer>) => Promise<Uploaded> }[] = [
  {
    label: "raw body, content-length",
    run: async (base, auth, data) => {
      const res = await request(base, "/upload?name=bench.mp4", {
        method: "POST",
        headers: { ...auth, "content-type": "video/mp4", "content-length": String(SIZE) },
        body: data,
      });
      return (await expectJson<{ media: Uploaded }>(res, 201, "raw upload")).media;
    },
  },
  {
    label: "multipart/form-data",
    run: async (base, auth, data) => {
      const form = new FormData();
      form.append("file", new Blob([data], { type: "video/mp4" }), "bench.mp4");
      const res = await request(base, "/upload", { method: "POST", headers: auth, body: form });
      return (await expectJson<{ media: Uploaded }>(res, 201, "form upload")).media;
    },
  },
  {
    label: "resumable multipart (parts)",
    run: async (base, auth, data) => {
      const init = await expectJson<{ mediaId: string; partCount: number; partSize: number }>(
        await request(base, "/upload/multipart", {
          method: "POST",
          headers: { ...auth, "content-type": "application/json" },
          body: JSON.stringify({ contentType: "video/mp4", size: SIZE, name: "bench.mp4" }),
        }),
        201,
        "multipart init",
      );
      for (let n = 1; n <= init.partCount; n++) {
        const part = data.subarray((n - 1) * init.partSize, Math.min(n * init.partSize, SIZE));
        await expectJson(await request(base, `/upload/multipart/${init.mediaId}/parts/${n}`, { method: "PUT", headers: auth, body: part }), 200, `part ${n}`);
      }
      const done = await request(base, `/upload/multipart/${init.mediaId}/complete`, { method: "POST", headers: auth });
      return { ...(await expectJson<{ media: Uploaded }>(done, 201, "multipart complete")).media, note: `${init.partCount} parts of ${init.partSize / MiB} MiB` };
    },
  },
];

function row(label: string, r: Measured<unknown>, note = ""): string {
  const delta = r.peakWorkerdMiB - r.workerdBeforeMiB;
  return (
    `${label.padEnd(44)} ${r.seconds.toFixed(2).padStart(6)} s ${r.mibPerSecond.toFixed(1).padStart(6)} MiB/s   ` +
    `${r.workerdBeforeMiB.toFixed(0).padStart(4)} -> ${r.peakWorkerdMiB.toFixed(0).padStart(4)} MiB (+${delta.toFixed(0)})${note ? `   ${note}` : ""}`
  );
}

async function main(): Promise<void> {
  const deadline = setTimeout(() => {
    console.error(`bench: gave up after ${DEADLINE_MS / 1000} s`);
    for (const server of live) server.killNow();
    process.exit(1);
  }, DEADLINE_MS);
  deadline.unref();

  const dir = mkdtempSync(join(tmpdir(), "edge-chat-bench-media-"));
  // An MP4 header (uploads are sniffed), then incompressible bytes.
  const data = randomBytes(SIZE);
  data.set([0, 0, 0, 24, ...Buffer.from("ftypisom"), 0, 0, 2, 0, ...Buffer.from("isomiso2")], 0);
  const digest = createHash("sha256").update(data).digest("hex");
  const lines: string[] = [];
  try {
    for (const [i, upload] of UPLOADS.entries()) {
      const server = await startServer(join(dir, `app-${i}`));
      try {
        const auth = await register(server.base);
        // Warm the Worker, D1 and R2 so start-up costs stay out of the numbers.
        await expectJson(
          await request(server.base, "/upload?name=warm.mp4", { method: "POST", headers: { ...auth, "content-type": "video/mp4" }, body: data.subarray(0, MiB) }),
          201,
          "warm-up",
        );
        const r = await measure(server.pgid, () => upload.run(server.base, auth, data));
        await verify(server.base, r.result.url, digest);
        lines.push(row(upload.label, r, r.result.note ?? ""));
      } finally {
        await server.stop();
      }
    }

    // The control: a Worker that reads the body and drops it, no R2. Local workerd's RSS grows with
    // the bytes a request streams through it even then (its buffers are freed lazily), so this is
    // the floor the upload rows compare against.
    writeFileSync(join(dir, "control.js"), CONTROL_WORKER);
    writeFileSync(join(dir, "control.toml"), `name = "bench-control"\nmain = "control.js"\ncompatibility_date = "2026-11-01"\n`);
    const control = await startServer(join(dir, "control-state"), join(dir, "control.toml"));
    try {
      await (await request(control.base, "/", { method: "POST", body: data.subarray(0, MiB) })).text();
      const r = await measure(control.pgid, async () => {
        const res = await request(control.base, "/", { method: "POST", body: data });
        if (Number(await res.text()) !== SIZE) throw new Error("control: wrong byte count");
        return null;
      });
      lines.push(row("control: a Worker that reads and drops it", r));
    } finally {
      await control.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  console.log(`\nMedia upload bench: one ${SIZE / MiB} MiB file per row, each on a fresh \`wrangler dev\` (local R2 on disk, local observability off).`);
  console.log(`RSS: the workerd process(es) of that server, sampled every ${SAMPLE_MS} ms: idle after a 1 MiB warm-up -> peak during the upload.\n`);
  for (const line of lines) console.log(line);
  console.log("\nEvery upload downloaded byte-exact (SHA-256).");
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
