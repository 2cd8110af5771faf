// The conversation's own SQLite database: the message log (the source of truth for `seq`),
// members, receipts and the outbox to D1. All methods are synchronous: SQLite in a Durable
// Object runs in-process, and a burst of writes inside one event commits atomically.
import type { ConversationType, MediaRef, Member, Message, MessageKind, Receipt, Role } from "../../protocol";
import { migrate } from "../lib/migrate";
import { MESSAGE_COLUMNS, MESSAGE_JSON_SQL, messageFromRow, UNSHOWN_KINDS_SQL, type MessageRow } from "../../kernel/d1/rows";
import { ACTION_MIGRATIONS, ACTION_MIGRATIONS_TRACK, type Annotations } from "./actionsStore";
import { GROUP_INFO_MIGRATIONS, GROUP_INFO_MIGRATIONS_TRACK } from "./groupInfoStore";

/** A stored message as its wire JSON (ConversationStore.encodedBetween), with what sync decides on. */
export type EncodedMessage = {
  seq: number;
  kind: string;
  createdAt: number;
  json: string;
};

// Append-only. Index i is schema version i + 1.
const MIGRATIONS = [
  `CREATE TABLE conversation (
     id TEXT PRIMARY KEY, type TEXT NOT NULL, title TEXT, e2ee INTEGER NOT NULL,
     created_at INTEGER NOT NULL, last_seq INTEGER NOT NULL, last_message_at INTEGER)`,
  `CREATE TABLE members (user_id TEXT PRIMARY KEY, role TEXT NOT NULL, joined_at INTEGER NOT NULL)`,
  `CREATE TABLE messages (
     seq INTEGER PRIMARY KEY, id TEXT NOT NULL, sender_id TEXT NOT NULL, sender_device_id TEXT NOT NULL,
     client_msg_id TEXT NOT NULL, kind TEXT NOT NULL, body TEXT, media TEXT NOT NULL,
     thread_root_seq INTEGER, reply_count INTEGER NOT NULL DEFAULT 0, last_reply_seq INTEGER,
     last_reply_at INTEGER, created_at INTEGER NOT NULL)`,
  // Idempotency key of a send: (senderId, clientMsgId) within this conversation.
  `CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, client_msg_id)`,
  `CREATE INDEX messages_thread ON messages (thread_root_seq, seq) WHERE thread_root_seq IS NOT NULL`,
  `CREATE TABLE receipts (
     user_id TEXT PRIMARY KEY, delivered_seq INTEGER NOT NULL, read_seq INTEGER NOT NULL,
     updated_at INTEGER NOT NULL)`,
  `CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, payload TEXT NOT NULL)`,
  // The highest seq whose notification reached every member's user object.
  `ALTER TABLE conversation ADD COLUMN fanout_seq INTEGER NOT NULL DEFAULT 0`,
  `UPDATE conversation SET fanout_seq = (SELECT coalesce(max(seq), 0) FROM messages)`,
  // Who is typing, until when: kept in storage so the lapse survives hibernation.
  `CREATE TABLE typing (user_id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)`,
  // From here on messages get no outbox row: D1 is fed from the log above `d1_seq`. Each remaining
  // row records the lastSeq it came after (`at_seq`), so D1 gets rows and messages in that order.
  // Messages queued before this step are still in the outbox as 'message' rows, below `d1_seq`.
  `ALTER TABLE outbox ADD COLUMN at_seq INTEGER NOT NULL DEFAULT 0`,
  `ALTER TABLE conversation ADD COLUMN d1_seq INTEGER NOT NULL DEFAULT 0`,
  `UPDATE conversation SET d1_seq = (SELECT coalesce(max(seq), 0) FROM messages)`,
  // End-to-end encryption (./mlsDelivery.ts): an E2EE message's MLS bytes (the ciphertext, or the
  // commit); the group's epoch and latest GroupInfo; Welcomes stored with their commit and not yet
  // handed to their devices' user objects.
  `ALTER TABLE messages ADD COLUMN payload TEXT`,
  `ALTER TABLE conversation ADD COLUMN mls_epoch INTEGER NOT NULL DEFAULT 0`,
  `ALTER TABLE conversation ADD COLUMN mls_group_info TEXT`,
  `CREATE TABLE mls_welcomes (
     id TEXT PRIMARY KEY, seq INTEGER NOT NULL, user_id TEXT NOT NULL, device_id TEXT NOT NULL, welcome TEXT NOT NULL)`,
  // Membership spans (docs/api.md, Conversations): a member reads from the system message that
  // added them (`joined_seq`; 0 for those who joined before spans were kept: everything); a former
  // member keeps reading up to the one that removed them (`left_seq`), one row per user.
  `ALTER TABLE members ADD COLUMN joined_seq INTEGER NOT NULL DEFAULT 0`,
  `CREATE TABLE former_members (
     user_id TEXT PRIMARY KEY, joined_seq INTEGER NOT NULL, left_seq INTEGER NOT NULL,
     joined_at INTEGER NOT NULL, left_at INTEGER NOT NULL)`,
  // E2EE: the creator's device signed out before making the group's first commit, which any
  // member's device may then make (./mlsDelivery.ts).
  `ALTER TABLE conversation ADD COLUMN mls_creator_gone INTEGER NOT NULL DEFAULT 0`,
  // A commit's Welcome once, however many devices it adds (a commit adding 50 devices of a large
  // group kept 50 copies of a Welcome carrying the whole tree); the per-device rows refer to it by
  // the commit's seq and keep an empty text (rows from before this step keep their own copy).
  `CREATE TABLE mls_welcome_texts (seq INTEGER PRIMARY KEY, welcome TEXT NOT NULL)`,
];


export interface ConversationMeta {
  id: string;
  type: ConversationType;
  title: string | null;
  /** Groups: the description its admins wrote (null: none). */
  description: string | null;
  e2ee: boolean;
  createdAt: number;
  lastSeq: number;
  /** The latest message's time, commits left out (they move no list order). */
  lastMessageAt: number | null;
  /** E2EE conversations: the MLS group's current epoch (0 until the first commit). */
  mlsEpoch: number;
}

/** A member as stored: `joinedSeq` is the first seq they may read (the system message that added them). */
export type StoredMember = Member & { joinedSeq: number };

/** Someone removed or gone: they read `joinedSeq..leftSeq` (through the system message that recorded it). */
export interface FormerMember {
  userId: string;
  joinedSeq: number;
  leftSeq: number;
  joinedAt: number;
  leftAt: number;
}

export type OutboxEntry =
  // `description` is absent from rows queued before groups had one.
  | { kind: "conversation"; payload: { id: string; type: ConversationType; title: string | null; description?: string | null; e2ee: boolean; createdAt: number } }
  // `joinedSeq` is absent from rows queued before membership spans were kept.
  | { kind: "member_put"; payload: Member & { joinedSeq?: number } }
  // Only `userId` in rows queued before membership spans were kept.
  | { kind: "member_delete"; payload: { userId: string } & Partial<Omit<FormerMember, "userId">> }
  // Only in outboxes written before messages were fed from the log (see MIGRATIONS).
  | { kind: "message"; payload: Message }
  | { kind: "thread"; payload: { rootSeq: number; replyCount: number; lastReplySeq: number; lastReplyAt: number } }
  | { kind: "receipt"; payload: { userId: string; deliveredSeq: number; readSeq: number } }
  | { kind: "mls_epoch"; payload: { epoch: number } }
  // Message actions (./actions.ts): a message's row rewritten (an edit, a reaction, a pin, an
  // erasure), messages a user deleted for themself, media to erase from D1 and R2.
  | { kind: "message_update"; payload: MessageRewrite & { seq: number } }
  | { kind: "hidden"; payload: { userId: string; seqs: number[] } }
  | { kind: "media_erase"; payload: { mediaIds: string[] } };

/** A message's new content and annotations (all of them, as now stored). */
export interface MessageRewrite {
  body: string | null;
  payload: string | null;
  media: MediaRef[];
  extra: Annotations | null;
}

/** `atSeq`: the conversation's lastSeq when the row was queued (it follows those messages). */
export type OutboxRow = { id: number; atSeq: number } & OutboxEntry;

/** A Welcome stored with its commit, until its device's user object has it. */
export interface PendingWelcomeRow {
  id: string;
  seq: number;
  userId: string;
  deviceId: string;
  welcome: string;
}

export interface NewMessage {
  id: string;
  senderId: string;
  senderDeviceId: string;
  clientMsgId: string;
  kind: MessageKind;
  body: string | null;
  /** The MLS bytes of an E2EE message: the ciphertext of `encrypted`, the commit of `mls.commit`. */
  payload?: string;
  media: MediaRef[];
  threadRootSeq: number | null;
  createdAt: number;
  /** Set at sending: replyToSeq, mentions, forwarded (./actions.ts). */
  annotations?: Annotations;
}


/**
 * How many recent messages the store keeps in memory for the deferred pass (see `recent`), and
 * about how many bytes. Under a sustained burst (~2,000 msg/s) the pass's D1 cursor runs more
 * than a thousand messages behind, and reading a pass's messages back from SQLite costs about 5%
 * of the isolate's CPU (docs/performance.md): the room is well above that. Bodies differ in size
 * (up to LIMITS.bodyMax), so bytes bound it too; what does not fit is read from SQLite.
 */
const RECENT_MAX = 20_000;
const RECENT_MAX_BYTES = 8 * 1024 * 1024;

/** A message's rough size in memory: its strings (two bytes a character) and the object around them. */
function approxBytes(message: Message): number {
  return 2 * ((message.body?.length ?? 0) + message.clientMsgId.length) + 400 * (message.media.length + 1);
}

export class ConversationStore {
  /** Loaded once per wake-up; every write below keeps them current. */
  meta: ConversationMeta | null;
  readonly members = new Map<string, StoredMember>();
  /**
   * Messages appended during this wake-up that the deferred pass has not yet taken past both its
   * cursors (D1 and the fan-out; only one of them while the other step is failing, see
   * keepingFor), by seq, oldest first: the pass reads them from here instead of SQLite (those
   * reads cost about 5% of the runtime's CPU at 500 msg/s). A message whose row changes afterwards
   * (a thread root's reply count) is dropped, so what is here equals its row; whatever is not
   * here is read from SQLite.
   */
  private readonly recent = new Map<number, Message>();
  private recentBytes = 0;
  /**
   * Which steps `recent` keeps messages for. A step left to its backoff (D1 down) reads what it
   * missed back from SQLite when it retries, so `recent` forgets what the other step has passed:
   * an outage does not make every conversation of an isolate hold up to RECENT_MAX_BYTES (objects
   * of one class may share an isolate, and its memory limit).
   */
  private readonly keepingFor = { d1: true, fanout: true };
  /** Receipts read or written during this wake-up (putReceipt keeps them current): one read per member, not per receipt. */
  private readonly receipts = new Map<string, Receipt>();

  constructor(private readonly sql: SqlStorage) {
    migrate(sql, MIGRATIONS);
    migrate(sql, ACTION_MIGRATIONS, ACTION_MIGRATIONS_TRACK);
    migrate(sql, GROUP_INFO_MIGRATIONS, GROUP_INFO_MIGRATIONS_TRACK);
    this.meta = this.loadMeta();
    for (const m of sql.exec<{ user_id: string; role: string; joined_at: number; joined_seq: number }>(
      "SELECT user_id, role, joined_at, joined_seq FROM members",
    )) {
      this.members.set(m.user_id, { userId: m.user_id, role: m.role as Role, joinedAt: m.joined_at, joinedSeq: m.joined_seq });
    }
  }

  private loadMeta(): ConversationMeta | null {
    const row = this.sql
      .exec<{
        id: string;
        type: string;
        title: string | null;
        description: string | null;
        e2ee: number;
        created_at: number;
        last_seq: number;
        last_message_at: number | null;
        mls_epoch: number;
      }>("SELECT * FROM conversation")
      .toArray()[0];
    if (!row) return null;
    const last = this.sql
      .exec<{ seq: number; created_at: number }>("SELECT seq, created_at FROM messages ORDER BY seq DESC LIMIT 1")
      .toArray()[0];
    const lastShown = this.lastShownSeq(last?.seq ?? 0);
    return {
      id: row.id,
      type: row.type === "group" ? "group" : "direct",
      title: row.title,
      description: row.description,
      e2ee: row.e2ee === 1,
      createdAt: row.created_at,
      lastSeq: last?.seq ?? 0,
      lastMessageAt: lastShown === last?.seq ? last.created_at : lastShown > 0 ? (this.getCreatedAt(lastShown) ?? null) : null,
      mlsEpoch: row.mls_epoch,
    };
  }

  /** The seq of the latest message at or below `seq` that is not a commit (0 if none). */
  private lastShownSeq(seq: number): number {
    if (seq === 0) return 0;
    return (
      this.sql
        .exec<{ seq: number }>(`SELECT seq FROM messages WHERE seq <= ? AND kind NOT IN ('mls.commit', 'action') ORDER BY seq DESC LIMIT 1`, seq)
        .toArray()[0]?.seq ?? 0
    );
  }

  private getCreatedAt(seq: number): number | undefined {
    return this.sql.exec<{ created_at: number }>("SELECT created_at FROM messages WHERE seq = ?", seq).toArray()[0]?.created_at;
  }

  create(meta: Omit<ConversationMeta, "lastSeq" | "lastMessageAt" | "mlsEpoch" | "description">): void {
    this.sql.exec(
      "INSERT INTO conversation (id, type, title, e2ee, created_at, last_seq) VALUES (?, ?, ?, ?, ?, 0)",
      meta.id,
      meta.type,
      meta.title,
      meta.e2ee ? 1 : 0,
      meta.createdAt,
    );
    this.meta = { ...meta, description: null, lastSeq: 0, lastMessageAt: null, mlsEpoch: 0 };
    this.queueForD1({
      kind: "conversation",
      payload: { id: meta.id, type: meta.type, title: meta.title, e2ee: meta.e2ee, createdAt: meta.createdAt },
    });
  }

  /** A group's new title and description (each as given, or kept), written through to D1. */
  setGroupInfo(change: { title?: string; description?: string | null }): void {
    const meta = this.requireMeta();
    const title = change.title ?? meta.title;
    const description = change.description === undefined ? meta.description : change.description;
    this.sql.exec("UPDATE conversation SET title = ?, description = ?", title, description);
    meta.title = title;
    meta.description = description;
    this.queueForD1({
      kind: "conversation",
      payload: { id: meta.id, type: meta.type, title, description, e2ee: meta.e2ee, createdAt: meta.createdAt },
    });
  }

  /** Adds a member (ending any former membership of theirs) or changes a member's role. */
  putMember(member: StoredMember): void {
    this.sql.exec(
      `INSERT INTO members (user_id, role, joined_at, joined_seq) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_id) DO UPDATE SET role = excluded.role`,
      member.userId,
      member.role,
      member.joinedAt,
      member.joinedSeq,
    );
    this.sql.exec("DELETE FROM former_members WHERE user_id = ?", member.userId);
    const stored = this.members.get(member.userId);
    const kept = stored ? { ...stored, role: member.role } : member;
    this.members.set(member.userId, kept);
    this.queueForD1({ kind: "member_put", payload: kept });
  }

  /** Ends a membership; the user keeps reading through `leftSeq` (the system message that records it). */
  deleteMember(userId: string, leftSeq: number, leftAt: number): void {
    const member = this.members.get(userId);
    if (!member) return;
    this.sql.exec("DELETE FROM members WHERE user_id = ?", userId);
    this.members.delete(userId);
    const former: FormerMember = { userId, joinedSeq: member.joinedSeq, leftSeq, joinedAt: member.joinedAt, leftAt };
    this.sql.exec(
      `INSERT INTO former_members (user_id, joined_seq, left_seq, joined_at, left_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (user_id) DO UPDATE SET joined_seq = excluded.joined_seq, left_seq = excluded.left_seq,
         joined_at = excluded.joined_at, left_at = excluded.left_at`,
      userId,
      former.joinedSeq,
      former.leftSeq,
      former.joinedAt,
      former.leftAt,
    );
    this.queueForD1({ kind: "member_delete", payload: former });
  }

  /** The user's former membership, or null (never a member, or a member again). */
  formerMember(userId: string): FormerMember | null {
    const row = this.sql
      .exec<{ joined_seq: number; left_seq: number; joined_at: number; left_at: number }>(
        "SELECT joined_seq, left_seq, joined_at, left_at FROM former_members WHERE user_id = ?",
        userId,
      )
      .toArray()[0];
    return row ? { userId, joinedSeq: row.joined_seq, leftSeq: row.left_seq, joinedAt: row.joined_at, leftAt: row.left_at } : null;
  }

  /**
   * For each of `times`, whether `userId` was a member then: since they joined (a member from
   * before spans were kept: always), or a former member between joining and leaving. What was
   * shared here at that time is theirs to see (kernel/d1/mediaRecords.ts).
   */
  wasMemberAt(userId: string, times: number[]): boolean[] {
    const member = this.members.get(userId);
    if (member) return times.map((at) => member.joinedSeq === 0 || at >= member.joinedAt);
    const former = this.formerMember(userId);
    if (!former) return times.map(() => false);
    return times.map((at) => (former.joinedSeq === 0 || at >= former.joinedAt) && at <= former.leftAt);
  }

  findByClientMsgId(senderId: string, clientMsgId: string): Message | null {
    const row = this.sql
      .exec<MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE sender_id = ? AND client_msg_id = ?`,
        senderId,
        clientMsgId,
      )
      .toArray()[0];
    return row ? this.toMessage(row) : null;
  }

  getMessage(seq: number): Message | null {
    const row = this.sql.exec<MessageRow>(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE seq = ?`, seq).toArray()[0];
    return row ? this.toMessage(row) : null;
  }

  /**
   * Appends a message with the next `seq` and the thread root's new summary (an outbox row), in
   * one atomic write, and returns it; or returns null, writing nothing, when (senderId,
   * clientMsgId) is already stored. The message itself reaches D1 from the log, above `d1_seq`.
   * The caller must have checked that a thread root exists and is not a reply.
   */
  append(input: NewMessage): Message | null {
    const meta = this.requireMeta();
    const seq = meta.lastSeq + 1;
    // The idempotency index detects a duplicate in the insert itself: a send costs one statement,
    // not a lookup and then an insert.
    const written = this.sql.exec(
      `INSERT INTO messages (seq, id, sender_id, sender_device_id, client_msg_id, kind, body, payload, media, thread_root_seq, created_at, extra)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (sender_id, client_msg_id) DO NOTHING`,
      seq,
      input.id,
      input.senderId,
      input.senderDeviceId,
      input.clientMsgId,
      input.kind,
      input.body,
      input.payload ?? null,
      input.media.length === 0 ? "[]" : JSON.stringify(input.media),
      input.threadRootSeq,
      input.createdAt,
      input.annotations ? JSON.stringify(input.annotations) : null,
    ).rowsWritten;
    if (written === 0) return null;
    // `lastSeq` is not written back to the conversation row: it is max(seq), read once per
    // wake-up (loadMeta), which saves a statement on every send.
    meta.lastSeq = seq;
    if (input.kind !== "mls.commit" && input.kind !== "action") meta.lastMessageAt = input.createdAt;
    // Built field by field rather than spread: every message then has one shape, on the hottest path.
    const message: Message = {
      conversationId: meta.id,
      seq,
      id: input.id,
      senderId: input.senderId,
      senderDeviceId: input.senderDeviceId,
      clientMsgId: input.clientMsgId,
      kind: input.kind,
      body: input.body,
      media: input.media,
      threadRootSeq: input.threadRootSeq,
      createdAt: input.createdAt,
    };
    if (input.payload !== undefined) {
      if (input.kind === "mls.commit") message.commit = input.payload;
      else message.ciphertext = input.payload;
    }
    if (input.annotations) Object.assign(message, input.annotations);
    this.remember(message);
    if (input.threadRootSeq !== null) {
      this.forget(input.threadRootSeq);
      const root = this.sql
        .exec<{ reply_count: number }>(
          "UPDATE messages SET reply_count = reply_count + 1, last_reply_seq = ?, last_reply_at = ? WHERE seq = ? RETURNING reply_count",
          seq,
          input.createdAt,
          input.threadRootSeq,
        )
        .one();
      this.queueForD1({
        kind: "thread",
        payload: {
          rootSeq: input.threadRootSeq,
          replyCount: root.reply_count,
          lastReplySeq: seq,
          lastReplyAt: input.createdAt,
        },
      });
    }
    return message;
  }

  /** Messages with `after < seq`, ascending, at most `limit` (plus whether more exist). */
  messagesAfter(after: number, limit: number, thread?: number): { messages: Message[]; hasMore: boolean } {
    const recent = thread ? null : this.recentAfter(after, limit);
    if (recent) return recent;
    const rows = thread
      ? this.sql.exec<MessageRow>(
          `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE seq > ? AND (seq = ? OR thread_root_seq = ?) ORDER BY seq LIMIT ?`,
          after,
          thread,
          thread,
          limit + 1,
        )
      : this.sql.exec<MessageRow>(
          `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE seq > ? ORDER BY seq LIMIT ?`,
          after,
          limit + 1,
        );
    const messages = rows.toArray().map((r) => this.toMessage(r));
    const hasMore = messages.length > limit;
    if (hasMore) messages.pop();
    return { messages, hasMore };
  }

  /**
   * Messages with `after < seq <= through`, ascending, at most `limit`, each as its wire JSON,
   * encoded by SQLite as messageFromRow builds it (MESSAGE_JSON_SQL): a sync page splices them as
   * they are, so a row comes back as one string, not fifteen columns rebuilt and re-encoded here.
   */
  encodedBetween(after: number, through: number, limit: number): EncodedMessage[] {
    return this.sql
      .exec<EncodedMessage>(
        `SELECT seq, kind, created_at AS createdAt, ${MESSAGE_JSON_SQL} AS json
         FROM (SELECT *, ? AS conversation_id FROM messages WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?)`,
        this.requireMeta().id,
        after,
        through,
        limit,
      )
      .toArray();
  }

  /** messagesAfter from `recent`, or null unless it holds every message asked for. */
  private recentAfter(after: number, limit: number): { messages: Message[]; hasMore: boolean } | null {
    const lastSeq = this.meta?.lastSeq ?? 0;
    const through = Math.min(lastSeq, after + limit);
    const messages: Message[] = [];
    // seq is contiguous from 1, so the page is exactly (after, through].
    for (let seq = after + 1; seq <= through; seq++) {
      const message = this.recent.get(seq);
      if (!message) return null;
      messages.push(message);
    }
    return { messages, hasMore: lastSeq > through };
  }

  /**
   * Whether `recent` keeps messages for `step` (see keepingFor): the conversation object says so
   * after each attempt, true when the step kept up, false while it waits out a failure.
   */
  keepRecentFor(step: "d1" | "fanout", keep: boolean): void {
    if (this.keepingFor[step] === keep) return;
    this.keepingFor[step] = keep;
    if (!keep) this.trimRecent();
  }

  /** Forgets recent messages that the cursor of every step it keeps them for has passed. */
  private trimRecent(): void {
    if (this.recent.size === 0) return;
    const { d1_seq, fanout_seq } = this.sql
      .exec<{ d1_seq: number; fanout_seq: number }>("SELECT d1_seq, fanout_seq FROM conversation")
      .one();
    const through = Math.min(
      this.keepingFor.d1 ? d1_seq : Number.POSITIVE_INFINITY,
      this.keepingFor.fanout ? fanout_seq : Number.POSITIVE_INFINITY,
    );
    for (const seq of this.recent.keys()) {
      if (seq > through) break;
      this.forget(seq);
    }
  }

  /** Keeps a new message in `recent`, forgetting the oldest ones beyond its bounds. */
  private remember(message: Message): void {
    this.recent.set(message.seq, message);
    this.recentBytes += approxBytes(message);
    while (this.recent.size > RECENT_MAX || this.recentBytes > RECENT_MAX_BYTES) this.forget(this.recent.keys().next().value!);
  }

  private forget(seq: number): void {
    const message = this.recent.get(seq);
    if (!message) return;
    this.recent.delete(seq);
    this.recentBytes -= approxBytes(message);
  }

  /** The latest `limit` messages with `seq < before`, returned ascending. */
  messagesBefore(before: number, limit: number, thread?: number): { messages: Message[]; hasMore: boolean } {
    const rows = thread
      ? this.sql.exec<MessageRow>(
          `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE seq < ? AND (seq = ? OR thread_root_seq = ?) ORDER BY seq DESC LIMIT ?`,
          before,
          thread,
          thread,
          limit + 1,
        )
      : this.sql.exec<MessageRow>(
          `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE seq < ? ORDER BY seq DESC LIMIT ?`,
          before,
          limit + 1,
        );
    const messages = rows.toArray().map((r) => this.toMessage(r));
    const hasMore = messages.length > limit;
    if (hasMore) messages.pop();
    return { messages: messages.reverse(), hasMore };
  }

  /**
   * The latest top-level message at or below `through`: commits, actions and thread replies left
   * out (a commit shows nothing, an action changes an earlier message, a reply belongs to its
   * thread, not to the conversation's preview).
   */
  lastMessage(through = Number.MAX_SAFE_INTEGER): Message | null {
    const meta = this.meta;
    if (!meta || meta.lastSeq === 0) return null;
    const last = this.getMessage(Math.min(meta.lastSeq, through));
    if (last && last.kind !== "mls.commit" && last.kind !== "action" && last.threadRootSeq === null) return last;
    const row = this.sql
      .exec<MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE seq <= ? AND kind NOT IN ('mls.commit', 'action') AND thread_root_seq IS NULL ORDER BY seq DESC LIMIT 1`,
        through,
      )
      .toArray()[0];
    return row ? this.toMessage(row) : null;
  }

  /**
   * Messages from others in (readSeq, through], system messages, commits and actions not counted
   * (nobody wrote them to be read): top-level ones as `unread`, thread replies as `threadUnread`. Costs
   * O(unread) through the primary key.
   */
  unreadCounts(userId: string, readSeq: number, through = Number.MAX_SAFE_INTEGER): { unread: number; threadUnread: number } {
    const row = this.sql
      .exec<{ unread: number | null; thread_unread: number | null }>(
        `SELECT sum(thread_root_seq IS NULL) AS unread, sum(thread_root_seq IS NOT NULL) AS thread_unread FROM messages
         WHERE seq > ? AND seq <= ? AND sender_id != ? AND kind NOT IN ${UNSHOWN_KINDS_SQL}`,
        readSeq,
        through,
        userId,
      )
      .one();
    return { unread: row.unread ?? 0, threadUnread: row.thread_unread ?? 0 };
  }

  receipt(userId: string): Receipt {
    const cached = this.receipts.get(userId);
    if (cached) return cached;
    const row = this.sql
      .exec<{ delivered_seq: number; read_seq: number; updated_at: number }>(
        "SELECT delivered_seq, read_seq, updated_at FROM receipts WHERE user_id = ?",
        userId,
      )
      .toArray()[0];
    const receipt = row
      ? { userId, deliveredSeq: row.delivered_seq, readSeq: row.read_seq, updatedAt: row.updated_at }
      : { userId, deliveredSeq: 0, readSeq: 0, updatedAt: 0 };
    this.receipts.set(userId, receipt);
    return receipt;
  }

  putReceipt(receipt: Receipt): void {
    this.sql.exec(
      `INSERT INTO receipts (user_id, delivered_seq, read_seq, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_id) DO UPDATE SET delivered_seq = excluded.delivered_seq,
         read_seq = excluded.read_seq, updated_at = excluded.updated_at`,
      receipt.userId,
      receipt.deliveredSeq,
      receipt.readSeq,
      receipt.updatedAt,
    );
    this.receipts.set(receipt.userId, receipt);
    this.queueForD1({
      kind: "receipt",
      payload: { userId: receipt.userId, deliveredSeq: receipt.deliveredSeq, readSeq: receipt.readSeq },
    });
  }

  queueForD1(entry: OutboxEntry): void {
    this.sql.exec(
      "INSERT INTO outbox (kind, payload, at_seq) VALUES (?, ?, ?)",
      entry.kind,
      JSON.stringify(entry.payload),
      this.meta?.lastSeq ?? 0,
    );
  }

  outboxBatch(limit: number): OutboxRow[] {
    return this.sql
      .exec<{ id: number; kind: string; payload: string; at_seq: number }>(
        "SELECT id, kind, payload, at_seq FROM outbox ORDER BY id LIMIT ?",
        limit,
      )
      .toArray()
      .map((r) => ({ id: r.id, atSeq: r.at_seq, kind: r.kind, payload: JSON.parse(r.payload) }) as OutboxRow);
  }

  /** What D1 has yet to get: outbox rows plus messages above `d1_seq`. */
  outboxSize(): number {
    const rows = this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM outbox").one().n;
    return rows + Math.max(0, (this.meta?.lastSeq ?? 0) - this.d1Seq());
  }

  /** The highest seq whose message D1 holds (with every outbox row queued before it). */
  d1Seq(): number {
    return this.sql.exec<{ d1_seq: number }>("SELECT d1_seq FROM conversation").toArray()[0]?.d1_seq ?? 0;
  }

  setD1Seq(seq: number): void {
    this.sql.exec("UPDATE conversation SET d1_seq = max(d1_seq, ?)", seq);
    this.trimRecent();
  }

  deleteOutboxThrough(id: number): void {
    this.sql.exec("DELETE FROM outbox WHERE id <= ?", id);
  }

  fanoutSeq(): number {
    return this.sql.exec<{ fanout_seq: number }>("SELECT fanout_seq FROM conversation").toArray()[0]?.fanout_seq ?? 0;
  }

  setFanoutSeq(seq: number): void {
    this.sql.exec("UPDATE conversation SET fanout_seq = max(fanout_seq, ?)", seq);
    this.trimRecent();
  }

  /** Marks `userId` typing until `expiresAt`; returns whether they were not typing before. */
  startTyping(userId: string, expiresAt: number, now: number): boolean {
    const before = this.sql
      .exec<{ expires_at: number }>("SELECT expires_at FROM typing WHERE user_id = ?", userId)
      .toArray()[0];
    this.sql.exec(
      "INSERT INTO typing (user_id, expires_at) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET expires_at = excluded.expires_at",
      userId,
      expiresAt,
    );
    return !before || before.expires_at <= now;
  }

  /** Clears `userId`'s typing; returns whether the others still had to be told it stopped. */
  stopTyping(userId: string): boolean {
    const row = this.sql
      .exec<{ expires_at: number }>("DELETE FROM typing WHERE user_id = ? RETURNING expires_at", userId)
      .toArray()[0];
    // A lapsed entry the alarm has not yet ended counts too: the others were told `on` and not yet
    // `off`, and ending it here leaves the alarm nothing to relay.
    return row !== undefined;
  }

  /** Removes lapsed typing entries and returns who they were, plus the next lapse time. */
  expireTyping(now: number): { lapsed: string[]; next: number | null } {
    const lapsed = this.sql
      .exec<{ user_id: string }>("DELETE FROM typing WHERE expires_at <= ? RETURNING user_id", now)
      .toArray()
      .map((r) => r.user_id);
    const next = this.sql.exec<{ next: number | null }>("SELECT min(expires_at) AS next FROM typing").one().next;
    return { lapsed, next };
  }

  /** Distinct senders (other than `exceptUserId`) of messages with seq in (from, to]. */
  sendersBetween(from: number, to: number, exceptUserId: string): string[] {
    return this.sql
      .exec<{ sender_id: string }>(
        `SELECT DISTINCT sender_id FROM messages WHERE seq > ? AND seq <= ? AND sender_id != ? AND kind NOT IN ${UNSHOWN_KINDS_SQL}`,
        from,
        to,
        exceptUserId,
      )
      .toArray()
      .map((r) => r.sender_id);
  }

  // --- MLS: the Delivery Service's state (./mlsDelivery.ts) ---------------------------------------

  mlsGroupInfo(): string | null {
    return this.sql.exec<{ g: string | null }>("SELECT mls_group_info AS g FROM conversation").toArray()[0]?.g ?? null;
  }

  /** Whether the creator's device signed out before the group's first commit. */
  mlsCreatorDeviceGone(): boolean {
    return this.sql.exec<{ gone: number }>("SELECT mls_creator_gone AS gone FROM conversation").toArray()[0]?.gone === 1;
  }

  markMlsCreatorDeviceGone(): void {
    this.sql.exec("UPDATE conversation SET mls_creator_gone = 1");
  }

  /** Moves the group to `epoch` with its GroupInfo; called in the step that appends the commit. */
  setMlsState(epoch: number, groupInfo: string): void {
    this.sql.exec("UPDATE conversation SET mls_epoch = ?, mls_group_info = ?", epoch, groupInfo);
    this.requireMeta().mlsEpoch = epoch;
    this.queueForD1({ kind: "mls_epoch", payload: { epoch } });
  }

  queueWelcome(row: PendingWelcomeRow): void {
    this.sql.exec("INSERT OR IGNORE INTO mls_welcome_texts (seq, welcome) VALUES (?, ?)", row.seq, row.welcome);
    this.sql.exec("INSERT INTO mls_welcomes (id, seq, user_id, device_id, welcome) VALUES (?, ?, ?, ?, '')", row.id, row.seq, row.userId, row.deviceId);
  }

  pendingWelcomes(): PendingWelcomeRow[] {
    return this.sql
      .exec<{ id: string; seq: number; user_id: string; device_id: string; welcome: string }>(
        `SELECT w.id, w.seq, w.user_id, w.device_id, coalesce(t.welcome, w.welcome) AS welcome
         FROM mls_welcomes w LEFT JOIN mls_welcome_texts t ON t.seq = w.seq ORDER BY w.seq, w.id`,
      )
      .toArray()
      .map((r) => ({ id: r.id, seq: r.seq, userId: r.user_id, deviceId: r.device_id, welcome: r.welcome }));
  }

  deleteWelcomes(ids: string[]): void {
    if (ids.length === 0) return;
    for (const id of ids) this.sql.exec("DELETE FROM mls_welcomes WHERE id = ?", id);
    this.sql.exec("DELETE FROM mls_welcome_texts WHERE seq NOT IN (SELECT seq FROM mls_welcomes)");
  }

  /** The device that created the conversation, and its user (its `created` system message's). */
  creator(): { userId: string; deviceId: string } | null {
    const created = this.getMessage(1);
    return created ? { userId: created.senderId, deviceId: created.senderDeviceId } : null;
  }

  /**
   * Rewrites a stored message's content and annotations (./actions.ts: an edit, a reaction, a
   * pin, an erasure) and queues the same for D1. Returns the message as now stored.
   */
  rewriteMessage(seq: number, rewrite: MessageRewrite): Message | null {
    this.forget(seq);
    const written = this.sql.exec(
      "UPDATE messages SET body = ?, payload = ?, media = ?, extra = ? WHERE seq = ?",
      rewrite.body,
      rewrite.payload,
      rewrite.media.length === 0 ? "[]" : JSON.stringify(rewrite.media),
      rewrite.extra && Object.keys(rewrite.extra).length > 0 ? JSON.stringify(rewrite.extra) : null,
      seq,
    ).rowsWritten;
    if (written === 0) return null;
    this.queueForD1({ kind: "message_update", payload: { seq, ...rewrite } });
    return this.getMessage(seq);
  }

  /** The object's SQLite, for the modules that keep tables of their own beside the log (./actionsStore.ts). */
  get database(): SqlStorage {
    return this.sql;
  }

  requireMeta(): ConversationMeta {
    if (!this.meta) throw new Error("conversation not initialized");
    return this.meta;
  }

  private toMessage(row: MessageRow): Message {
    return messageFromRow(row, this.requireMeta().id);
  }
}
