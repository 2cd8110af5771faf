// Conversations that may skip calling this user's object for a while: those whose call found every
// live device of the user watching them live on a dedupe socket (a `watched` DeliveryAnswer,
// ../conversation/quiet.ts). Whatever reads what those calls would have
// brought (the inbox index, the conversation list) asks each watched conversation itself before
// it answers. Each reader keeps its own table, since asking ends a watch for that reader only: a
// watch whose answer had lapsed before it was asked ends, as every skip it allowed was of a
// message stored before the ask.
import { QUIET_HINT_MS } from "../contract";

export interface Watch {
  conversationId: string;
  until: number;
}

export class WatchedConversations {
  /** Rows written during this wake-up, so a busy conversation's answers write once per hint. */
  private readonly watchedUntil = new Map<string, number>();

  /** `table`: `(conversation_id TEXT PRIMARY KEY, until INTEGER NOT NULL)`, created by the reader's migrations. */
  constructor(
    private readonly sql: SqlStorage,
    private readonly table: "index_watch" | "list_watch",
  ) {}

  /** The conversation got a `watched` answer at `now`: it may skip calling for QUIET_HINT_MS. */
  watch(conversationId: string, now: number): void {
    // The row outlives the conversation's use of the answer, whatever the two clocks say.
    if ((this.watchedUntil.get(conversationId) ?? 0) >= now + QUIET_HINT_MS) return;
    const until = now + 3 * QUIET_HINT_MS;
    this.sql.exec(
      `INSERT INTO ${this.table} (conversation_id, until) VALUES (?, ?)
       ON CONFLICT (conversation_id) DO UPDATE SET until = max(until, excluded.until)`,
      conversationId,
      until,
    );
    this.watchedUntil.set(conversationId, until);
  }

  all(): Watch[] {
    return this.sql
      .exec<{ conversation_id: string; until: number }>(`SELECT conversation_id, until FROM ${this.table} ORDER BY conversation_id`)
      .toArray()
      .map((r) => ({ conversationId: r.conversation_id, until: r.until }));
  }

  /** These watches were asked at `askedAt`: those that had lapsed by then end, unless a new answer renewed them meanwhile. */
  asked(watches: Watch[], askedAt: number): void {
    for (const w of watches) {
      if (w.until >= askedAt) continue;
      this.sql.exec(`DELETE FROM ${this.table} WHERE conversation_id = ? AND until < ?`, w.conversationId, askedAt);
      if ((this.watchedUntil.get(w.conversationId) ?? 0) < askedAt) this.watchedUntil.delete(w.conversationId);
    }
  }
}
