// Notifies members' user objects of new messages, off the send path.
//
// The fan-out cursor (`fanout_seq`) only moves past a message once every recipient's object was
// told, so delivery is at-least-once; user objects deduplicate: by the highest seq relayed for
// inline calls (one pass at a time, in seq order), by (conversationId, seq) for queued jobs.
//
// Small conversations notify each member's object directly. Above `inlineMax` members, one RPC
// per member per batch would make the conversation object itself the bottleneck of a large
// group, so the work goes to a Queue in chunks of members, and the queue consumer (any number of
// Worker instances in parallel) makes the calls.
import type { Message } from "../../protocol";
import { relayedMessage, type ConversationSummary, type FanoutJob, type InboxEvent, type RelayedReceipt, type UserInbox } from "../contract";
import type { ConversationStore } from "./conversationStore";
import { QuietMembers, type LiveCopy } from "./quiet";
import { editTargetOf, withoutEditText } from "./actions";

/** A receipt waiting for the pass, with the accept order of the last socket open when it was broadcast. */
interface PendingReceipt {
  receipt: RelayedReceipt;
  order: number;
}

const BATCH = 100;
export const USERS_PER_JOB = 100;
// Queue messages are capped at 128 KB; stay well under with room for the user ids.
const EVENT_BYTES_PER_JOB = 64 * 1024;
// A single event larger than that (an MLS commit of a large group: up to MLS_COMMIT_TEXT_MAX,
// 112 KiB) rides alone in its jobs, with fewer recipients each, and each such job in its own batch.
const USERS_PER_LARGE_JOB = 20;
// sendBatch takes at most 100 messages and 256 KB.
const BATCH_BYTES = 200 * 1024;

export class Fanout {
  failures = 0;
  /**
   * Receipts to relay in the next pass: per user to tell, the latest receipt of each reader (a
   * receipt is a watermark, so a newer one makes an older one of the same reader redundant). They
   * ride on that pass's calls to the members' objects instead of one call per receipt and user:
   * all the devices of a conversation send their `delivered` on the same tick, and a call each
   * would be most of the conversation's work (docs/performance.md). In memory only: a receipt's
   * watermark is stored, and a device reads it on its next sync.
   */
  private pendingReceipts = new Map<string, Map<string, PendingReceipt>>();
  /** Members whose objects need no call while their devices watch this conversation live. */
  readonly quiet = new QuietMembers();
  /**
   * `liveCopies`: per member, the devices whose open dedupe conversation socket already got each
   * message above a seq (see ConversationDO.liveCopies); their user sockets need not repeat those.
   */
  constructor(
    private readonly store: ConversationStore,
    /** How a member's user object is reached. */
    private readonly users: (userId: string) => Pick<UserInbox, "deliver">,
    private readonly queue: Pick<Queue<FanoutJob>, "sendBatch">,
    private readonly inlineMax: number,
    private readonly liveCopies: () => Map<string, Record<string, LiveCopy>>,
  ) {}

  /**
   * Relays `receipt` to these users' objects in the next pass. `order`: the accept order of the
   * last socket open when the receipt was broadcast to the conversation's sockets.
   */
  noteReceipt(userIds: string[], receipt: RelayedReceipt, order: number): void {
    for (const userId of userIds) {
      let readers = this.pendingReceipts.get(userId);
      if (!readers) this.pendingReceipts.set(userId, (readers = new Map()));
      readers.set(receipt.userId, { receipt, order });
    }
  }

  /**
   * Delivers what is above the cursor up to `throughSeq`: full batches, then what is left once
   * (messages stored meanwhile wait for the next alarm, as one batch), and the pending receipts,
   * with the first batch's calls or in calls of their own. Returns false after a failure; the
   * receipts not yet relayed then wait for the retry.
   *
   * `inD1`: D1 holds everything up to `throughSeq`. Only then are quiet members skipped: a device
   * that opens a user socket meanwhile catches up from D1 after its `ready`, so what a skipped call
   * would have relayed must already be there.
   */
  async run(throughSeq = Number.POSITIVE_INFINITY, inD1 = false): Promise<boolean> {
    const receipts = this.pendingReceipts;
    this.pendingReceipts = new Map();
    // Each user's receipts go in the first call the pass makes to that user's object.
    const relayed = new Set<string>();
    const receiptsFor = (userId: string): PendingReceipt[] => {
      if (relayed.has(userId) || !receipts.has(userId)) return [];
      relayed.add(userId);
      return [...receipts.get(userId)!.values()];
    };
    const pass: Pass = { live: new Map(), receiptsFor, mayskip: inD1, now: Date.now() };
    let ok = false;
    try {
      if (!(await this.deliverMessages(throughSeq, pass))) return false;
      const rest = [...receipts.keys()].filter((userId) => !relayed.has(userId));
      if (rest.length > 0) {
        pass.live = this.liveCopies();
        await Promise.all(rest.map((userId) => this.callUnlessQuiet(userId, [], Number.POSITIVE_INFINITY, pass)));
      }
      this.failures = 0;
      return (ok = true);
    } catch (err) {
      this.fail(err);
      return false;
    } finally {
      // After a failure they all go back (relaying one twice is harmless: it is a watermark),
      // unless a newer receipt of the same reader came meanwhile.
      if (!ok) {
        for (const [userId, readers] of receipts) {
          for (const { receipt, order } of readers.values()) {
            if (!this.pendingReceipts.get(userId)?.has(receipt.userId)) this.noteReceipt([userId], receipt, order);
          }
        }
      }
    }
  }

  /** The message batches; each user's pending receipts go with its call. */
  private async deliverMessages(throughSeq: number, pass: Pass): Promise<boolean> {
    for (;;) {
      const meta = this.store.meta;
      if (!meta) return true;
      const page = this.store.messagesAfter(this.store.fanoutSeq(), BATCH).messages;
      const messages = page.filter((m) => m.seq <= throughSeq);
      if (messages.length === 0) return true;
      // Read in the same step as the page: a socket open now got every message of it live.
      pass.live = this.liveCopies();
      const summary: ConversationSummary = { id: meta.id, type: meta.type, title: meta.title, e2ee: meta.e2ee };
      const recipients = new Set(this.store.members.keys());
      // Removed members hear about their removal, too.
      for (const message of messages) if (message.kind === "system") for (const id of systemUserIds(message)) recipients.add(id);
      // A membership change refreshes every member's conversation list: nobody is skipped.
      const batch = messages.every((m) => m.kind !== "system") ? pass : { ...pass, mayskip: false };
      const inline = recipients.size <= this.inlineMax;
      try {
        for (const reader of this.readers([...recipients], messages)) {
          const events = eventsOf(reader.messages, summary);
          if (inline) await this.deliverInline(reader.userIds, events, messages[0]!.seq, batch);
          else await this.queueJobs(reader.userIds, events, messages[0]!.seq, batch);
        }
      } catch (err) {
        this.fail(err);
        return false;
      }
      this.failures = 0;
      this.store.setFanoutSeq(messages[messages.length - 1]!.seq);
      if (page.length < BATCH || messages.length < page.length) return true;
    }
  }

  /**
   * The recipients grouped by what they may read of `messages`: each their span (a member added
   * in this batch from the message that added them, a member removed in it through the message
   * that removed them, never what came after), and an edit of a message from before a member's
   * joining without its text (./actions.ts). Most batches have one group.
   */
  private readers(userIds: string[], messages: Message[]): { userIds: string[]; messages: Message[] }[] {
    const targets = messages.map(editTargetOf);
    // Without a membership change in the batch every recipient is a member from before it.
    if (targets.every((t) => t === null) && messages.every((m) => m.kind !== "system")) return [{ userIds, messages }];
    const groups = new Map<string, { userIds: string[]; messages: Message[] }>();
    for (const userId of userIds) {
      const member = this.store.members.get(userId);
      const former = member ? null : this.store.formerMember(userId);
      const from = member?.joinedSeq ?? former?.joinedSeq ?? 0;
      const through = member ? Number.POSITIVE_INFINITY : (former?.leftSeq ?? Number.POSITIVE_INFINITY);
      const readable = messages.map((m) => m.seq >= from && m.seq <= through);
      const unreadable = targets.map((t) => t !== null && t < from);
      const key = messages.map((_, i) => (!readable[i] ? 0 : unreadable[i] ? 1 : 2)).join("");
      let group = groups.get(key);
      if (!group) {
        const theirs = messages.flatMap((m, i) => (!readable[i] ? [] : [unreadable[i] ? withoutEditText(m) : m]));
        groups.set(key, (group = { userIds: [], messages: theirs }));
      }
      group.userIds.push(userId);
    }
    return [...groups.values()].filter((g) => g.messages.length > 0);
  }

  private fail(err: unknown): void {
    this.failures++;
    const id = this.store.meta?.id;
    console.warn(`fanout: conversation ${id} failed (${this.failures}):`, err instanceof Error ? err.message : String(err));
  }

  private async deliverInline(userIds: string[], events: InboxEvent[], firstSeq: number, pass: Pass): Promise<void> {
    // One call at a time per conversation, in seq order: user objects dedupe by a high-water mark.
    await Promise.all(userIds.map((userId) => this.callUnlessQuiet(userId, events, firstSeq, pass)));
  }

  /** Calls the user's object with these events and its pending receipts, unless it is quiet (see QuietMembers). */
  private async callUnlessQuiet(userId: string, events: InboxEvent[], firstSeq: number, pass: Pass): Promise<void> {
    const receipts = pass.receiptsFor(userId);
    const copies = pass.live.get(userId);
    if (pass.mayskip && this.quiet.covers(userId, copies, firstSeq, receipts.map((r) => r.order), pass.now)) return;
    const all = receipts.length > 0 ? [...events, ...receipts.map(({ receipt }): InboxEvent => ({ type: "receipt", receipt }))] : events;
    const answer = await this.users(userId).deliver(userId, all, true, liveOn(copies));
    this.quiet.answered(userId, answer, pass.now);
  }

  /**
   * Queued jobs for the members who are not quiet. Their receipts are not in the jobs: run() makes
   * those calls itself, to the objects that need them.
   */
  private async queueJobs(userIds: string[], events: InboxEvent[], firstSeq: number, pass: Pass): Promise<void> {
    const { live, now } = pass;
    const called = pass.mayskip ? userIds.filter((userId) => !this.quiet.covers(userId, live.get(userId), firstSeq, [], now)) : userIds;
    const jobs: FanoutJob[] = [];
    for (const eventChunk of chunkByBytes(events, EVENT_BYTES_PER_JOB)) {
      const perJob = utf8Length(eventChunk) > EVENT_BYTES_PER_JOB ? USERS_PER_LARGE_JOB : USERS_PER_JOB;
      for (let i = 0; i < called.length; i += perJob) {
        const chunk = called.slice(i, i + perJob);
        const liveOnOf = Object.fromEntries(chunk.flatMap((id) => (live.has(id) ? [[id, liveOn(live.get(id))]] : [])));
        jobs.push({ userIds: chunk, events: eventChunk, liveOn: liveOnOf, askedAt: now });
      }
    }
    // Two jobs a batch, or one when two would pass BATCH_BYTES.
    const sizes = jobs.map(utf8Length);
    for (let i = 0; i < jobs.length; ) {
      const count = i + 1 < jobs.length && sizes[i]! + sizes[i + 1]! <= BATCH_BYTES ? 2 : 1;
      await this.queue.sendBatch(jobs.slice(i, i + count).map((body) => ({ body })));
      i += count;
    }
  }
}

/** What one pass of the fan-out shares between its calls. */
interface Pass {
  /** Per member, its devices' dedupe sockets here (ConversationDO.liveCopies), read with each batch. */
  live: Map<string, Record<string, LiveCopy>>;
  /** The user's pending receipts, the first time it is asked for them in this pass. */
  receiptsFor: (userId: string) => PendingReceipt[];
  /** Whether quiet members may be skipped. */
  mayskip: boolean;
  now: number;
}

/** A user object's `liveOn`: per device, the seq above which its dedupe socket here got every message. */
function liveOn(copies: Record<string, LiveCopy> | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [deviceId, copy] of Object.entries(copies ?? {})) out[deviceId] = copy.after;
  return out;
}

function systemUserIds(message: Message): string[] {
  try {
    const parsed: unknown = JSON.parse(message.body ?? "{}");
    if (typeof parsed === "object" && parsed !== null && "userIds" in parsed && Array.isArray(parsed.userIds)) {
      return parsed.userIds.filter((id): id is string => typeof id === "string");
    }
  } catch {
    // Not ours to fail on: a system body is always written by us.
  }
  return [];
}

/** The events that relay `messages`, with one refresh of the conversation for any membership change in them. */
function eventsOf(messages: Message[], summary: ConversationSummary): InboxEvent[] {
  const events: InboxEvent[] = [];
  for (const message of messages) {
    events.push({ type: "message", message: relayedMessage(message), conversation: summary });
    if (message.kind === "system") events.push({ type: "changed", conversationId: summary.id });
  }
  return dedupeChanged(events);
}

/** Several membership changes in one batch need one refresh of the conversation, not several. */
function dedupeChanged(events: InboxEvent[]): InboxEvent[] {
  let seen = false;
  return events.filter((e) => e.type !== "changed" || (!seen && (seen = true)));
}

function utf8Length(value: unknown): number {
  return new TextEncoder().encode(JSON.stringify(value)).byteLength;
}

function chunkByBytes(events: InboxEvent[], maxBytes: number): InboxEvent[][] {
  const chunks: InboxEvent[][] = [];
  let current: InboxEvent[] = [];
  let bytes = 0;
  for (const event of events) {
    const size = JSON.stringify(event).length * 3;
    if (current.length > 0 && bytes + size > maxBytes) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(event);
    bytes += size;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}
