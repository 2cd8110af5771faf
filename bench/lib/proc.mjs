// Servers for the benchmark: `wrangler dev` in its own process group on free loopback ports,
// stopped as a group (npm and npx leave wrangler's node and workerd behind otherwise), and the
// resident memory of the workerd processes in that group.
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { createServer } from "node:net";
import { signalGroup, stopGroup } from "../../scripts/lib/process-group.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Distinct free ports: all listeners stay open until every port is known. */
export async function freePorts(count) {
  const servers = [];
  try {
    for (let i = 0; i < count; i++) {
      servers.push(
        await new Promise((resolve, reject) => {
          const s = createServer();
          s.unref();
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => resolve(s));
        }),
      );
    }
    const ports = servers.map((s) => s.address().port);
    if (ports.includes(8787)) throw new Error("refusing port 8787");
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(() => r()))));
  }
}

/** Environment of every server the bench starts: no telemetry, no network, no local tracing. */
export const SERVER_ENV = {
  X_LOCAL_OBSERVABILITY: "false",
  WRANGLER_SEND_METRICS: "false",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
};

export class Server {
  /**
   * @param {object} o
   * @param {string} o.name label for logs
   * @param {string} o.command npm or npx
   * @param {string[]} o.args
   * @param {string} o.cwd
   * @param {number} o.port
   * @param {(base: string) => Promise<boolean>} o.ready
   */
  constructor(o) {
    Object.assign(this, o);
    this.base = `http://127.0.0.1:${o.port}`;
    this.wsBase = `ws://127.0.0.1:${o.port}`;
    this.output = [];
    this.exited = null;
    this.reloads = 0;
  }

  async start(timeoutMs = 90_000) {
    this.exited = null;
    this.child = spawn(this.command, this.args, {
      cwd: this.cwd,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...SERVER_ENV },
    });
    const collect = (chunk) => {
      const text = chunk.toString();
      if (process.env.BENCH_VERBOSE === "1") process.stderr.write(text.replace(/^/gm, `  [${this.name}] `));
      // wrangler dev rebuilds and restarts the Worker when a source file changes on disk (another
      // edit in the same tree): every socket drops and the runtime's memory starts over.
      this.reloads += (text.match(/Reloading local server/g) ?? []).length;
      this.output.push(...text.split("\n"));
      if (this.output.length > 300) this.output.splice(0, this.output.length - 300);
    };
    this.child.stdout.on("data", collect);
    this.child.stderr.on("data", collect);
    this.child.on("exit", (code, signal) => (this.exited = { code, signal }));
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.exited) throw new Error(`${this.name} exited early ${JSON.stringify(this.exited)}\n${this.tail()}`);
      try {
        if (await this.ready(this.base)) return;
      } catch {
        // not up yet
      }
      await sleep(250);
    }
    throw new Error(`${this.name} did not start within ${timeoutMs} ms\n${this.tail()}`);
  }

  tail(lines = 40) {
    return this.output.filter((l) => l.trim() !== "").slice(-lines).join("\n");
  }

  /** Lines of server output that look like errors (for the report; the app logs failures). */
  errorLines() {
    return this.output.filter((l) => /error|failed|exception/i.test(l) && !/^\s*$/.test(l));
  }

  /** SIGTERM to the whole process group, SIGKILL after a grace period. */
  async stop() {
    if (!this.child?.pid) return;
    this.resume();
    await stopGroup(this.child.pid);
  }

  /**
   * Stops the whole process group (SIGSTOP) while another target is measured: an idle `wrangler
   * dev` is not idle, its esbuild watcher polls the source tree (~1-2% of a core, in bursts;
   * workers-sdk#11469), and on two cores that landed in the measured target's tail latency.
   */
  pause() {
    if (!this.child?.pid || this.paused) return;
    signalGroup(this.child.pid, "SIGSTOP");
    this.paused = true;
  }

  resume() {
    if (!this.child?.pid || !this.paused) return;
    signalGroup(this.child.pid, "SIGCONT");
    this.paused = false;
  }

  /**
   * The workerd processes of this server: `runtime` runs the Worker and its Durable Objects (it
   * has the inspector), `proxy` is wrangler's entry runtime on the public port, which relays every
   * connection to it (it does not exist in production).
   */
  workerdProcesses() {
    const found = { runtime: null, proxy: null };
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        if (Number(fields[2]) !== this.child.pid) continue; // pgrp
        const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
        if (!cmdline.includes("workerd") || !cmdline.includes("serve")) continue;
        if (cmdline.includes("--inspector-addr")) found.runtime = Number(entry);
        else found.proxy = Number(entry);
      } catch {
        // exited meanwhile
      }
    }
    return found;
  }

  /**
   * The runtime's own entry socket, without wrangler's proxy in front: `{ base, wsBase }`.
   * The proxy holds about 4.5 file descriptors per relayed WebSocket (measured: 4,540 for 1,000
   * sockets), so under a 20,000 open-file limit it runs out near 4,400 sockets and resets every
   * connection (`socket hang up` / `read ECONNRESET`); the runtime holds about 2 per socket.
   * The runtime listens on a random port (`--socket-addr=entry=127.0.0.1:0`) beside its inspector
   * and debug ports: the one that answers like the Worker (`this.ready`) and is not an inspector
   * (`/json/version`) is the entry. Found afresh after every start (the port changes).
   */
  async entry() {
    const { runtime } = this.workerdProcesses();
    if (!runtime) throw new Error(`${this.name}: no runtime workerd process`);
    const inodes = new Set();
    for (const fd of readdirSync(`/proc/${runtime}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${runtime}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
    const ports = [];
    for (const line of readFileSync(`/proc/${runtime}/net/tcp`, "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address rem_address st ... inode (field 9); 0A = LISTEN, 0100007F = 127.0.0.1
      if (f.length > 9 && f[3] === "0A" && f[1].startsWith("0100007F:") && inodes.has(f[9])) ports.push(parseInt(f[1].split(":")[1], 16));
    }
    for (const port of ports) {
      const base = `http://127.0.0.1:${port}`;
      try {
        const inspector = await fetch(`${base}/json/version`, { signal: AbortSignal.timeout(2_000) });
        if (inspector.ok && (await inspector.text()).includes("Browser")) continue;
        if (await this.ready(base)) return { base, wsBase: `ws://127.0.0.1:${port}`, port };
      } catch {
        // not an HTTP port
      }
    }
    throw new Error(`${this.name}: runtime entry socket not found among ports ${ports.join(", ")}`);
  }

  /** Resident memory in bytes of the runtime and proxy workerd processes. */
  rss() {
    const { runtime, proxy } = this.workerdProcesses();
    return { runtime: runtime ? rssOf(runtime) : null, proxy: proxy ? rssOf(proxy) : null };
  }
}

function rssOf(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : null;
}

/** CPU seconds (user + system) used by a process so far; `part` picks one of the two. */
export function cpuSeconds(pid, part = "both") {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const user = Number(fields[11]) / 100;
    const system = Number(fields[12]) / 100;
    return part === "user" ? user : part === "system" ? system : user + system;
  } catch {
    return null;
  }
}
