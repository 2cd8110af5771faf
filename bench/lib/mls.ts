// Runs the bench's MLS client (bench/lib/mlsClient.ts) in a child process: the client engine
// needs Node's type transform (it has constructor parameter properties) and an extensionless
// resolver (bench/lib/extensionless.ts). The child gets its task on stdin and answers on stdout.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { CostsTask, E2eeGroup, GroupCosts, GroupsTask, PlaintextCosts } from "./mlsClient.ts";

export type { E2eeGroup, GroupCosts, PlaintextCosts };

const here = (name: string) => fileURLToPath(new URL(name, import.meta.url));

function runChild<T>(task: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--experimental-transform-types", "--no-warnings", "--import", here("./extensionless.ts"), here("./mlsClient.ts")], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    const out: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`bench/lib/mlsClient.ts exited with ${code}`));
      try {
        resolve(JSON.parse(Buffer.concat(out).toString()) as T);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
    child.stdin.end(JSON.stringify(task));
  });
}

/** S8: the client engine's costs for each group size, and a plaintext client's for the same payload. */
export function mlsCosts(task: CostsTask): Promise<{ groups: GroupCosts[]; plaintext: PlaintextCosts }> {
  return runChild({ mode: "costs", costs: task });
}

/** S7: E2EE groups of `devices` on the server, each with a pool of the first device's ciphertexts. */
export function e2eeGroups(task: GroupsTask): Promise<E2eeGroup[]> {
  return runChild({ mode: "groups", groups: task });
}
