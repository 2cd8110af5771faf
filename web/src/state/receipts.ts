// Ticks: what a sender sees for each of their messages, from the members' receipt watermarks.
import type { Receipt } from "../../../protocol";

export type Tick = "pending" | "failed" | "sent" | "delivered" | "read";

export interface TickInfo {
  tick: Tick;
  /** Other members whose readSeq reached the message. */
  readBy: number;
  deliveredTo: number;
  /** Other members at the time (the sender excluded). */
  others: number;
}

type Watermarks = Pick<Receipt, "deliveredSeq" | "readSeq">;

/**
 * A message is delivered (read) when every other member's deliveredSeq (readSeq) reached its seq.
 * `read` implies `delivered` on the server; the max() keeps that true for a stale local copy too.
 */
export function tickFor(
  seq: number,
  me: string,
  memberIds: readonly string[],
  receipts: ReadonlyMap<string, Watermarks>,
): TickInfo {
  const others = memberIds.filter((id) => id !== me);
  let readBy = 0;
  let deliveredTo = 0;
  for (const id of others) {
    const r = receipts.get(id);
    if (!r) continue;
    if (r.readSeq >= seq) readBy++;
    if (Math.max(r.deliveredSeq, r.readSeq) >= seq) deliveredTo++;
  }
  const n = others.length;
  const tick: Tick = n > 0 && readBy === n ? "read" : n > 0 && deliveredTo === n ? "delivered" : "sent";
  return { tick, readBy, deliveredTo, others: n };
}

/** Applies a receipt event: watermarks only move forward, whatever order events arrive in. */
export function applyReceipt(
  receipts: ReadonlyMap<string, Receipt>,
  incoming: Receipt,
): Map<string, Receipt> {
  const current = receipts.get(incoming.userId);
  const next = new Map(receipts);
  if (!current) {
    next.set(incoming.userId, incoming);
    return next;
  }
  const readSeq = Math.max(current.readSeq, incoming.readSeq);
  const deliveredSeq = Math.max(current.deliveredSeq, incoming.deliveredSeq, readSeq);
  if (readSeq === current.readSeq && deliveredSeq === current.deliveredSeq) return receipts as Map<string, Receipt>;
  next.set(incoming.userId, { userId: incoming.userId, readSeq, deliveredSeq, updatedAt: Math.max(current.updatedAt, incoming.updatedAt) });
  return next;
}

/** A screen reader label and a visible short text for a tick, e.g. "Read by 2 of 3". */
export function tickLabel(info: TickInfo, group: boolean): string {
  switch (info.tick) {
    case "pending":
      return "Waiting to send";
    case "failed":
      return "Not sent";
    case "read":
      return group ? `Read by all ${info.others}` : "Read";
    case "delivered":
      return group && info.readBy > 0 ? `Read by ${info.readBy} of ${info.others}` : "Delivered";
    case "sent":
      return group && info.readBy > 0 ? `Read by ${info.readBy} of ${info.others}` : "Sent";
  }
}
