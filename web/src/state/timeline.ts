// Ordering, merging and gap detection for one conversation's messages. Plain functions over
// arrays, no DOM: the client's views and web/test/state.test.ts both use them.
import { ActionEvent, type Message, type Reaction } from "../../../protocol";

/**
 * Merges messages into a list sorted by `seq`. The server is the truth: a second copy of a seq
 * replaces the first (it may carry a newer thread summary). A reply seen for the first time
 * bumps its root's thread summary, so reply counts stay right between fetches.
 * Runtime: O(n) when the incoming messages are newer than the list (the live case), else O(n log n).
 */
export function mergeMessages(existing: readonly Message[], incoming: readonly Message[]): Message[] {
  if (incoming.length === 0) return existing as Message[];
  const last = existing.length > 0 ? existing[existing.length - 1]!.seq : 0;
  const fresh = [...new Map(incoming.map((m) => [m.seq, m])).values()];
  let merged: Message[];
  if (fresh.every((m) => m.seq > last)) {
    merged = [...existing, ...fresh.sort((a, b) => a.seq - b.seq)];
  } else {
    const bySeq = new Map<number, Message>();
    for (const m of existing) bySeq.set(m.seq, m);
    for (const m of fresh) {
      const held = bySeq.get(m.seq);
      bySeq.set(m.seq, held ? current(held, m) : m);
    }
    merged = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
  }
  const known = new Set(existing.map((m) => m.seq));
  const newReplies = fresh.filter((m) => m.threadRootSeq !== null && !known.has(m.seq));
  const threaded = newReplies.length === 0 ? merged : newReplies.reduce(bumpThread, merged);
  // Action events newer than everything held change their targets here. An older one is already
  // reflected in the targets the server answered (it rewrites a target with each action).
  const live = fresh.filter((m) => m.kind === "action" && m.seq > last && !known.has(m.seq)).sort((a, b) => a.seq - b.seq);
  return live.length === 0 ? threaded : live.reduce(applyAction, threaded);
}

/**
 * Of two copies of one message, the current one. A copy can arrive late (a sync page from the
 * lagging index, the other socket's relay), so the later revision wins and a delete for me is
 * never undone.
 */
function current(held: Message, incoming: Message): Message {
  const latest = (incoming.revisedSeq ?? 0) >= (held.revisedSeq ?? 0) ? incoming : held;
  return held.hidden && !latest.hidden ? withoutContent(latest) : latest;
}

/** The message as its reader sees it after deleting it for themself: its place kept, its content gone. */
export function withoutContent(message: Message): Message {
  const { ciphertext: _c, commit: _m, ...rest } = message;
  return { ...rest, body: null, media: [], hidden: true };
}

/** An `action` message's body, or null if it is not one. */
export function parseActionEvent(body: string | null): ActionEvent | null {
  try {
    const parsed = ActionEvent.safeParse(JSON.parse(body ?? "null"));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/** Whether a message can be a conversation's preview: commits, actions and thread replies cannot. */
export const isPreviewable = (m: Message): boolean => m.kind !== "mls.commit" && m.kind !== "action" && m.threadRootSeq === null;

/** One action event applied to its target in a sorted list (docs/api.md, Message actions). */
export function applyAction(messages: Message[], event: Message): Message[] {
  const action = parseActionEvent(event.body);
  if (!action) return messages;
  const i = binarySearch(messages, action.targetSeq);
  if (i < 0) return messages;
  const target = messages[i]!;
  // Already in the copy held (the server folded it in before sending that copy).
  if ((target.revisedSeq ?? 0) >= event.seq) return messages;
  let next: Message;
  switch (action.type) {
    case "edit":
      if (action.body === undefined) return messages;
      next = { ...target, body: action.body, editedAt: event.createdAt };
      break;
    case "delete": {
      const { mentions: _m, reactions: _r, pinned: _p, ciphertext: _c, ...kept } = target;
      next = { ...kept, body: null, media: [], deletedAt: event.createdAt };
      break;
    }
    case "react":
      next = { ...target, reactions: reacted(target.reactions ?? [], action.emoji, event.senderId, action.on) };
      if (next.reactions!.length === 0) delete next.reactions;
      break;
    case "pin":
      if (action.on) next = target.pinned ? target : { ...target, pinned: { by: event.senderId, at: event.createdAt } };
      else {
        const { pinned: _p, ...rest } = target;
        next = rest;
      }
      break;
  }
  const out = messages.slice();
  out[i] = next === target ? target : { ...next, revisedSeq: event.seq };
  return out;
}

function reacted(reactions: Reaction[], emoji: string, userId: string, on: boolean): Reaction[] {
  const held = reactions.some((r) => r.emoji === emoji && r.userIds.includes(userId));
  if (on === held) return reactions;
  if (!on) return reactions.map((r) => (r.emoji === emoji ? { emoji, userIds: r.userIds.filter((id) => id !== userId) } : r)).filter((r) => r.userIds.length > 0);
  return reactions.some((r) => r.emoji === emoji)
    ? reactions.map((r) => (r.emoji === emoji ? { emoji, userIds: [...r.userIds, userId] } : r))
    : [...reactions, { emoji, userIds: [userId] }];
}

function bumpThread(messages: Message[], reply: Message): Message[] {
  const rootSeq = reply.threadRootSeq;
  if (rootSeq === null) return messages;
  const i = binarySearch(messages, rootSeq);
  if (i < 0) return messages;
  const root = messages[i]!;
  // A root fetched after the reply already counts it.
  if (root.thread && root.thread.lastReplySeq >= reply.seq) return messages;
  const thread = {
    replyCount: (root.thread?.replyCount ?? 0) + 1,
    lastReplySeq: reply.seq,
    lastReplyAt: reply.createdAt,
  };
  const out = messages.slice();
  out[i] = { ...root, thread };
  return out;
}

export function binarySearch(messages: readonly { seq: number }[], seq: number): number {
  let lo = 0;
  let hi = messages.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const s = messages[mid]!.seq;
    if (s === seq) return mid;
    if (s < seq) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** Seq ranges missing inside a sorted list (inclusive bounds), e.g. [1,2,5,6,9] gives [[3,4],[7,8]]. */
export function findGaps(messages: readonly { seq: number }[]): Array<[number, number]> {
  const gaps: Array<[number, number]> = [];
  for (let i = 1; i < messages.length; i++) {
    const prev = messages[i - 1]!.seq;
    const cur = messages[i]!.seq;
    if (cur > prev + 1) gaps.push([prev + 1, cur - 1]);
  }
  return gaps;
}

/**
 * The highest seq up to which the list is contiguous from its first message: the `after=` to
 * resume from. Everything above a hole is re-fetched, which is cheap and keeps the rule simple.
 */
export function resumePoint(messages: readonly { seq: number }[]): number {
  if (messages.length === 0) return 0;
  const gaps = findGaps(messages);
  return gaps.length > 0 ? gaps[0]![0] - 1 : messages[messages.length - 1]!.seq;
}

/**
 * Whether a live message leaves a hole after what we hold: then the client fetches `after=`
 * the resume point instead of showing messages out of order.
 */
export function opensGap(messages: readonly { seq: number }[], incomingSeq: number): boolean {
  if (messages.length === 0) return false;
  return incomingSeq > messages[messages.length - 1]!.seq + 1;
}

// ---------------------------------------------------------------------------------------------
// Grouping for display

export interface TimelineEntry {
  key: string;
  senderId: string;
  createdAt: number;
  kind: string;
}

export type TimelineItem<T extends TimelineEntry> =
  | { type: "day"; key: string; day: string; at: number }
  | { type: "unread"; key: string }
  | { type: "entry"; key: string; entry: T; first: boolean; last: boolean };

export interface TimelineOptions {
  /** The key of the first unread entry; an "unread" divider goes before it. */
  firstUnreadKey?: string | null;
  /** Consecutive entries by one sender closer than this form a group. */
  groupWindowMs?: number;
  /** The calendar day of a time, in the viewer's zone. */
  dayOf?: (t: number) => string;
}

export const localDay = (t: number): string => {
  const d = new Date(t);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
};

/** Day dividers, an unread divider, and sender groups (first/last flags drive avatars and corners). */
export function buildTimeline<T extends TimelineEntry>(entries: readonly T[], options: TimelineOptions = {}): TimelineItem<T>[] {
  const windowMs = options.groupWindowMs ?? 5 * 60_000;
  const dayOf = options.dayOf ?? localDay;
  const items: TimelineItem<T>[] = [];
  let prev: T | null = null;
  let prevDay = "";
  for (const entry of entries) {
    const day = dayOf(entry.createdAt);
    let breakGroup = prev === null || entry.kind === "system" || prev.kind === "system";
    if (day !== prevDay) {
      items.push({ type: "day", key: `day:${day}`, day, at: entry.createdAt });
      prevDay = day;
      breakGroup = true;
    }
    if (options.firstUnreadKey === entry.key) {
      items.push({ type: "unread", key: "unread" });
      breakGroup = true;
    }
    if (!breakGroup && prev && (prev.senderId !== entry.senderId || entry.createdAt - prev.createdAt > windowMs)) {
      breakGroup = true;
    }
    items.push({ type: "entry", key: entry.key, entry, first: breakGroup, last: true });
    if (!breakGroup) markNotLast(items, items.length - 2);
    prev = entry;
  }
  return items;
}

function markNotLast<T extends TimelineEntry>(items: TimelineItem<T>[], index: number): void {
  const item = items[index];
  if (item?.type === "entry") item.last = false;
}
