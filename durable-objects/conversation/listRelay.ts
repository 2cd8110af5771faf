// Tells users' objects of their memberships here (created with it, added, removed, left), for
// their conversation lists (durable-objects/user/conversationList.ts). A notice is stored in the
// same step as the change it tells, and deleted once its user's object took it: sent before the
// change's call returns (so the caller's next list has it) and, for those that failed, again
// from the alarm with backoff, as the fan-out retries. At least once; the user object applies a
// notice only if it is not older than what it holds (`version`), so a repeat changes nothing.
//
// Its table is a migration track of its own, beside the store's list (./conversationStore.ts).
import type { ListNotice, UserInbox } from "../contract";
import type { ConversationStore } from "./conversationStore";

export const LIST_RELAY_MIGRATIONS_TRACK = "_schema_list_relay";

// Append-only. Index i is this track's version i + 1.
export const LIST_RELAY_MIGRATIONS = [
  // The latest notice owed to each user (a newer change replaces an unsent one).
  `CREATE TABLE list_notices (
     user_id TEXT PRIMARY KEY, joined_seq INTEGER NOT NULL, left_seq INTEGER, at INTEGER NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID`,
];

/** Calls made at once; a 1,000-member group's creation is 20 rounds. */
const PARALLEL = 50;

type Row = { user_id: string; joined_seq: number; left_seq: number | null; at: number; version: number };

export class ListRelay {
  /** Consecutive failed sends, for the backoff (in memory: a lost value only retries sooner). */
  failures = 0;

  constructor(
    private readonly sql: SqlStorage,
    private readonly store: ConversationStore,
    private readonly users: (userId: string) => Pick<UserInbox, "listMembership">,
  ) {}

  /**
   * Queues a notice for each user whose membership differs from `before` (the member ids before
   * the change): the members not in it, and those in it who are members no more. Synchronous, so
   * it is stored with the change. Returns how many were queued.
   */
  changed(before: ReadonlySet<string>): number {
    const meta = this.store.meta;
    if (!meta) return 0;
    let queued = 0;
    for (const [userId, m] of this.store.members) {
      if (before.has(userId)) continue;
      this.put({ user_id: userId, joined_seq: Math.max(1, m.joinedSeq), left_seq: null, at: m.joinedAt, version: meta.lastSeq });
      queued++;
    }
    for (const userId of before) {
      if (this.store.members.has(userId)) continue;
      const former = this.store.formerMember(userId);
      if (!former) continue;
      this.put({ user_id: userId, joined_seq: Math.max(1, former.joinedSeq), left_seq: former.leftSeq, at: former.leftAt, version: meta.lastSeq });
      queued++;
    }
    return queued;
  }

  pending(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM list_notices").one().n;
  }

  /** Sends every pending notice; true when none is left. */
  async send(): Promise<boolean> {
    const meta = this.store.meta;
    if (!meta) return true;
    const rows = this.sql.exec<Row>("SELECT * FROM list_notices").toArray();
    let failed = false;
    for (let i = 0; i < rows.length; i += PARALLEL) {
      await Promise.all(
        rows.slice(i, i + PARALLEL).map(async (r) => {
          const notice: ListNotice = { conversationId: meta.id, joinedSeq: r.joined_seq, leftSeq: r.left_seq, at: r.at, version: r.version };
          try {
            await this.users(r.user_id).listMembership(r.user_id, [notice]);
            // Unless a newer change queued another meanwhile.
            this.sql.exec("DELETE FROM list_notices WHERE user_id = ? AND version = ?", r.user_id, r.version);
          } catch (err) {
            failed = true;
            console.warn(`conversation ${meta.id}: list notice to ${r.user_id} failed`, String(err));
          }
        }),
      );
    }
    this.failures = failed ? this.failures + 1 : 0;
    return !failed;
  }

  private put(r: Row): void {
    this.sql.exec(
      `INSERT INTO list_notices (user_id, joined_seq, left_seq, at, version) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (user_id) DO UPDATE SET joined_seq = excluded.joined_seq, left_seq = excluded.left_seq, at = excluded.at, version = excluded.version`,
      r.user_id,
      r.joined_seq,
      r.left_seq,
      r.at,
      r.version,
    );
  }
}
