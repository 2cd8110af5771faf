// A user's presence as stored by their object: the current status (from live sockets), the time
// they went offline, and what watchers were last told, which the debounce compares against.

export type Status = "online" | "offline";

export interface PresenceState {
  status: Status;
  /** When the user last went offline; null if never seen. */
  lastSeen: number | null;
  /** When `status` last changed: the debounce window runs from here. */
  changedAt: number;
  publishedStatus: Status;
}

type Row = { status: string; last_seen: number | null; changed_at: number; published_status: string };

const asStatus = (s: string): Status => (s === "online" ? "online" : "offline");

export class PresenceStore {
  /** The owner's id once stored (see rememberUser). */
  private remembered: string | null = null;

  constructor(private readonly sql: SqlStorage) {}

  get(): PresenceState | null {
    const row = this.sql.exec<Row>("SELECT status, last_seen, changed_at, published_status FROM presence").toArray()[0];
    return row
      ? { status: asStatus(row.status), lastSeen: row.last_seen, changedAt: row.changed_at, publishedStatus: asStatus(row.published_status) }
      : null;
  }

  /** Records the status seen now; writes only on a change. */
  update(status: Status, now: number): PresenceState {
    const current = this.get();
    if (current && current.status === status) return current;
    const next: PresenceState = {
      status,
      lastSeen: status === "offline" && current ? now : (current?.lastSeen ?? null),
      changedAt: now,
      publishedStatus: current?.publishedStatus ?? "offline",
    };
    this.sql.exec(
      `INSERT INTO presence (id, status, last_seen, changed_at, published_status) VALUES (1, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET status = excluded.status, last_seen = excluded.last_seen, changed_at = excluded.changed_at`,
      next.status,
      next.lastSeen,
      next.changedAt,
      next.publishedStatus,
    );
    return next;
  }

  markPublished(state: PresenceState): void {
    this.sql.exec("UPDATE presence SET published_status = ?", state.status);
  }

  /**
   * The debounce: a status that differs from the one last published is published once it has
   * held for `windowMs`, so a flap shorter than the window publishes nothing. Marks it published
   * and returns it when due at `now`, else null.
   */
  publishDue(now: number, windowMs: number): PresenceState | null {
    const state = this.get();
    if (!state || state.status === state.publishedStatus || now - state.changedAt < windowMs) return null;
    this.markPublished(state);
    return state;
  }

  /** When a status change waiting for the debounce is next due, or null. */
  nextPublishAt(windowMs: number): number | null {
    const state = this.get();
    return state && state.status !== state.publishedStatus ? state.changedAt + windowMs : null;
  }

  userId(): string | null {
    return this.sql.exec<{ user_id: string }>("SELECT user_id FROM identity").toArray()[0]?.user_id ?? null;
  }

  /** Stores the owner's id once; every inbox call passes it, so later calls skip the statement. */
  rememberUser(userId: string): void {
    if (this.remembered === userId) return;
    this.sql.exec("INSERT OR IGNORE INTO identity (id, user_id) VALUES (1, ?)", userId);
    this.remembered = userId;
  }
}
