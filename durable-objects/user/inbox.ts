// The user's inbox: every new message of the user's conversations relayed to each of the user's
// devices once, receipts relayed to all of them, membership changes as the conversation's new
// state, and a push queued when no device is online (none for a conversation the user muted,
// but for a message that mentions them).
//
// Fan-out is at least once, so the inbox deduplicates. A conversation's own fan-out calls
// (`inOrder`) come one at a time, in seq order, each from the conversation's cursor on, so a
// message is new exactly when it is above the highest seq relayed from that conversation: one row
// per conversation (`delivered_through`), read and moved once per call, instead of a row per
// message, which was most of a fan-out call's cost. Queued fan-out (large groups) may arrive out of
// order and keeps one row per message (`delivered`), pruned after a day; the two never carry the
// same seq, since the conversation's cursor passes a batch once it is queued.
import type { UserServerFrame } from "../../protocol";
import { frameOf, messageOf, type CarriedMessage, type ConversationPeer, type InboxEvent, type LiveOn, type RelayedReceipt } from "../contract";
import { trySend } from "../lib/socketIo";
import type { DeviceSockets } from "./deviceSockets";
import type { PushJob } from "./pushJobs";

export const DELIVERED_RETENTION_MS = 24 * 3600_000;

export interface InboxDeps {
  sql: SqlStorage;
  sockets: DeviceSockets;
  /** Queues pushes (./pushJobs.ts enqueuePushes); a failure fails the call, which the conversation retries. */
  queuePushes(jobs: PushJob[]): Promise<void>;
  conversations(conversationId: string): Pick<ConversationPeer, "viewForNotification">;
  /** The user is no longer a member of the conversation (its pending Welcomes go). */
  left(conversationId: string): void;
  /** Whether the user muted the conversation (./conversationPrefs.ts): its messages push nothing, but mentions. */
  muted(conversationId: string, now: number): boolean;
}

export class Inbox {
  /**
   * `delivered_through` rows read or written during this wake-up. Only markDelivered writes the
   * table, and it updates this copy in the same synchronous step, so the copy cannot go stale.
   */
  private readonly deliveredThroughCache = new Map<string, number>();

  constructor(private readonly deps: InboxDeps) {}

  /**
   * Relays events to every device of `userId` (a message not to the device that sent it). `liveOn`
   * (from the conversation): devices whose dedupe conversation socket got every message above the
   * given seq live; their user sockets skip those messages. Receipts go to every device.
   */
  async deliver(userId: string, events: InboxEvent[], inOrder: boolean, liveOn: LiveOn, now: number): Promise<void> {
    const { sockets } = this.deps;
    const all = sockets.all();
    const online = sockets.live(now, all).length > 0;
    const messages: Array<Extract<InboxEvent, { type: "message" }>> = [];
    const receipts: RelayedReceipt[] = [];
    for (const event of events) {
      if (event.type === "receipt") {
        receipts.push(event.receipt);
      } else if (event.type === "hidden") {
        sockets.sendAll(all, JSON.stringify({ type: "hidden", conversationId: event.conversationId, seqs: event.seqs } satisfies UserServerFrame));
      } else if (event.type === "changed") {
        const conversation = await this.deps.conversations(event.conversationId).viewForNotification(userId);
        if (conversation) sockets.sendAll(all, JSON.stringify({ type: "conversation", conversation } satisfies UserServerFrame));
        if (conversation && !conversation.members.some((m) => m.userId === userId)) this.deps.left(conversation.id);
      } else {
        messages.push(event);
      }
    }
    if (!online) {
      // Pushes are queued before anything is marked delivered: a failed enqueue fails this call,
      // and the conversation's retry then finds the messages still fresh and queues them again.
      await this.deps.queuePushes(
        messages
          // Membership records, MLS commits and message actions push nothing (API.md, docs/api.md).
          .filter(({ message }) => message.senderId !== userId && message.kind !== "system" && message.kind !== "mls.commit" && message.kind !== "action")
          .filter(({ message }) => !this.wasDelivered(message, inOrder))
          .map(({ message, conversation }) => ({ userId, conversation, message: messageOf(message) }))
          // A muted conversation still notifies a message that mentions the user.
          .filter(({ message }) => (message.mentions?.includes(userId) ?? false) || !this.deps.muted(message.conversationId, now)),
      );
    }
    // What is fresh is decided and recorded in one synchronous step, so an overlapping retry still
    // relays each message once.
    const fresh = this.markDelivered(
      messages.map((e) => e.message),
      now,
      inOrder,
    );
    this.relay(fresh, liveOn);
    // After the messages they may refer to. Every device gets them: a dedupe conversation socket
    // also got each one live, but only if it was open when the receipt was stored.
    for (const receipt of receipts) sockets.sendAll(all, JSON.stringify({ type: "receipt", ...receipt } satisfies UserServerFrame));
  }

  /** Forgets the per-message rows of queued fan-out older than a day; returns the oldest left, if any. */
  prune(now: number): number | null {
    this.deps.sql.exec("DELETE FROM delivered WHERE at < ?", now - DELIVERED_RETENTION_MS);
    return this.deps.sql.exec<{ at: number | null }>("SELECT min(at) AS at FROM delivered").one().at;
  }

  /**
   * Sends each message's frame to the user's sockets but those of its sender's device and of the
   * devices in `liveOn` whose conversation socket got it live. Each device's sockets are looked up
   * once per call, not once per message.
   */
  private relay(messages: CarriedMessage[], liveOn: LiveOn): void {
    if (messages.length === 0) return;
    const { sockets } = this.deps;
    const all = sockets.all();
    const byDevice = new Map<string, WebSocket[]>();
    const socketsOf = (deviceId: string) => {
      let found = byDevice.get(deviceId);
      if (!found) byDevice.set(deviceId, (found = sockets.ofDevice(deviceId)));
      return found;
    };
    const live = Object.entries(liveOn);
    for (const message of messages) {
      const except = new Set(socketsOf(message.senderDeviceId));
      for (const [deviceId, after] of live) if (message.seq > after) for (const ws of socketsOf(deviceId)) except.add(ws);
      const frame = frameOf(message);
      for (const ws of all) if (!except.has(ws)) trySend(ws, frame);
    }
  }

  /** Records messages as delivered and returns those that were not already. */
  private markDelivered(messages: CarriedMessage[], now: number, inOrder: boolean): CarriedMessage[] {
    const { sql } = this.deps;
    if (inOrder) {
      const fresh: CarriedMessage[] = [];
      for (const [conversationId, ofConversation] of groupByConversation(messages)) {
        const through = this.deliveredThrough(conversationId);
        const unsent = ofConversation.filter((m) => m.seq > through);
        if (unsent.length === 0) continue;
        const seq = Math.max(...unsent.map((m) => m.seq));
        sql.exec(
          `INSERT INTO delivered_through (conversation_id, seq) VALUES (?, ?)
           ON CONFLICT (conversation_id) DO UPDATE SET seq = max(seq, excluded.seq)`,
          conversationId,
          seq,
        );
        this.deliveredThroughCache.set(conversationId, seq);
        fresh.push(...unsent);
      }
      return fresh;
    }
    // One statement per 30 messages rather than one per message.
    const fresh: CarriedMessage[] = [];
    for (let i = 0; i < messages.length; i += 30) {
      const chunk = messages.slice(i, i + 30);
      const inserted = new Set(
        sql
          .exec<{ conversation_id: string; seq: number }>(
            `INSERT OR IGNORE INTO delivered (conversation_id, seq, at) VALUES ${chunk.map(() => "(?, ?, ?)").join(", ")}
             RETURNING conversation_id, seq`,
            ...chunk.flatMap((m) => [m.conversationId, m.seq, now]),
          )
          .toArray()
          .map((r) => `${r.conversation_id}\n${r.seq}`),
      );
      for (const m of chunk) if (inserted.has(`${m.conversationId}\n${m.seq}`)) fresh.push(m);
    }
    return fresh;
  }

  private wasDelivered(message: CarriedMessage, inOrder: boolean): boolean {
    if (inOrder) return message.seq <= this.deliveredThrough(message.conversationId);
    return (
      this.deps.sql.exec("SELECT 1 FROM delivered WHERE conversation_id = ? AND seq = ?", message.conversationId, message.seq).toArray()
        .length > 0
    );
  }

  private deliveredThrough(conversationId: string): number {
    let seq = this.deliveredThroughCache.get(conversationId);
    if (seq === undefined) {
      seq =
        this.deps.sql
          .exec<{ seq: number }>("SELECT seq FROM delivered_through WHERE conversation_id = ?", conversationId)
          .toArray()[0]?.seq ?? 0;
      this.deliveredThroughCache.set(conversationId, seq);
    }
    return seq;
  }
}

function groupByConversation<M extends { conversationId: string }>(messages: M[]): Map<string, M[]> {
  const groups = new Map<string, M[]>();
  for (const m of messages) {
    const group = groups.get(m.conversationId);
    if (group) group.push(m);
    else groups.set(m.conversationId, [m]);
  }
  return groups;
}
