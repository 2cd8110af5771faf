// Feeds the conversation's changes into the D1 directory: the messages of the log above
// `d1_seq`, and the outbox rows (conversation, members, thread summaries, receipts).
//
// Every write here is an idempotent upsert, so a batch that reached D1 but whose cursor and rows
// were not yet updated here (an eviction between the two) is simply written again. Rows and
// messages are applied in the order they happened (each row after the messages up to its
// `at_seq`) inside one D1 batch (one transaction), and a batch ends only where that order allows,
// so D1 never sees a member removed before it was added, nor a message before the member_put
// that precedes it.
import type { Message } from "../../protocol";
import type { ConversationStore, OutboxRow } from "./conversationStore";
import { annotationsOf } from "./actionsStore";

/** The part of D1 the outbox uses (a test passes one that fails, to simulate an outage). */
export type D1Writer = Pick<D1Database, "prepare" | "batch">;

/** The D1 shard holding the rows keyed by a conversation or media id (kernel/d1/shards.ts). */
export type D1Route = (key: string) => D1Writer;

/**
 * Takes away the shares a deleted message made here, and erases the media items D1 then shares
 * nowhere (R2 and their rows; kernel/d1/mediaRecords.ts eraseUnsharedMedia). Throws to be retried.
 */
export type MediaEraser = (mediaIds: string[]) => Promise<unknown>;

// D1 and DO SQLite refuse statements with more than 100 bound parameters.
/** Bound parameters of one message in the D1 insert (tests read the inserts back by it). */
export const MESSAGE_PARAMS = 16;
const MESSAGES_PER_INSERT = Math.floor(100 / MESSAGE_PARAMS);

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_MAX_MS = 60_000;

export function backoffDelay(failures: number, random = Math.random()): number {
  const exp = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(failures, 16));
  // Full jitter on the upper half, so many objects retrying after one D1 outage spread out.
  return Math.round(exp / 2 + (exp / 2) * random);
}

export class Outbox {
  /** Consecutive failed flushes; the retry delay grows with it. Reset by a success. */
  failures = 0;
  private running: Promise<boolean> | null = null;

  constructor(
    private readonly store: ConversationStore,
    /** How D1 is reached, asked at each write. */
    private readonly d1: () => D1Writer,
    private readonly batchSize: number,
    private readonly eraseMedia: MediaEraser = async () => {},
  ) {}

  /**
   * Writes what is queued to D1: everything (`untilEmpty`), or full batches and then what is left
   * once, so that rows stored meanwhile wait for the next alarm and go as one batch. Returns false
   * when D1 failed (the rows stay queued). One flush runs at a time.
   */
  async flush(untilEmpty = true): Promise<boolean> {
    while (this.running) await this.running;
    this.running = this.drain(untilEmpty).finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async drain(untilEmpty: boolean): Promise<boolean> {
    for (;;) {
      const meta = this.store.meta;
      if (!meta) return true;
      const d1Seq = this.store.d1Seq();
      let through = Math.min(meta.lastSeq, d1Seq + this.batchSize);
      const rows: OutboxRow[] = [];
      for (const row of this.store.outboxBatch(this.batchSize + 1)) {
        // Rows are in the order they were queued, so `atSeq` never decreases along them. A row
        // that does not fit bounds the messages: those after it must not reach D1 before it.
        if (rows.length === this.batchSize || row.atSeq > through) {
          through = Math.min(through, row.atSeq);
          break;
        }
        rows.push(row);
      }
      const messages = through > d1Seq ? this.store.messagesAfter(d1Seq, through - d1Seq).messages : [];
      if (rows.length === 0 && messages.length === 0) return true;
      try {
        const db = this.d1();
        await db.batch(this.statements(db, rows, messages));
        // After the batch: this conversation's shares of the items are taken away, and whatever no
        // other conversation shares is erased. A failure leaves the rows queued, and the retry does
        // both again.
        const erased = rows.flatMap((r) => (r.kind === "media_erase" ? r.payload.mediaIds : []));
        if (erased.length > 0) await this.eraseMedia(erased);
      } catch (err) {
        this.failures++;
        console.warn(
          `outbox: D1 write failed for conversation ${meta.id} (${rows.length} rows and ${messages.length} messages queued, failure ${this.failures}):`,
          err instanceof Error ? err.message : String(err),
        );
        return false;
      }
      this.failures = 0;
      if (rows.length > 0) this.store.deleteOutboxThrough(rows[rows.length - 1]!.id);
      if (through > d1Seq) this.store.setD1Seq(through);
      const full = rows.length === this.batchSize || messages.length === this.batchSize;
      if (!untilEmpty && !full) return true;
    }
  }

  private statements(db: D1Writer, rows: OutboxRow[], messages: Message[]): D1PreparedStatement[] {
    const conversationId = this.store.requireMeta().id;
    const out: D1PreparedStatement[] = [];
    let pendingMessages: Message[] = [];
    let next = 0;
    const messagesThrough = (seq: number) => {
      while (next < messages.length && messages[next]!.seq <= seq) pendingMessages.push(messages[next++]!);
    };
    let lastSeq = 0;
    let lastMessageAt = 0;

    const flushMessages = () => {
      for (let i = 0; i < pendingMessages.length; i += MESSAGES_PER_INSERT) {
        const chunk = pendingMessages.slice(i, i + MESSAGES_PER_INSERT);
        const values: unknown[] = [];
        for (const m of chunk) {
          lastSeq = Math.max(lastSeq, m.seq);
          // A commit moves no lastMessageAt and no list order (API.md).
          if (m.kind !== "mls.commit" && m.kind !== "action") lastMessageAt = Math.max(lastMessageAt, m.createdAt);
          values.push(
            m.id,
            conversationId,
            m.seq,
            m.senderId,
            m.senderDeviceId,
            m.clientMsgId,
            m.kind,
            m.body,
            m.ciphertext ?? m.commit ?? null,
            JSON.stringify(m.media),
            m.threadRootSeq,
            m.thread?.replyCount ?? 0,
            m.thread?.lastReplySeq ?? null,
            m.thread?.lastReplyAt ?? null,
            m.createdAt,
            extraJson(m),
          );
        }
        const placeholders = chunk.map(() => `(${new Array(MESSAGE_PARAMS).fill("?").join(", ")})`).join(", ");
        out.push(
          db
            .prepare(
              `INSERT OR IGNORE INTO messages (id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, kind, body, payload, media, thread_root_seq, reply_count, last_reply_seq, last_reply_at, created_at, extra) VALUES ${placeholders}`,
            )
            .bind(...values),
        );
      }
      pendingMessages = [];
    };

    // A member's receipts only move forward, and a batch is one transaction: of several receipt
    // rows of one member in a batch, the last says all (a device sends `delivered` and `read`
    // together when it shows a message), so the others write nothing.
    const lastReceipt = new Map<string, OutboxRow>();
    for (const row of rows) if (row.kind === "receipt") lastReceipt.set(row.payload.userId, row);

    for (const row of rows) {
      if (row.kind === "message") {
        pendingMessages.push(row.payload);
        continue;
      }
      if (row.kind === "receipt" && lastReceipt.get(row.payload.userId) !== row) continue;
      messagesThrough(row.atSeq);
      flushMessages();
      switch (row.kind) {
        case "conversation": {
          const c = row.payload;
          out.push(
            db
              .prepare(
                `INSERT INTO conversations (id, type, title, description, e2ee, created_at) VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET title = excluded.title, description = excluded.description, e2ee = excluded.e2ee`,
              )
              .bind(c.id, c.type, c.title, c.description ?? null, c.e2ee ? 1 : 0, c.createdAt),
          );
          break;
        }
        case "member_put": {
          const m = row.payload;
          out.push(
            db
              .prepare(
                `INSERT INTO members (conversation_id, user_id, role, joined_at, joined_seq) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = excluded.role`,
              )
              .bind(conversationId, m.userId, m.role, m.joinedAt, m.joinedSeq ?? 0),
            // A member again: their former span ends here (they read from their new joining on).
            db.prepare("DELETE FROM former_members WHERE conversation_id = ? AND user_id = ?").bind(conversationId, m.userId),
          );
          break;
        }
        case "member_delete": {
          const f = row.payload;
          if (f.leftSeq !== undefined) {
            out.push(
              db
                .prepare(
                  `INSERT INTO former_members (conversation_id, user_id, joined_seq, left_seq, joined_at, left_at) VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (conversation_id, user_id) DO UPDATE SET joined_seq = excluded.joined_seq,
                     left_seq = excluded.left_seq, joined_at = excluded.joined_at, left_at = excluded.left_at`,
                )
                .bind(conversationId, f.userId, f.joinedSeq ?? 0, f.leftSeq, f.joinedAt ?? 0, f.leftAt ?? 0),
            );
          }
          out.push(db.prepare("DELETE FROM members WHERE conversation_id = ? AND user_id = ?").bind(conversationId, f.userId));
          break;
        }
        case "thread": {
          const t = row.payload;
          out.push(
            db
              .prepare(
                `UPDATE messages SET reply_count = max(reply_count, ?), last_reply_seq = max(coalesce(last_reply_seq, 0), ?),
                   last_reply_at = max(coalesce(last_reply_at, 0), ?) WHERE conversation_id = ? AND seq = ?`,
              )
              .bind(t.replyCount, t.lastReplySeq, t.lastReplyAt, conversationId, t.rootSeq),
          );
          break;
        }
        case "mls_epoch":
          out.push(
            db
              .prepare("UPDATE conversations SET mls_epoch = max(coalesce(mls_epoch, 0), ?) WHERE id = ?")
              .bind(row.payload.epoch, conversationId),
          );
          break;
        case "message_update": {
          const u = row.payload;
          const extra = u.extra && Object.keys(u.extra).length > 0 ? JSON.stringify(u.extra) : null;
          out.push(
            db
              .prepare("UPDATE messages SET body = ?, payload = ?, media = ?, extra = ? WHERE conversation_id = ? AND seq = ?")
              .bind(u.body, u.payload, JSON.stringify(u.media), extra, conversationId, u.seq),
          );
          break;
        }
        case "hidden": {
          const { userId, seqs } = row.payload;
          for (let i = 0; i < seqs.length; i += 30) {
            const chunk = seqs.slice(i, i + 30);
            out.push(
              db
                .prepare(`INSERT OR IGNORE INTO hidden_messages (user_id, conversation_id, seq) VALUES ${chunk.map(() => "(?, ?, ?)").join(", ")}`)
                .bind(...chunk.flatMap((seq) => [userId, conversationId, seq])),
            );
          }
          break;
        }
        case "media_erase":
          // The shares are on the items' shards, not this conversation's: the eraser takes them
          // away after this batch (drain).
          break;
        case "receipt": {
          const r = row.payload;
          out.push(
            db
              .prepare(
                `UPDATE members SET delivered_seq = max(delivered_seq, ?), read_seq = max(read_seq, ?)
                 WHERE conversation_id = ? AND user_id = ?`,
              )
              .bind(r.deliveredSeq, r.readSeq, conversationId, r.userId),
          );
          break;
        }
      }
    }
    messagesThrough(Number.POSITIVE_INFINITY);
    flushMessages();
    if (lastSeq > 0 && lastMessageAt > 0) {
      out.push(
        db
          .prepare(
            `UPDATE conversations SET last_seq = max(last_seq, ?), last_message_at = max(coalesce(last_message_at, 0), ?)
             WHERE id = ?`,
          )
          .bind(lastSeq, lastMessageAt, conversationId),
      );
    } else if (lastSeq > 0) {
      // Only commits: they move no lastMessageAt (API.md).
      out.push(db.prepare("UPDATE conversations SET last_seq = max(last_seq, ?) WHERE id = ?").bind(lastSeq, conversationId));
    }
    return out;
  }
}

/** A message's annotations as D1's `extra` column holds them (as the object's own column does). */
function extraJson(message: Message): string | null {
  const extra = annotationsOf(message);
  return Object.keys(extra).length > 0 ? JSON.stringify(extra) : null;
}
