// Servers started by our scripts (smoke test, benchmarks) run in their own process group
// (`spawn(..., { detached: true })`), so stopping one stops wrangler, esbuild and every workerd
// it started, not just the npm at its top.

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Sends `signal` to process group `pgid`; a group that is already gone is not an error. */
export function signalGroup(pgid, signal) {
  try {
    process.kill(-pgid, signal);
  } catch (err) {
    if (err.code !== "ESRCH") throw err;
  }
}

export function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * SIGTERM to the group, SIGKILL after `graceMs` if anything is left (`onKill` is told first),
 * then waits up to `killWaitMs` for the group to go.
 */
export async function stopGroup(pgid, { graceMs = 5_000, killWaitMs = 3_000, onKill = () => {} } = {}) {
  signalGroup(pgid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (groupAlive(pgid) && Date.now() < deadline) await sleep(100);
  if (!groupAlive(pgid)) return;
  onKill();
  signalGroup(pgid, "SIGKILL");
  const killDeadline = Date.now() + killWaitMs;
  while (groupAlive(pgid) && Date.now() < killDeadline) await sleep(50);
}
