// The user's Web Push subscriptions (API.md "Push notifications"), kept by the user's own object:
// the push consumer asks here where a user's pushes go (worker/push/consumer.ts), so a push reads
// no D1, and a logout drops its device's subscriptions in the same step that ends its sessions.
//
// An endpoint belongs to one browser profile, so to one user at a time: D1 keeps only which user
// claimed each endpoint last (kernel/d1/pushEndpoints.ts), and a claim by another user removes the
// endpoint here (worker/routes/push.ts).
import type { PushTarget } from "../contract";

export const PUSH_MIGRATIONS_TRACK = "_schema_push_subscriptions";

// Append-only. Index i is this track's version i + 1.
export const PUSH_MIGRATIONS = [
  `CREATE TABLE push_subscriptions (
     endpoint TEXT PRIMARY KEY, device_id TEXT NOT NULL, p256dh TEXT NOT NULL, auth TEXT NOT NULL,
     created_at INTEGER NOT NULL) WITHOUT ROWID`,
  `CREATE INDEX push_subscriptions_device ON push_subscriptions (device_id)`,
];

export interface PushSubscriptionRecord extends PushTarget {
  deviceId: string;
  createdAt: number;
}

export class PushSubscriptions {
  /**
   * `max`: each message fans out into one outbound request per subscription, so a user's are
   * capped; beyond it, subscribing drops the least recently (re)subscribed.
   */
  constructor(
    private readonly sql: SqlStorage,
    private readonly max: number,
  ) {}

  /** Adds or renews a subscription (idempotent per endpoint: the latest device and keys win). */
  subscribe(record: PushSubscriptionRecord): void {
    this.sql.exec(
      `INSERT INTO push_subscriptions (endpoint, device_id, p256dh, auth, created_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (endpoint) DO UPDATE SET device_id = excluded.device_id, p256dh = excluded.p256dh,
         auth = excluded.auth, created_at = excluded.created_at`,
      record.endpoint,
      record.deviceId,
      record.p256dh,
      record.auth,
      record.createdAt,
    );
    this.sql.exec(
      `DELETE FROM push_subscriptions WHERE endpoint NOT IN
         (SELECT endpoint FROM push_subscriptions ORDER BY created_at DESC, endpoint LIMIT ?)`,
      this.max,
    );
  }

  remove(endpoint: string): void {
    this.sql.exec("DELETE FROM push_subscriptions WHERE endpoint = ?", endpoint);
  }

  /** A device signed out: it must no longer be notified. */
  dropDevice(deviceId: string): void {
    this.sql.exec("DELETE FROM push_subscriptions WHERE device_id = ?", deviceId);
  }

  /** Where the user's pushes go. */
  all(): PushTarget[] {
    return this.rows().map(targetOf);
  }

  /** The subscription at `endpoint` while it is still this user's, else null. */
  find(endpoint: string): PushTarget | null {
    const [row] = this.rows(endpoint);
    return row ? targetOf(row) : null;
  }

  /** Every subscription with its device, for operators and tests. */
  records(): PushSubscriptionRecord[] {
    return this.rows();
  }

  /** The subscriptions (at `endpoint` only, if given), oldest first. */
  private rows(endpoint?: string): PushSubscriptionRecord[] {
    const where = endpoint === undefined ? "" : "WHERE endpoint = ?";
    return this.sql
      .exec<{ endpoint: string; device_id: string; p256dh: string; auth: string; created_at: number }>(
        `SELECT endpoint, device_id, p256dh, auth, created_at FROM push_subscriptions ${where} ORDER BY created_at, endpoint`,
        ...(endpoint === undefined ? [] : [endpoint]),
      )
      .toArray()
      .map((r) => ({ endpoint: r.endpoint, deviceId: r.device_id, p256dh: r.p256dh, auth: r.auth, createdAt: r.created_at }));
  }
}

const targetOf = ({ endpoint, p256dh, auth }: PushTarget): PushTarget => ({ endpoint, p256dh, auth });
