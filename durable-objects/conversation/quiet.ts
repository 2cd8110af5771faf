// Which members' objects the fan-out may skip: members whose every device online is already
// watching this conversation, so their objects would have nothing to relay and nobody to push.
//
// In a busy group most members have the conversation open. Their devices get each message and
// receipt live on a dedupe conversation socket, so the call to their user object per pass only
// moves its dedupe cursor. Those calls would be most of a pass's work (docs/performance.md), and
// at scale each is a billed request between two objects.
//
// A member's object answers each in-order call with the devices holding its user sockets (while
// at least one is live), its socket epoch, and whether each of those devices got the call's
// messages live on a dedupe socket here (`watched`: the object then asks this conversation what
// it skipped before a sync or list page, so only such an answer lets calls be skipped; a device
// that opens its dedupe socket later costs one more call). In a group large enough for queued
// fan-out, the queue consumer reports the answers to its calls back to the conversation. It then
// skips that member while each of those devices holds a dedupe socket here that got the pass's
// messages and receipts live, for at most QUIET_HINT_MS before asking again. A device of that
// user that opens a user socket meanwhile is new to the answer, so the user object first tells
// every conversation it answered (memberOnline, with a new epoch) and only then lets the socket
// in; the device syncs after its `ready`. An answer from before that epoch that arrives late is
// ignored.
import { QUIET_HINT_MS, type DeliveryAnswer } from "../contract";

/** A device's dedupe socket here: it got every message above `after` live, and was accepted `order`-th. */
export interface LiveCopy {
  after: number;
  order: number;
}

interface Hint {
  devices: string[];
  epoch: number;
  until: number;
  /** The member's object watches this conversation (an earlier object's answer omits it, and always watched). */
  watched: boolean;
}

export class QuietMembers {
  private readonly hints = new Map<string, Hint>();
  /** Per member, the latest epoch its object announced: answers from before it are stale. */
  private readonly epochs = new Map<string, number>();
  /**
   * `since`: when this wake-up began (now, for the conversation's own; a test passes its clock).
   * In memory only: the epochs announced before it are not known here.
   */
  constructor(private readonly since = Date.now()) {}

  /** Records a member object's answer to a call made at `now`. */
  answered(userId: string, answer: DeliveryAnswer | null | undefined, now: number): void {
    // Queued jobs report in any order: an answer to an earlier call says less than the one held.
    if ((this.hints.get(userId)?.until ?? 0) > now + QUIET_HINT_MS) return;
    if (!answer || answer.devices.length === 0 || answer.epoch < (this.epochs.get(userId) ?? 0)) {
      this.hints.delete(userId);
      return;
    }
    this.hints.set(userId, { devices: answer.devices, epoch: answer.epoch, until: now + QUIET_HINT_MS, watched: answer.watched !== false });
  }

  /**
   * Answers to the calls of queued jobs, which reach the conversation after the job, so possibly
   * after a device came online (its epoch then sets them aside, as for an answer) or after this
   * object was evicted. A new wake-up has lost the epochs announced before it: it takes only
   * answers to calls it asked for itself.
   */
  reported(answers: Record<string, DeliveryAnswer | null>, askedAt: number): void {
    if (askedAt < this.since) return;
    for (const [userId, answer] of Object.entries(answers)) this.answered(userId, answer, askedAt);
  }

  /** The devices the member's object last named, while that answer holds (for operators and tests). */
  answerFor(userId: string, now: number): Hint | null {
    const hint = this.hints.get(userId);
    return hint && hint.until > now ? { ...hint } : null;
  }

  /** A device of this member is about to open a user socket: forget what its object said before. */
  memberOnline(userId: string, epoch: number): void {
    this.epochs.set(userId, Math.max(epoch, this.epochs.get(userId) ?? 0));
    const hint = this.hints.get(userId);
    if (hint && hint.epoch < epoch) this.hints.delete(userId);
  }

  /**
   * Whether the member's object watches this conversation and every device it last named holds a
   * dedupe socket here that got the messages from `firstSeq` on live and was open when each
   * receipt (by its accept order) was broadcast.
   */
  covers(userId: string, copies: Record<string, LiveCopy> | undefined, firstSeq: number, receiptOrders: number[], now: number): boolean {
    const hint = this.hints.get(userId);
    if (!hint || !hint.watched || hint.until <= now || !copies) return false;
    const earliestReceipt = receiptOrders.length > 0 ? Math.min(...receiptOrders) : Number.POSITIVE_INFINITY;
    return hint.devices.every((deviceId) => {
      const copy = copies[deviceId];
      return copy !== undefined && copy.after < firstSeq && copy.order <= earliestReceipt;
    });
  }
}
