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
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { signalGroup } from "../scripts/lib/process-group.mjs";

const MiB = 1024 * 1024;
const SIZE = 50 * MiB;
const DEADLINE_MS = 5 * 60_000;
const REQUEST_TIMEOUT_MS = 120_000;
const SAMPLE_MS = 50;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Processes of process group `pgid`: pid, command name and resident set size in KiB. */
function groupProcesses(pgid) {
  const out = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the last ")".
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) !== pgid) continue;
      const status = readFileSync(`/proc/${entry}/status`, "utf8");
      const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
      const name = /^Name:\s+(.+)$/m.exec(status)?.[1] ?? "?";
      out.push({ pid: Number(entry), name, rssKiB: rss });
    } catch {
      // The process ended between listing and reading.
    }
  }
  return out;
}

/** Samples the group's memory every SAMPLE_MS until stopped; reports the peaks. */
function sampleMemory(pgid) {
  let peakWorkerd = 0;
  let peakAll = 0;
  let samples = 0;
  const tick = () => {
    const procs = groupProcesses(pgid);
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

const workerdRssMiB = (pgid) =>
  groupProcesses(pgid)
    .filter((p) => p.name.startsWith("workerd"))
    .reduce((n, p) => n + p.rssKiB, 0) / 1024;

async function request(base, path, init = {}) {
  return fetch(`${base}${path}`, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
}

async function expectJson(res, status, what) {
  const text = await res.text();
  if (res.status !== status) throw new Error(`${what}: ${res.status} ${text.slice(0, 500)}`);
  return JSON.parse(text);
}

async function waitUntilUp(base, server, logs, readyStatus) {
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) throw new Error(`npm run dev exited with ${server.exitCode}:\n${logs.join("")}`);
    try {
      const res = await fetch(`${base}/me`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === readyStatus) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`wrangler dev did not answer within 90 s:\n${logs.join("").slice(-4000)}`);
}

/** Downloads through the signed URL and checks the SHA-256 against what was sent. */
async function verify(base, url, digest) {
  const u = new URL(url);
  const res = await request(base, `${u.pathname}${u.search}`);
  if (res.status !== 200) throw new Error(`download: ${res.status}`);
  const hash = createHash("sha256");
  for await (const chunk of res.body) hash.update(chunk);
  if (hash.digest("hex") !== digest) throw new Error("downloaded bytes differ from the upload");
}

async function measure(pgid, run) {
  const before = workerdRssMiB(pgid);
  const stop = sampleMemory(pgid);
  const started = performance.now();
  let result;
  let memory;
  try {
    result = await run();
  } finally {
    memory = stop();
  }
  const seconds = (performance.now() - started) / 1000;
  return { seconds, mibPerSecond: SIZE / MiB / seconds, workerdBeforeMiB: before, ...memory, result };
}

/**
 * Starts a server in its own process group on free loopback ports: the app (`npm run dev`), or
 * with `config` a bare `wrangler dev` of another Worker (the control).
 */
async function startServer(persist, config) {
  const port = await freePort();
  const inspectorPort = await freePort();
  const ports = ["--port", String(port), "--inspector-port", String(inspectorPort), "--persist-to", persist];
  const [command, args] = config
    ? ["npx", ["wrangler", "dev", "--config", config, "--ip", "127.0.0.1", ...ports]]
    : ["npm", ["run", "dev", "--", ...ports]];
  const logs = [];
  const child = spawn(command, args, {
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, X_LOCAL_OBSERVABILITY: "false", WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  });
  live.add(child.pid);
  child.stdout.on("data", (d) => logs.push(String(d)));
  child.stderr.on("data", (d) => logs.push(String(d)));
  const server = { base: `http://127.0.0.1:${port}`, pgid: child.pid, child, logs };
  server.stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      signalGroup(child.pid, "SIGTERM");
      const timer = setTimeout(() => signalGroup(child.pid, "SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
    // wrangler's node and workerd may outlive the npm wrapper: the whole group goes.
    if (groupProcesses(child.pid).length > 0) signalGroup(child.pid, "SIGKILL");
    live.delete(child.pid);
  };
  try {
    await waitUntilUp(server.base, child, logs, config ? 200 : 401);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

/** Process groups still running, for the deadline's last resort. */
const live = new Set();


const CONTROL_WORKER = `export default {
  async fetch(request) {
    let n = 0;
    if (request.body) for await (const chunk of request.body) n += chunk.byteLength;
    return new Response(String(n));
  },
};
`;

async function register(base) {
  const user = await expectJson(
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

/** The three ways to upload, each run on a fresh server so one's garbage does not hide another's. */
const UPLOADS = [
  {
    label: "raw body, content-length",
    run: async (base, auth, data) => {
      const res = await request(base, "/upload?name=bench.mp4", {
        method: "POST",
        headers: { ...auth, "content-type": "video/mp4", "content-length": String(SIZE) },
        body: data,
      });
      return (await expectJson(res, 201, "raw upload")).media;
    },
  },
  {
    label: "multipart/form-data",
    run: async (base, auth, data) => {
      const form = new FormData();
      form.append("file", new Blob([data], { type: "video/mp4" }), "bench.mp4");
      const res = await request(base, "/upload", { method: "POST", headers: auth, body: form });
      return (await expectJson(res, 201, "form upload")).media;
    },
  },
  {
    label: "resumable multipart (parts)",
    run: async (base, auth, data) => {
      const init = await expectJson(
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
      return { ...(await expectJson(done, 201, "multipart complete")).media, note: `${init.partCount} parts of ${init.partSize / MiB} MiB` };
    },
  },
];

function row(label, r, note = "") {
  const delta = r.peakWorkerdMiB - r.workerdBeforeMiB;
  return (
    `${label.padEnd(44)} ${r.seconds.toFixed(2).padStart(6)} s ${r.mibPerSecond.toFixed(1).padStart(6)} MiB/s   ` +
    `${r.workerdBeforeMiB.toFixed(0).padStart(4)} -> ${r.peakWorkerdMiB.toFixed(0).padStart(4)} MiB (+${delta.toFixed(0)})${note ? `   ${note}` : ""}`
  );
}

async function main() {
  const deadline = setTimeout(() => {
    console.error(`bench: gave up after ${DEADLINE_MS / 1000} s`);
    for (const pgid of live) signalGroup(pgid, "SIGKILL");
    process.exit(1);
  }, DEADLINE_MS);
  deadline.unref();

  const dir = mkdtempSync(join(tmpdir(), "edge-chat-bench-media-"));
  // An MP4 header (uploads are sniffed), then incompressible bytes.
  const data = randomBytes(SIZE);
  data.set([0, 0, 0, 24, ...Buffer.from("ftypisom"), 0, 0, 2, 0, ...Buffer.from("isomiso2")], 0);
  const digest = createHash("sha256").update(data).digest("hex");
  const lines = [];
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
