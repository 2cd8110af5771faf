// The user's conversation list (GET /conversations): every conversation the user is or was a
// member of, with the span (joined, and left for a former member) and the last activity that
// orders the list. The object holds ids and order only; a page's content (last message, unread,
// members) is read from each conversation on it, so it is as current as the conversations are.
//
// Fed by the conversations: each membership change of this user is told here (`ListNotice`,
// retried by the conversation until it lands, applied by `version` so a late retry undoes
// nothing), and every fan-out call that carries messages moves its conversation's activity. A
// conversation whose call found every live device of this user watching it live may skip calling
// here for a while (durable-objects/conversation/quiet.ts): it is watched, and before a first page the object
// asks each watched one for its view (which orders it, and which the page then uses instead of
// asking again). A watch ends once asked after its answer lapsed.
//
// Paging is by (activity, id), newest first, with a cursor. Activity moves while a client pages,
// so a page after the first reads the list as it was when the first was read: each first page
// takes a snapshot number, and the first change of an entry after a snapshot records the key the
// entry had then (`list_moves`). An entry not moved since the cursor's snapshot is read by its
// key from the index; a moved one by the key it had. So paging to the end returns every
// conversation of the snapshot exactly once, whatever moves meanwhile, and a page reads its own
// rows plus those moved since its snapshot, never the whole list.
//
// Its tables are a migration track of their own, beside the object's shared list (./schema.ts).
import { fail, type Result } from "../../kernel/result";
import type { Conversation } from "../../protocol";
import type { ConversationPeer, InboxEvent, ListEntry, ListNotice } from "../contract";
import { WatchedConversations } from "./watchedConversations";

export const LIST_MIGRATIONS_TRACK = "_schema_conversation_list";

// Append-only. Index i is this track's version i + 1.
export const LIST_MIGRATIONS = [
  // `version`: the seq of the latest membership notice applied (0: known only from its messages).
  // `moved_in`: the latest snapshot for which a move of this entry is recorded.
  `CREATE TABLE conversation_list (
     conversation_id TEXT PRIMARY KEY, joined_seq INTEGER, left_seq INTEGER, version INTEGER NOT NULL,
     activity_at INTEGER NOT NULL, moved_in INTEGER NOT NULL) WITHOUT ROWID`,
  `CREATE INDEX conversation_list_order ON conversation_list (activity_at, conversation_id)`,
  // One per first page read with a limit; pruned after LIST_CURSOR_TTL_MS.
  `CREATE TABLE list_snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL)`,
  // The key an entry had at `snapshot` (null: it was not in the list yet), recorded at its first
  // change after that snapshot was taken.
  `CREATE TABLE list_moves (
     snapshot INTEGER NOT NULL, conversation_id TEXT NOT NULL, prev_at INTEGER,
     PRIMARY KEY (snapshot, conversation_id)) WITHOUT ROWID`,
  // Conversations told this user's devices were online, and until when they may skip calling.
  `CREATE TABLE list_watch (conversation_id TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID`,
];

/** How long a cursor stays good: a client pages through its list in seconds. */
export const LIST_CURSOR_TTL_MS = 3600_000;
/** GET /conversations without a limit: the whole list, at most this many (as before paging). */
export const LIST_ALL_MAX = 1000;

export interface ListQuery {
  /** null: the whole list (at most LIST_ALL_MAX), no cursor. */
  limit: number | null;
  cursor: string | null;
}

export interface ListSlice {
  entries: ListEntry[];
  views: Record<string, Conversation>;
  cursor: string | null;
  hasMore: boolean;
}

type Row = { conversation_id: string; joined_seq: number | null; left_seq: number | null; version: number; activity_at: number; moved_in: number };

interface Key {
  at: number;
  id: string;
}

/**
 * A page's entries not moved since its snapshot, newest first: read through the order index from
 * the cursor on (no sort, no scan of the rows above it), so a page costs its own rows plus the
 * moved ones it steps over.
 */
export const LIST_PAGE_SQL = {
  first: "SELECT * FROM conversation_list WHERE moved_in < ? ORDER BY activity_at DESC, conversation_id DESC LIMIT ?",
  after: `SELECT * FROM conversation_list WHERE moved_in < ? AND (activity_at, conversation_id) < (?, ?)
    ORDER BY activity_at DESC, conversation_id DESC LIMIT ?`,
};

/** The presence privacy rule's reads (current, memberOfAny); exported for the unit test of their plans. */
export const CURRENT_SQL = "SELECT conversation_id FROM conversation_list WHERE left_seq IS NULL ORDER BY activity_at DESC, conversation_id DESC";
// The ids come as one JSON array: an object's SQLite binds at most 100 parameters a statement.
export const MEMBER_OF_ANY_SQL =
  "SELECT 1 FROM conversation_list WHERE conversation_id IN (SELECT value FROM json_each(?)) AND left_seq IS NULL LIMIT 1";

const entryOf = (r: Row): ListEntry => ({ id: r.conversation_id, joinedSeq: r.joined_seq, leftSeq: r.left_seq, activityAt: r.activity_at });

/** Newest first: a before b when a's key is greater. */
const before = (a: Key, b: Key) => a.at > b.at || (a.at === b.at && a.id > b.id);

export class ConversationList {
  /** The latest snapshot (0: none), read once per wake-up; only this module writes it. */
  private snapshot: number | undefined;
  /**
   * Entries read or written during this wake-up, so a fan-out call costs one write, not a read
   * and a write. Only this module writes the table, and it updates this copy in the same step.
   */
  private readonly rows = new Map<string, Row>();

  private readonly watches: WatchedConversations;

  constructor(private readonly sql: SqlStorage) {
    this.watches = new WatchedConversations(sql, "list_watch");
  }

  /**
   * A fan-out call's messages: each conversation's activity moves to its latest message that
   * counts (commits and actions do not, as for `lastMessageAt`). A conversation not in the list
   * yet joins it (its span comes with its notice, or from its view). A former member's entry keeps
   * the time of its leaving: messages relayed with the one that removed them move nothing.
   */
  record(events: InboxEvent[], now: number): void {
    const latest = new Map<string, number>();
    for (const e of events) {
      if (e.type !== "message" || e.message.kind === "mls.commit" || e.message.kind === "action") continue;
      const at = e.message.createdAt ?? now;
      const id = e.message.conversationId;
      latest.set(id, Math.max(at, latest.get(id) ?? 0));
    }
    for (const [id, at] of latest) {
      const row = this.row(id);
      if (!row) this.insert({ conversation_id: id, joined_seq: null, left_seq: null, version: 0, activity_at: at, moved_in: 0 });
      else if (row.left_seq === null && at > row.activity_at) this.move(row, at);
    }
  }

  /** Membership notices from the conversations; a notice older than what is held changes nothing. */
  apply(notices: ListNotice[]): void {
    for (const n of notices) {
      const row = this.row(n.conversationId);
      if (!row) {
        this.insert({ conversation_id: n.conversationId, joined_seq: n.joinedSeq, left_seq: n.leftSeq, version: n.version, activity_at: n.at, moved_in: 0 });
        continue;
      }
      if (n.version < row.version) continue;
      // A former member's entry stays where they left; a member's moves only forward.
      const at = n.leftSeq !== null ? n.at : Math.max(row.activity_at, n.at);
      this.sql.exec(
        "UPDATE conversation_list SET joined_seq = ?, left_seq = ?, version = ? WHERE conversation_id = ?",
        n.joinedSeq,
        n.leftSeq,
        n.version,
        n.conversationId,
      );
      const updated = { ...row, joined_seq: n.joinedSeq, left_seq: n.leftSeq, version: n.version };
      this.rows.set(n.conversationId, updated);
      if (at !== row.activity_at) this.move(updated, at);
    }
  }

  /**
   * The conversations this user is a member of now, most active first: the ones whose members may
   * see this user's presence (./presencePrivacy.ts). Read through the order index; a former
   * member's entries are stepped over.
   */
  current(): string[] {
    return this.sql
      .exec<{ conversation_id: string }>(CURRENT_SQL)
      .toArray()
      .map((r) => r.conversation_id);
  }

  /**
   * Whether this user is a member now of any of `conversationIds` (another user's current
   * conversations): one primary-key lookup per id, whatever the size of this list.
   */
  memberOfAny(conversationIds: string[]): boolean {
    if (conversationIds.length === 0) return false;
    return this.sql.exec(MEMBER_OF_ANY_SQL, JSON.stringify(conversationIds)).toArray().length > 0;
  }

  /** The conversation was answered with this user's live devices at `now` (./watchedConversations.ts). */
  watch(conversationId: string, now: number): void {
    this.watches.watch(conversationId, now);
  }

  /** The conversations watched now (for tests and operators). */
  watched(): string[] {
    return this.watches.all().map((w) => w.conversationId);
  }

  /**
   * A page of the list. For a first page (or the whole list), the watched conversations are asked
   * first (in parallel) and ordered by what they answer; a conversation that cannot be asked fails
   * the page (`unavailable`) rather than leave it out of order. A bad or expired cursor is a
   * `bad_request`.
   */
  async page(userId: string, query: ListQuery, peers: (conversationId: string) => Pick<ConversationPeer, "viewForNotification">, now: () => number): Promise<Result<ListSlice>> {
    let after: { snapshot: number; key: Key } | null = null;
    if (query.cursor !== null) {
      const parsed = parseCursor(query.cursor);
      if (!parsed) return fail("bad_request", "cursor: not a cursor of this list");
      if (!this.sql.exec("SELECT 1 FROM list_snapshots WHERE id = ?", parsed.snapshot).toArray().length) {
        return fail("bad_request", "cursor: expired; read the list again from its first page");
      }
      after = parsed;
    }
    // A page after the first reads the list as it was at the first's snapshot, which catching up
    // now could not change: only a page that orders by the list as it is now asks the watched
    // conversations (up to one call each, however many there are).
    let views: Record<string, Conversation> = {};
    try {
      if (after === null) views = await this.catchUp(userId, peers, now);
    } catch (err) {
      console.warn("conversation list: a watched conversation could not be asked", String(err));
      return fail("unavailable", "a conversation could not be read; try again", 1);
    }
    if (query.limit === null) {
      const rows = this.sql.exec<Row>("SELECT * FROM conversation_list ORDER BY activity_at DESC, conversation_id DESC LIMIT ?", LIST_ALL_MAX).toArray();
      return { ok: true, entries: rows.map(entryOf), views: pick(views, rows), cursor: null, hasMore: false };
    }
    const snapshot = after?.snapshot ?? this.takeSnapshot(now());
    const { entries, hasMore } = this.read(snapshot, after?.key ?? null, query.limit);
    const last = entries.at(-1);
    const cursor = hasMore && last ? `${snapshot}.${last.at}.${last.id}` : null;
    const rows = entries.map((e) => e.row);
    return { ok: true, entries: rows.map(entryOf), views: pick(views, rows), cursor, hasMore };
  }

  /**
   * Up to `limit` entries below `after`, by their key at `snapshot`: those not moved since from
   * the index, those moved from the keys recorded for them, merged.
   */
  private read(snapshot: number, after: Key | null, limit: number): { entries: Array<Key & { row: Row }>; hasMore: boolean } {
    const unmoved = (
      after ? this.sql.exec<Row>(LIST_PAGE_SQL.after, snapshot, after.at, after.id, limit + 1) : this.sql.exec<Row>(LIST_PAGE_SQL.first, snapshot, limit + 1)
    )
      .toArray()
      .map((row) => ({ at: row.activity_at, id: row.conversation_id, row }));
    // The earliest recorded key of each entry moved since the snapshot is its key at the snapshot.
    const moved = this.sql
      .exec<{ conversation_id: string; snapshot: number; prev_at: number | null }>(
        "SELECT conversation_id, min(snapshot) AS snapshot, prev_at FROM list_moves WHERE snapshot >= ? GROUP BY conversation_id",
        snapshot,
      )
      .toArray()
      .flatMap((m) => (m.prev_at === null ? [] : [{ at: m.prev_at, id: m.conversation_id }]))
      .filter((k) => after === null || before(after, k))
      .sort((a, b) => (before(a, b) ? -1 : 1))
      .slice(0, limit + 1)
      .flatMap((k) => {
        const row = this.row(k.id);
        return row ? [{ ...k, row }] : [];
      });
    const merged = [...unmoved, ...moved].sort((a, b) => (before(a, b) ? -1 : 1));
    return { entries: merged.slice(0, limit), hasMore: merged.length > limit };
  }

  /**
   * Asks each watched conversation for the user's view and orders its entry by it. A watch whose
   * answer had lapsed before it was asked ends: every skip it allowed was of a message stored
   * before the ask. Throws if one cannot be asked.
   */
  private async catchUp(userId: string, peers: (conversationId: string) => Pick<ConversationPeer, "viewForNotification">, now: () => number): Promise<Record<string, Conversation>> {
    const watches = this.watches.all();
    const views: Record<string, Conversation> = {};
    if (watches.length === 0) return views;
    const askedAt = now();
    const answers = await Promise.all(watches.map((w) => peers(w.conversationId).viewForNotification(userId)));
    watches.forEach((_, i) => {
      const view = answers[i];
      // Only a member's or a former member's view orders (and may be shown in) the list.
      if (view && (view.leftSeq !== undefined || view.members.some((m) => m.userId === userId))) {
        this.apply([{ conversationId: view.id, joinedSeq: view.joinedSeq, leftSeq: view.leftSeq ?? null, at: view.lastMessageAt ?? view.createdAt, version: view.lastSeq }]);
        views[view.id] = view;
      }
    });
    this.watches.asked(watches, askedAt);
    return views;
  }

  /** A new snapshot for a first page; snapshots past the cursors' lifetime go, with their moves. */
  private takeSnapshot(now: number): number {
    const expired = this.sql.exec<{ id: number | null }>("SELECT max(id) AS id FROM list_snapshots WHERE at < ?", now - LIST_CURSOR_TTL_MS).one().id;
    if (expired !== null) {
      this.sql.exec("DELETE FROM list_snapshots WHERE id <= ?", expired);
      this.sql.exec("DELETE FROM list_moves WHERE snapshot <= ?", expired);
    }
    const id = this.sql.exec<{ id: number }>("INSERT INTO list_snapshots (at) VALUES (?) RETURNING id", now).one().id;
    this.snapshot = id;
    return id;
  }

  private currentSnapshot(): number {
    return (this.snapshot ??= this.sql.exec<{ id: number | null }>("SELECT max(id) AS id FROM list_snapshots").one().id ?? 0);
  }

  private row(conversationId: string): Row | undefined {
    const cached = this.rows.get(conversationId);
    if (cached) return cached;
    const row = this.sql.exec<Row>("SELECT * FROM conversation_list WHERE conversation_id = ?", conversationId).toArray()[0];
    if (row) this.rows.set(conversationId, row);
    return row;
  }

  private insert(row: Row): void {
    const snapshot = this.currentSnapshot();
    // Not in the list when the latest snapshot was taken: its pages leave it out.
    if (snapshot > 0) this.sql.exec("INSERT OR IGNORE INTO list_moves (snapshot, conversation_id, prev_at) VALUES (?, ?, NULL)", snapshot, row.conversation_id);
    this.sql.exec(
      "INSERT INTO conversation_list (conversation_id, joined_seq, left_seq, version, activity_at, moved_in) VALUES (?, ?, ?, ?, ?, ?)",
      row.conversation_id,
      row.joined_seq,
      row.left_seq,
      row.version,
      row.activity_at,
      snapshot,
    );
    this.rows.set(row.conversation_id, { ...row, moved_in: snapshot });
  }

  /** Moves an entry to `at`, first recording where it was for the latest snapshot's pages. */
  private move(row: Row, at: number): void {
    const snapshot = this.currentSnapshot();
    if (snapshot > row.moved_in) {
      this.sql.exec(
        "INSERT OR IGNORE INTO list_moves (snapshot, conversation_id, prev_at) VALUES (?, ?, ?)",
        snapshot,
        row.conversation_id,
        row.activity_at,
      );
    }
    const movedIn = Math.max(snapshot, row.moved_in);
    this.sql.exec("UPDATE conversation_list SET activity_at = ?, moved_in = ? WHERE conversation_id = ?", at, movedIn, row.conversation_id);
    this.rows.set(row.conversation_id, { ...row, activity_at: at, moved_in: movedIn });
  }
}

/** `<snapshot>.<activity>.<conversation id>`, as page() hands it out. */
function parseCursor(cursor: string): { snapshot: number; key: Key } | null {
  const match = /^(\d{1,16})\.(\d{1,16})\.(.{1,128})$/.exec(cursor);
  if (!match) return null;
  return { snapshot: Number(match[1]), key: { at: Number(match[2]), id: match[3]! } };
}

function pick(views: Record<string, Conversation>, rows: Row[]): Record<string, Conversation> {
  const out: Record<string, Conversation> = {};
  for (const r of rows) if (views[r.conversation_id]) out[r.conversation_id] = views[r.conversation_id]!;
  return out;
}
