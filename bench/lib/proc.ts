// Servers for the benchmark: `wrangler dev` in its own process group on free loopback ports
// (scripts/lib/dev-server.ts), paused while another target is measured, and the resident memory
// of the workerd processes in that group.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { DevServer, freePorts, rssKiB, type DevServerOptions } from "../../scripts/lib/dev-server.ts";

export { freePorts };

/** How a scenario reaches a server: its base URLs (the proxy's, or the runtime's own entry). */
export interface Reachable {
  readonly name: string;
  readonly base: string;
  readonly wsBase: string;
}

export class Server extends DevServer implements Reachable {
  /** How many times wrangler reloaded the Worker since this object was made. */
  reloads = 0;

  /** `o` as for DevServer, always without local tracing and with the bench's output handling. */
  constructor(o: Omit<DevServerOptions, "onOutput" | "keepLines" | "localObservability">) {
    super({
      ...o,
      // Without local tracing: its per-event spans cost about 10x on storage (TOOLCHAIN.md).
      localObservability: false,
      keepLines: 300,
      onOutput: (text) => {
        if (process.env.BENCH_VERBOSE === "1") process.stderr.write(text.replace(/^/gm, `  [${o.name}] `));
        // wrangler dev rebuilds and restarts the Worker when a source file changes on disk (another
        // edit in the same tree): every socket drops and the runtime's memory starts over.
        this.reloads += (text.match(/Reloading local server/g) ?? []).length;
      },
    });
  }

  override tail(lines = 40): string {
    return super.tail(lines);
  }

  /** Lines of server output that look like errors (for the report; the app logs failures). */
  errorLines(): string[] {
    return this.output.filter((l) => /error|failed|exception/i.test(l) && !/^\s*$/.test(l));
  }

  /**
   * Stops wrangler's esbuild watcher (SIGSTOP) while this server is measured; `resume` (a SIGCONT
   * of the whole group) lets it go on. It polls every file of the bundle for changes (~1.2% of a
   * core for the app, in bursts; workers-sdk#11469), more for the app's bundle than for the
   * baselines', and on two cores that lands in the measured latency. While it is stopped a change
   * to a source file is not rebuilt, which a bench run does not want anyway.
   */
  pauseWatcher(): void {
    for (const { pid, cmdline } of this.groupProcesses()) {
      if (!/\besbuild\b/.test(cmdline) || !cmdline.includes("--service")) continue;
      try {
        process.kill(pid, "SIGSTOP");
      } catch {
        // exited meanwhile
      }
    }
  }

  /**
   * The workerd processes of this server: `runtime` runs the Worker and its Durable Objects (it
   * has the inspector), `proxy` is wrangler's entry runtime on the public port, which relays every
   * connection to it (it does not exist in production).
   */
  workerdProcesses(): { runtime: number | null; proxy: number | null } {
    const found: { runtime: number | null; proxy: number | null } = { runtime: null, proxy: null };
    for (const { pid, cmdline } of this.groupProcesses()) {
      if (!cmdline.includes("workerd") || !cmdline.includes("serve")) continue;
      if (cmdline.includes("--inspector-addr")) found.runtime = pid;
      else found.proxy = pid;
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
  async entry(): Promise<{ base: string; wsBase: string; port: number }> {
    const { runtime } = this.workerdProcesses();
    if (!runtime) throw new Error(`${this.name}: no runtime workerd process`);
    const inodes = new Set<string>();
    for (const fd of readdirSync(`/proc/${runtime}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${runtime}/fd/${fd}`));
        if (m?.[1]) inodes.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
    const ports: number[] = [];
    for (const line of readFileSync(`/proc/${runtime}/net/tcp`, "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address rem_address st ... inode (field 9); 0A = LISTEN, 0100007F = 127.0.0.1
      const [, local = "", , state, , , , , , inode = ""] = f;
      if (state === "0A" && local.startsWith("0100007F:") && inodes.has(inode)) ports.push(parseInt(local.slice("0100007F:".length), 16));
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

  /**
   * This server as the scenarios reach it without wrangler's proxy: the same object with `base`
   * and `wsBase` at the runtime's entry socket. A view, not a copy: stopping or restarting goes
   * to the server itself (and a restart moves the entry, so ask again after one).
   */
  async direct(): Promise<Server> {
    const { base, wsBase } = await this.entry();
    return Object.create(this, { base: { value: base }, wsBase: { value: wsBase } }) as Server;
  }

  /** Resident memory in bytes of the runtime and proxy workerd processes. */
  rss(): { runtime: number | null; proxy: number | null } {
    const { runtime, proxy } = this.workerdProcesses();
    return { runtime: rssBytes(runtime), proxy: rssBytes(proxy) };
  }
}

function rssBytes(pid: number | null): number | null {
  const kib = pid === null ? null : rssKiB(pid);
  return kib === null ? null : kib * 1024;
}

/** CPU seconds (user + system) used by a process so far; `part` picks one of the two. */
export function cpuSeconds(pid: number | null, part: "user" | "system" | "both" = "both"): number | null {
  if (pid === null) return null;
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
