// The tables of message actions (./actions.ts) in the conversation's SQLite, beside the log:
// a message's annotations live in its own row (`messages.extra`, read with every message), who
// deleted which message for themself (`hidden`), and the pins in the order they were made.
// Their steps are a migration track of their own, so they never collide with the log's.
import type { Message } from "../../protocol";

export const ACTION_MIGRATIONS_TRACK = "_schema_actions";

// Append-only. Index i is this track's version i + 1.
export const ACTION_MIGRATIONS = [
  // JSON of the message's annotations (protocol/actions.ts MessageAnnotations but `hidden`), or null.
  `ALTER TABLE messages ADD COLUMN extra TEXT`,
  `CREATE TABLE hidden (user_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (user_id, seq)) WITHOUT ROWID`,
  `CREATE TABLE pins (seq INTEGER PRIMARY KEY, pinned_by TEXT NOT NULL, pinned_at INTEGER NOT NULL)`,
  // A message's edit events, found when it is deleted for everyone (their text is erased with it).
  `CREATE INDEX messages_action_target ON messages (json_extract(body, '$.targetSeq')) WHERE kind = 'action'`,
];

/** What `messages.extra` holds: a message's annotations, each only when it applies. */
export type Annotations = Pick<
  Message,
  "replyToSeq" | "mentions" | "forwarded" | "editedAt" | "deletedAt" | "reactions" | "pinned" | "revisedSeq"
>;

/** A message's annotations as stored (the wire message carries them as fields of its own). */
export function annotationsOf(message: Message): Annotations {
  const { replyToSeq, mentions, forwarded, editedAt, deletedAt, reactions, pinned, revisedSeq } = message;
  const out: Annotations = {};
  if (replyToSeq !== undefined) out.replyToSeq = replyToSeq;
  if (mentions !== undefined) out.mentions = mentions;
  if (forwarded !== undefined) out.forwarded = forwarded;
  if (editedAt !== undefined) out.editedAt = editedAt;
  if (deletedAt !== undefined) out.deletedAt = deletedAt;
  if (reactions !== undefined && reactions.length > 0) out.reactions = reactions;
  if (pinned !== undefined) out.pinned = pinned;
  if (revisedSeq !== undefined) out.revisedSeq = revisedSeq;
  return out;
}

export class ActionTables {
  constructor(private readonly sql: SqlStorage) {}

  /** Records that `userId` deleted these messages for themself; returns the seqs that were new. */
  hide(userId: string, seqs: number[]): number[] {
    const added: number[] = [];
    for (const seq of seqs) {
      const written = this.sql.exec("INSERT OR IGNORE INTO hidden (user_id, seq) VALUES (?, ?)", userId, seq).rowsWritten;
      if (written > 0) added.push(seq);
    }
    return added;
  }

  /** Of the seqs in [from, to], those `userId` deleted for themself. */
  hiddenBetween(userId: string, from: number, to: number): Set<number> {
    const rows = this.sql
      .exec<{ seq: number }>("SELECT seq FROM hidden WHERE user_id = ? AND seq >= ? AND seq <= ?", userId, from, to)
      .toArray();
    return new Set(rows.map((r) => r.seq));
  }

  /**
   * The latest top-level message at or below `through` that `userId` did not delete for
   * themself (commits, actions and thread replies left out, as in the preview), or null.
   */
  latestShownSeq(userId: string, through: number): number | null {
    const row = this.sql
      .exec<{ seq: number }>(
        `SELECT seq FROM messages WHERE seq <= ? AND kind NOT IN ('mls.commit', 'action') AND thread_root_seq IS NULL
           AND seq NOT IN (SELECT seq FROM hidden WHERE user_id = ?) ORDER BY seq DESC LIMIT 1`,
        through,
        userId,
      )
      .toArray()[0];
    return row?.seq ?? null;
  }

  pin(seq: number, by: string, at: number): void {
    this.sql.exec(
      "INSERT INTO pins (seq, pinned_by, pinned_at) VALUES (?, ?, ?) ON CONFLICT (seq) DO NOTHING",
      seq,
      by,
      at,
    );
  }

  unpin(seq: number): boolean {
    return this.sql.exec("DELETE FROM pins WHERE seq = ?", seq).rowsWritten > 0;
  }

  pinCount(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM pins").one().n;
  }

  /** Pinned seqs, the latest pin first. */
  pinnedSeqs(): number[] {
    return this.sql
      .exec<{ seq: number }>("SELECT seq FROM pins ORDER BY pinned_at DESC, seq DESC")
      .toArray()
      .map((r) => r.seq);
  }
}

/**
 * The message as `userId` sees it after deleting it for themself: its place in the sequence kept
 * (seq stays contiguous), its content gone.
 */
export function hiddenView(message: Message): Message {
  const { ciphertext: _ciphertext, commit: _commit, ...rest } = message;
  return { ...rest, body: null, media: [], hidden: true };
}
