// Safety numbers: computing the number with a contact from both users' device keys
// (`GET /users/:id/devices`), the "verified" marks this device keeps per contact in the account's
// local store, and re-checking verified contacts so that a changed number shows a warning.
// The computation (iterated SHA-512, e2ee/safetyNumber.ts) is loaded on first use.
import * as z from "zod";
import { DeviceWithKey } from "../../../protocol";
import { ApiRequestError, type Api } from "../lib/api";
import { VerifiedMarks, deviceKeys, keySetId, safetyStatus, type SafetyNumberView, type SafetyStatus, type VerifiedMark } from "../state/safetyNumbers";
import type { Clock } from "./browser";
import type { StoreCore } from "./storeCore";

/** The local store's key of the marks (VerifiedMarks). */
export const VERIFIED_KEY = "safety:verified";

const DevicesAnswer = z.object({ devices: z.array(DeviceWithKey) });

type Compute = Pick<typeof import("../e2ee/safetyNumber"), "fingerprintHalf" | "joinHalves">;

export class SafetyNumbers {
  /** Halves already computed, by key set (keySetId): 5,200 hashes are worth not repeating. */
  private readonly halves = new Map<string, Promise<string>>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private compute: Promise<Compute> | null = null;

  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly clock: Pick<Clock, "now">,
    private readonly loadCompute: () => Promise<Compute> = () => import("../e2ee/safetyNumber"),
  ) {}

  private get safety() {
    return this.core.state.safety;
  }

  /** The marks this device keeps, from the account's local store. */
  async load(): Promise<void> {
    const marks = VerifiedMarks.safeParse(await this.core.db?.get(VERIFIED_KEY));
    if (marks.success) for (const mark of marks.data) this.safety.marks.set(mark.userId, mark);
    this.core.emit();
  }

  view(userId: string): SafetyNumberView | undefined {
    return this.safety.numbers.get(userId);
  }

  status(userId: string): SafetyStatus {
    return safetyStatus(this.safety.marks.get(userId), this.safety.numbers.get(userId));
  }

  /** Computes the number with `userId` afresh from both users' current devices. */
  refresh(userId: string): Promise<void> {
    const running = this.inFlight.get(userId);
    if (running) return running;
    const done = this.computeNumber(userId).finally(() => this.inFlight.delete(userId));
    this.inFlight.set(userId, done);
    return done;
  }

  /** Re-checks the verified contacts among `userIds` (a chat opening, the page shown again). */
  check(userIds: readonly string[]): Promise<void> {
    const verified = [...new Set(userIds)].filter((id) => id !== this.core.me && this.safety.marks.has(id));
    return Promise.all(verified.map((id) => this.refresh(id))).then(() => undefined);
  }

  /** Marks the contact verified with the number shown now. */
  async verify(userId: string): Promise<void> {
    const current = this.safety.numbers.get(userId);
    if (current?.state !== "ready") return;
    const mark: VerifiedMark = { userId, number: current.number, mine: current.mine, theirs: current.theirs, verifiedAt: this.clock.now() };
    await this.save((marks) => marks.set(userId, mark));
  }

  async clear(userId: string): Promise<void> {
    await this.save((marks) => marks.delete(userId));
  }

  /** Changes the stored marks as read now (another tab may have changed them), then the state's. */
  private async save(change: (marks: Map<string, VerifiedMark>) => void): Promise<void> {
    const db = this.core.db;
    const stored = VerifiedMarks.safeParse(await db?.get(VERIFIED_KEY));
    const marks = stored.success ? new Map(stored.data.map((m) => [m.userId, m])) : new Map(this.safety.marks);
    change(marks);
    await db?.set(VERIFIED_KEY, [...marks.values()]);
    this.safety.marks = marks;
    this.core.emit();
  }

  private async computeNumber(userId: string): Promise<void> {
    const me = this.core.me;
    const numbers = this.safety.numbers;
    if (!numbers.has(userId) || numbers.get(userId)?.state === "error") numbers.set(userId, { state: "loading" });
    this.core.emit();
    try {
      const [mine, theirs] = await Promise.all([this.devices(me), this.devices(userId)]);
      const myKeys = deviceKeys(mine);
      const theirKeys = deviceKeys(theirs);
      if (myKeys.length === 0 || theirKeys.length === 0) {
        numbers.set(userId, { state: "no-keys", mine: myKeys.length === 0, theirs: theirKeys.length === 0 });
      } else {
        const compute = await (this.compute ??= this.loadCompute());
        const [myHalf, theirHalf] = await Promise.all([this.half(compute, me, mine, myKeys), this.half(compute, userId, theirs, theirKeys)]);
        numbers.set(userId, { state: "ready", number: compute.joinHalves(myHalf, theirHalf), mine: myHalf, theirs: theirHalf });
      }
    } catch (err) {
      this.compute = null;
      // A number already shown stays (offline, it is still the last one known).
      if (numbers.get(userId)?.state === "loading") {
        numbers.set(userId, { state: "error", message: err instanceof ApiRequestError ? err.message : "Could not reach the server. Try again when you are online." });
      }
    }
    this.core.emit();
  }

  private async devices(userId: string) {
    const { devices } = await this.api.call("GET", `/users/${encodeURIComponent(userId)}/devices`, DevicesAnswer);
    return devices;
  }

  private half(compute: Compute, userId: string, devices: readonly { signatureKey: string | null }[], keys: Uint8Array[]): Promise<string> {
    const id = keySetId(userId, devices);
    let half = this.halves.get(id);
    if (!half) {
      half = compute.fingerprintHalf(userId, keys);
      this.halves.set(id, half);
      half.catch(() => this.halves.delete(id));
    }
    return half;
  }
}
