// The user's inbox index: what `GET /messages?since=` pages through. It holds references, not
// copies (docs/scale.md): an entry says "seqs from_seq + 1 through through_seq of conversation C
// reached this user at `at`", and a page asks each conversation on it for those messages as the
// user may read them now (their span, what they deleted for themself, edits of messages from
// before their joining), one call per conversation per page.
//
// Exactly once. Per conversation, `indexed_through` only moves up and each entry starts where it
// stood, so a conversation's entries are disjoint and ascending; entries are numbered in this
// object's single-threaded order (AUTOINCREMENT: a number is never reused), so paging by that
// number, and inside an entry by seq, returns each seq once however entries arrive meanwhile. The
// only entry that grows is the newest (a conversation's next call extends its own entry when
// nothing came between), and only upwards, so a cursor resting at its end still sees the growth.
//
// Fed by every fan-out call that carries messages (in order or queued, in the same synchronous
// step), which also covers seqs a conversation skipped calling about while the user's devices
// watched it live (durable-objects/conversation/quiet.ts): the next call's entry starts below
// them. When nothing follows, the skipped seqs are found on demand: each conversation whose call
// found every live device of the user watching it live (so that it may skip this user, and only
// then) is watched, and before a page the object asks each watched one for its last seq
// (`syncHead`). A watch ends once asked after the answer has lapsed; the set is the conversations
// open on the user's devices lately, not every one active while a device was online.
//
// Entries are kept for a retention window (INBOX_RETENTION_DAYS), pruned by the object's alarm:
// a cursor that had not passed an entry since pruned, or a time from before the window, is refused
// (`conflict`), and the device resyncs each conversation from its history instead.
//
// Its tables are a migration track of their own, beside the object's shared list (./schema.ts).
import { fail, type Result } from "../../kernel/result";
import type { ConversationPeer, InboxEvent, SeqRange, SyncCursor, SyncSlice } from "../contract";
import { WatchedConversations } from "./watchedConversations";

export const INDEX_MIGRATIONS_TRACK = "_schema_inbox_index";

// Append-only. Index i is this track's version i + 1.
export const INDEX_MIGRATIONS = [
  `CREATE TABLE inbox_index (
     ingest_id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL,
     from_seq INTEGER NOT NULL, through_seq INTEGER NOT NULL, at INTEGER NOT NULL)`,
  `CREATE INDEX inbox_index_at ON inbox_index (at)`,
  `CREATE TABLE indexed_through (conversation_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID`,
  // Conversations told this user's devices were online, and until when they may skip calling.
  `CREATE TABLE index_watch (conversation_id TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID`,
  // The newest entry pruned (past the retention window): a cursor that had not passed it is refused.
  `CREATE TABLE index_pruned (
     id INTEGER PRIMARY KEY CHECK (id = 1), ingest_id INTEGER NOT NULL, through_seq INTEGER NOT NULL, at INTEGER NOT NULL)`,
];

/**
 * An entry's `at` is this object's clock, a message's `createdAt` its conversation's: a page from
 * an epoch-ms time starts at the first entry indexed at most this long before it, so clocks this
 * far apart still lose nothing (the messages themselves are filtered by `createdAt`).
 */
export const CLOCK_SKEW_MS = 5 * 60_000;
/** Entries read per round of a page; a page takes at most this many rounds before answering `hasMore`. */
const ROUNDS = 4;
/** A page stops once its messages' text passes this (its answer crosses RPC, capped at 32 MiB). */
export const PAGE_BYTES = 8 * 1024 * 1024;

export interface SyncPage {
  /** The page's messages, each already its JSON, comma-separated (the Worker splices them into an array). */
  messages: string;
  cursor: Omit<SyncCursor, "resume">;
  hasMore: boolean;
}

type Peer = Pick<ConversationPeer, "syncHead" | "syncSlice">;

export interface Entry {
  ingestId: number;
  conversationId: string;
  /** Where this page starts in the entry (above the cursor's seq for the cursor's entry). */
  from: number;
  through: number;
}

/**
 * The first of `entries` that can fill a page of `need` messages: each seq is at most one message,
 * so entries are taken (the last one cut short) until their seqs add up to `need`. Asking each
 * conversation for all of its entries would read and encode up to `need` messages from every
 * conversation on the page, of which the page keeps its share. `cut`: entries, or seqs of the last
 * one, were left for a later round.
 */
export function withinBudget(entries: Entry[], need: number): { asked: Entry[]; cut: boolean } {
  const asked: Entry[] = [];
  let left = need;
  for (const entry of entries) {
    const seqs = entry.through - entry.from;
    if (seqs <= 0) {
      asked.push(entry);
      continue;
    }
    if (left <= 0) return { asked, cut: true };
    if (seqs > left) {
      asked.push({ ...entry, through: entry.from + left });
      return { asked, cut: true };
    }
    asked.push(entry);
    left -= seqs;
  }
  return { asked, cut: false };
}

type Pruned = { ingest_id: number; through_seq: number; at: number };

type Row = { ingest_id: number; conversation_id: string; from_seq: number; through_seq: number; at: number };

export class InboxIndex {
  /** `indexed_through` rows read or written during this wake-up; only record() writes the table. */
  private readonly throughCache = new Map<string, number>();
  /**
   * The newest entry, once read in this wake-up (undefined: not read yet). Only record() and
   * prune() change it, in the same synchronous step, so it cannot go stale.
   */
  private newestEntry: { ingestId: number; conversationId: string; through: number } | null | undefined = undefined;
  private readonly watches: WatchedConversations;

  constructor(private readonly sql: SqlStorage) {
    this.watches = new WatchedConversations(sql, "index_watch");
  }

  /** Indexes each conversation of a fan-out call's messages up to its highest seq. Synchronous. */
  recordEvents(events: InboxEvent[], now: number): void {
    const through = new Map<string, number>();
    for (const e of events) if (e.type === "message") through.set(e.message.conversationId, Math.max(e.message.seq, through.get(e.message.conversationId) ?? 0));
    for (const [conversationId, seq] of through) this.record(conversationId, seq, now);
  }

  /** Indexes conversation `conversationId` up to `seq` at `now`, if it is not already (then true). Synchronous. */
  record(conversationId: string, seq: number, now: number): boolean {
    const from = this.indexedThrough(conversationId);
    if (seq <= from) return false;
    const newest = this.newest();
    if (newest && newest.conversationId === conversationId && newest.through === from) {
      // `at` becomes the time of the latest seqs: an entry is left out of a page from a time only
      // when everything in it reached the user before that time.
      this.sql.exec("UPDATE inbox_index SET through_seq = ?, at = ? WHERE ingest_id = ?", seq, now, newest.ingestId);
      this.newestEntry = { ...newest, through: seq };
    } else {
      const { ingest_id } = this.sql
        .exec<{ ingest_id: number }>(
          "INSERT INTO inbox_index (conversation_id, from_seq, through_seq, at) VALUES (?, ?, ?, ?) RETURNING ingest_id",
          conversationId,
          from,
          seq,
          now,
        )
        .one();
      this.newestEntry = { ingestId: ingest_id, conversationId, through: seq };
    }
    this.sql.exec(
      `INSERT INTO indexed_through (conversation_id, seq) VALUES (?, ?)
       ON CONFLICT (conversation_id) DO UPDATE SET seq = excluded.seq`,
      conversationId,
      seq,
    );
    this.throughCache.set(conversationId, seq);
    return true;
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
   * Indexes what each watched conversation may have skipped telling this user: asks each (in
   * parallel) for its last seq readable by the user; true when that added anything. A watch whose answer had lapsed before it was
   * asked ends: every skip it allowed was of a message stored before the ask. Throws if a
   * conversation cannot be asked (the page fails rather than leave a hole behind its cursor).
   */
  async catchUp(userId: string, peers: (conversationId: string) => Pick<Peer, "syncHead">, now: () => number): Promise<boolean> {
    const watches = this.watches.all();
    if (watches.length === 0) return false;
    const askedAt = now();
    const heads = await Promise.all(watches.map((w) => peers(w.conversationId).syncHead(userId)));
    const at = now();
    let added = false;
    watches.forEach((w, i) => {
      if (this.record(w.conversationId, heads[i]!, at)) added = true;
    });
    this.watches.asked(watches, askedAt);
    return added;
  }

  /**
   * A page of at most `limit` messages after `cursor`, resolved by the conversations on it: one
   * call per conversation per round, in parallel; the page that reaches the end of the index
   * first catches up the watched conversations. A conversation that cannot be reached fails the
   * page (`unavailable`: the client retries) rather than skip its entries.
   */
  async page(userId: string, cursor: SyncCursor, limit: number, peers: (conversationId: string) => Peer, now: () => number): Promise<Result<SyncPage>> {
    const pruned = this.pruned();
    if (this.expired(cursor, pruned)) return fail("conflict", "the cursor is older than the sync window: resync each conversation from its history, then sync from a time");
    const { minTime } = cursor;
    let at = { ingestId: cursor.ingestId, seq: cursor.seq };
    // `0` or a time starts after what was pruned, so the cursor it hands out is not refused.
    if (pruned && (at.ingestId < pruned.ingest_id || (at.ingestId === pruned.ingest_id && at.seq < pruned.through_seq))) {
      at = { ingestId: pruned.ingest_id, seq: pruned.through_seq };
    }
    if (minTime > 0) {
      const first = this.sql.exec<{ id: number | null }>("SELECT min(ingest_id) AS id FROM inbox_index WHERE at >= ?", minTime - CLOCK_SKEW_MS).one().id;
      if (first === null) {
        // Nothing indexed since then: the page starts after the newest entry.
        const newest = this.newest();
        if (newest && newest.ingestId > at.ingestId) at = { ingestId: newest.ingestId, seq: newest.through };
      } else if (first > at.ingestId) {
        at = { ingestId: first, seq: 0 };
      }
    }
    const out: string[] = [];
    let bytes = 0;
    const rowsPerRound = limit + 1;
    let caughtUp = false;
    // One round more for what catching up adds.
    for (let round = 0; round <= ROUNDS; round++) {
      const rows = this.sql
        .exec<Row>("SELECT * FROM inbox_index WHERE ingest_id >= ? ORDER BY ingest_id LIMIT ?", at.ingestId, rowsPerRound)
        .toArray();
      const entries: Entry[] = rows.map((r) => ({
        ingestId: r.ingest_id,
        conversationId: r.conversation_id,
        from: r.ingest_id === at.ingestId ? Math.max(r.from_seq, at.seq) : r.from_seq,
        through: r.through_seq,
      }));
      const { asked, cut } = withinBudget(entries, limit - out.length);
      let slices: Map<string, SyncSlice>;
      try {
        slices = await this.resolve(userId, asked.filter((e) => e.from < e.through), minTime, limit - out.length, peers);
      } catch (err) {
        console.warn("sync: a conversation could not be read", String(err));
        return fail("unavailable", "a conversation could not be read; try again", 1);
      }
      let full = out.length >= limit || bytes >= PAGE_BYTES;
      for (const entry of asked) {
        if (entry.from >= entry.through) {
          at = { ingestId: entry.ingestId, seq: Math.max(entry.through, entry.ingestId === at.ingestId ? at.seq : 0) };
          continue;
        }
        const slice = slices.get(entry.conversationId)!;
        for (const m of slice.messages) {
          if (m.seq <= entry.from || m.seq > entry.through) continue;
          // Full, and here is one more: the page ends before it.
          if (full) return { ok: true, messages: out.join(","), cursor: { ...at, minTime }, hasMore: true };
          out.push(m.json);
          bytes += m.json.length;
          at = { ingestId: entry.ingestId, seq: m.seq };
          full = out.length >= limit || bytes >= PAGE_BYTES;
        }
        // The conversation stopped inside this entry (its limit, size or scan bound): resume there.
        if (slice.through < entry.through) {
          at = { ingestId: entry.ingestId, seq: Math.max(slice.through, entry.from, at.ingestId === entry.ingestId ? at.seq : 0) };
          return { ok: true, messages: out.join(","), cursor: { ...at, minTime }, hasMore: true };
        }
        at = { ingestId: entry.ingestId, seq: entry.through };
      }
      // What lies past the budget is still in the index: the next round starts there, unless the
      // page is full (fewer messages than seqs when some are not the user's to read).
      if (cut) {
        if (full) return { ok: true, messages: out.join(","), cursor: { ...at, minTime }, hasMore: true };
        continue;
      }
      if (rows.length < rowsPerRound) {
        // The end of the index: only now are the watched conversations asked what they skipped,
        // so a long sync asks them once, on its last page, not on every page.
        if (!caughtUp) {
          caughtUp = true;
          let added: boolean;
          try {
            added = await this.catchUp(userId, peers, now);
          } catch (err) {
            console.warn("sync: a watched conversation could not be asked", String(err));
            return fail("unavailable", "a conversation could not be read; try again", 1);
          }
          if (added && !full) continue;
          if (added) return { ok: true, messages: out.join(","), cursor: { ...at, minTime }, hasMore: true };
        }
        return { ok: true, messages: out.join(","), cursor: { ...at, minTime }, hasMore: false };
      }
      if (full) break;
    }
    return { ok: true, messages: out.join(","), cursor: { ...at, minTime }, hasMore: true };
  }

  /** One call per conversation of `entries`, in parallel, each with all its ranges (ascending by construction). */
  private async resolve(
    userId: string,
    entries: Entry[],
    minTime: number,
    limit: number,
    peers: (conversationId: string) => Pick<Peer, "syncSlice">,
  ): Promise<Map<string, SyncSlice>> {
    const ranges = new Map<string, SeqRange[]>();
    for (const e of entries) {
      const list = ranges.get(e.conversationId);
      const last = list?.at(-1);
      // A conversation's entries touch (each starts where the index stood): one range for a run.
      if (last && last.through === e.from) last.through = e.through;
      else if (list) list.push({ from: e.from, through: e.through });
      else ranges.set(e.conversationId, [{ from: e.from, through: e.through }]);
    }
    const ids = [...ranges.keys()];
    const slices = await Promise.all(ids.map((id) => peers(id).syncSlice(userId, ranges.get(id)!, minTime, limit)));
    return new Map(ids.map((id, i) => [id, slices[i]!]));
  }

  /**
   * Forgets the entries that reached the user more than `retentionMs` ago, remembering the newest
   * of them; returns when the oldest entry left falls out of the window, if any is left.
   */
  prune(now: number, retentionMs: number): number | null {
    const cutoff = now - retentionMs;
    const newest = this.sql
      .exec<Row>("SELECT ingest_id, through_seq, at FROM inbox_index WHERE at < ? ORDER BY ingest_id DESC LIMIT 1", cutoff)
      .toArray()[0];
    if (newest) {
      this.sql.exec("DELETE FROM inbox_index WHERE at < ?", cutoff);
      this.newestEntry = undefined;
      this.sql.exec(
        `INSERT INTO index_pruned (id, ingest_id, through_seq, at) VALUES (1, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET ingest_id = max(ingest_id, excluded.ingest_id),
           through_seq = CASE WHEN excluded.ingest_id >= ingest_id THEN excluded.through_seq ELSE through_seq END, at = max(at, excluded.at)`,
        newest.ingest_id,
        newest.through_seq,
        newest.at,
      );
    }
    const oldest = this.sql.exec<{ at: number | null }>("SELECT min(at) AS at FROM inbox_index").one().at;
    return oldest === null ? null : oldest + retentionMs;
  }

  /** Whether entries the cursor had not reached (or, from a time, that may hold messages after it) were pruned. */
  private expired(cursor: SyncCursor, pruned: Pruned | undefined): boolean {
    if (!pruned) return false;
    if (cursor.resume) return cursor.ingestId < pruned.ingest_id || (cursor.ingestId === pruned.ingest_id && cursor.seq < pruned.through_seq);
    // `0` asks for everything still kept.
    return cursor.minTime > 0 && pruned.at >= cursor.minTime - CLOCK_SKEW_MS;
  }

  private pruned(): Pruned | undefined {
    return this.sql.exec<Pruned>("SELECT ingest_id, through_seq, at FROM index_pruned").toArray()[0];
  }

  private newest(): { ingestId: number; conversationId: string; through: number } | null {
    if (this.newestEntry === undefined) {
      const row = this.sql.exec<Row>("SELECT ingest_id, conversation_id, through_seq FROM inbox_index ORDER BY ingest_id DESC LIMIT 1").toArray()[0];
      this.newestEntry = row ? { ingestId: row.ingest_id, conversationId: row.conversation_id, through: row.through_seq } : null;
    }
    return this.newestEntry;
  }

  private indexedThrough(conversationId: string): number {
    let seq = this.throughCache.get(conversationId);
    if (seq === undefined) {
      seq = this.sql.exec<{ seq: number }>("SELECT seq FROM indexed_through WHERE conversation_id = ?", conversationId).toArray()[0]?.seq ?? 0;
      this.throughCache.set(conversationId, seq);
    }
    return seq;
  }
}
