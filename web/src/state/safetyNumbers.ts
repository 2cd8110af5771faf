// Safety numbers as the client keeps and shows them (docs/e2ee.md "Safety numbers"): which keys
// go in, how the 60 digits are grouped, the "verified" mark this device keeps per contact, and
// whether a verified contact's number has changed since. No DOM, no crypto: the digits themselves
// come from e2ee/safetyNumber.ts.
import * as z from "zod";
import { fromBase64Url } from "../../../protocol/mls";

/** What this device remembers about a contact whose safety number its user verified. */
export const VerifiedMark = z.object({
  userId: z.string(),
  /** The 60 digits verified. */
  number: z.string().regex(/^\d{60}$/),
  /** The two halves it was made of (30 digits each), to tell whose devices changed. */
  mine: z.string().regex(/^\d{30}$/),
  theirs: z.string().regex(/^\d{30}$/),
  verifiedAt: z.number(),
});
export type VerifiedMark = z.infer<typeof VerifiedMark>;

/** The marks as stored in the account's local store: one per contact. */
export const VerifiedMarks = z.array(VerifiedMark);

/** The safety number with a contact as last computed on this device. */
export type SafetyNumberView =
  | { state: "loading" }
  | { state: "ready"; number: string; mine: string; theirs: string }
  /** One side (or both) has no device with a registered signature key: there is no number yet. */
  | { state: "no-keys"; mine: boolean; theirs: boolean }
  | { state: "error"; message: string };

export type SafetyStatus =
  | { kind: "unverified" }
  /** Verified, and the number is the one verified (or it could not be checked yet). */
  | { kind: "verified"; mark: VerifiedMark }
  /** Verified once, and the number is now another: `theirs` / `mine` say whose devices changed. */
  | { kind: "changed"; mark: VerifiedMark; theirs: boolean; mine: boolean };

/** Whether a contact is verified, and whether their number still is the verified one. */
export function safetyStatus(mark: VerifiedMark | undefined, current: SafetyNumberView | undefined): SafetyStatus {
  if (!mark) return { kind: "unverified" };
  if (current?.state === "ready") {
    if (current.number === mark.number) return { kind: "verified", mark };
    return { kind: "changed", mark, theirs: current.theirs !== mark.theirs, mine: current.mine !== mark.mine };
  }
  // A side without any key now had one when verified: its devices changed.
  if (current?.state === "no-keys") return { kind: "changed", mark, theirs: current.theirs, mine: current.mine };
  return { kind: "verified", mark };
}

/** Why a verified number changed: "Bob added or removed a device", or the same of the user, or of both. */
export function changeReason(name: string, status: { theirs: boolean; mine: boolean }): string {
  if (status.theirs && status.mine) return "both of you added or removed devices";
  if (status.mine) return "you added or removed a device";
  return `${name} added or removed a device`;
}

/** The 60 digits as 12 groups of 5, the way both users read them to each other. */
export function groupDigits(number: string): string[] {
  return number.match(/\d{5}/g) ?? [];
}

/**
 * The signature keys that go into a user's half: those their devices registered (a device that
 * has not registered one adds nothing). Sorting is fingerprintHalf's.
 */
export function deviceKeys(devices: readonly { signatureKey: string | null }[]): Uint8Array[] {
  const keys: Uint8Array[] = [];
  for (const d of devices) {
    const key = d.signatureKey ? fromBase64Url(d.signatureKey) : null;
    if (key && key.length === 32) keys.push(key);
  }
  return keys;
}

/** A stable name of a key set, to reuse a half already computed for exactly these keys. */
export function keySetId(userId: string, devices: readonly { signatureKey: string | null }[]): string {
  const keys = devices.flatMap((d) => (d.signatureKey ? [d.signatureKey] : [])).sort();
  return `${userId}:${keys.join(",")}`;
}
