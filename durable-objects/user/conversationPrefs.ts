// The user's settings of their conversations (mute, archive, pin to top): one row per
// conversation with any setting, in the user object's SQLite, so every device of the user reads
// the same and a device away gets them with the list. The frame telling the user's sockets of a
// change is sent by the caller (UserDO), which holds the sockets.
//
// Its table is a migration track of its own, beside the object's shared list (./schema.ts).
import { CONVERSATION_SETTINGS_LIMITS, DEFAULT_CONVERSATION_SETTINGS, isMuted, type ConversationSettings, type ConversationSettingsBody } from "../../protocol";
import { fail, type Result } from "../../kernel/result";

export const PREFS_MIGRATIONS_TRACK = "_schema_prefs";

// Append-only. Index i is this track's version i + 1.
export const PREFS_MIGRATIONS = [
  // A row exists only while some setting differs from the default (no row: not muted, not
  // archived, not pinned); `pinned_at` orders the pins.
  `CREATE TABLE conversation_prefs (
     conversation_id TEXT PRIMARY KEY, muted_until INTEGER, archived INTEGER NOT NULL, pinned_at INTEGER)`,
];

type Row = { conversation_id: string; muted_until: number | null; archived: number; pinned_at: number | null };

const settingsOf = (r: Row): ConversationSettings => ({ mutedUntil: r.muted_until, archived: r.archived === 1, pinnedAt: r.pinned_at });

export class ConversationPrefs {
  constructor(private readonly sql: SqlStorage) {}

  /** Every conversation with a setting, by id (a mute that has run out reads as none). */
  all(now: number): Record<string, ConversationSettings> {
    const out: Record<string, ConversationSettings> = {};
    for (const row of this.sql.exec<Row>("SELECT * FROM conversation_prefs").toArray()) out[row.conversation_id] = this.current(settingsOf(row), now);
    return out;
  }

  get(conversationId: string, now: number): ConversationSettings {
    const row = this.sql.exec<Row>("SELECT * FROM conversation_prefs WHERE conversation_id = ?", conversationId).toArray()[0];
    return row ? this.current(settingsOf(row), now) : DEFAULT_CONVERSATION_SETTINGS;
  }

  /** Whether the conversation's messages raise no notification at `now` (but those that mention the user). */
  muted(conversationId: string, now: number): boolean {
    return isMuted(this.get(conversationId, now), now);
  }

  /**
   * Applies a change; all or nothing. Pinning beyond CONVERSATION_SETTINGS_LIMITS.pinsMax is
   * refused; pinning a pinned conversation keeps its place. A mute ending at or before `now` unmutes.
   */
  change(conversationId: string, change: ConversationSettingsBody, now: number): Result<{ settings: ConversationSettings; changed: boolean }> {
    const before = this.get(conversationId, now);
    const next: ConversationSettings = { ...before };
    if (change.mutedUntil !== undefined) next.mutedUntil = change.mutedUntil !== null && change.mutedUntil > now ? change.mutedUntil : null;
    if (change.archived !== undefined) next.archived = change.archived;
    if (change.pinned === false) next.pinnedAt = null;
    if (change.pinned === true && before.pinnedAt === null) {
      const pins = this.sql.exec<{ n: number; latest: number | null }>("SELECT count(pinned_at) AS n, max(pinned_at) AS latest FROM conversation_prefs").one();
      if (pins.n >= CONVERSATION_SETTINGS_LIMITS.pinsMax) {
        return fail("bad_request", `at most ${CONVERSATION_SETTINGS_LIMITS.pinsMax} conversations are pinned; unpin one first`);
      }
      // Strictly after the latest pin, so that two pins in one millisecond keep their order.
      next.pinnedAt = Math.max(now, (pins.latest ?? -1) + 1);
    }
    const changed = next.mutedUntil !== before.mutedUntil || next.archived !== before.archived || next.pinnedAt !== before.pinnedAt;
    if (next.mutedUntil === null && !next.archived && next.pinnedAt === null) {
      this.sql.exec("DELETE FROM conversation_prefs WHERE conversation_id = ?", conversationId);
    } else {
      this.sql.exec(
        `INSERT INTO conversation_prefs (conversation_id, muted_until, archived, pinned_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (conversation_id) DO UPDATE SET muted_until = excluded.muted_until, archived = excluded.archived, pinned_at = excluded.pinned_at`,
        conversationId,
        next.mutedUntil,
        next.archived ? 1 : 0,
        next.pinnedAt,
      );
    }
    return { ok: true, settings: next, changed };
  }

  private current(settings: ConversationSettings, now: number): ConversationSettings {
    return isMuted(settings, now) ? settings : { ...settings, mutedUntil: null };
  }
}
