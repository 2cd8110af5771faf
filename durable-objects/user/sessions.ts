// What the user object knows of its devices' sessions: the WebSocket tickets already used (a
// ticket opens one socket), the devices logged out lately (their tickets open none), and where
// each device has conversation sockets, so logout can close them.

/**
 * How much longer than a ticket's own expiry the object remembers it (and a logout), in case this
 * object's clock runs ahead of the Worker's that checks the expiry.
 */
export const TICKET_CLOCK_SLACK_MS = 5 * 60_000;

export class Sessions {
  /** `ticketTtlMs`: how long a ticket lives (TICKET_TTL_MS); a logout is kept that long. */
  constructor(
    private readonly sql: SqlStorage,
    private readonly ticketTtlMs: number,
  ) {}

  /**
   * A verified ticket's single use (worker/lib/tickets.ts checked its MAC and expiry): false when
   * its nonce was used already or its device has logged out since. SQLite's primary key decides
   * between two handshakes racing with the same ticket, in one synchronous step.
   */
  takeTicket(deviceId: string, nonce: string, expiresAt: number, now: number): boolean {
    this.sql.exec("DELETE FROM used_tickets WHERE until < ?", now);
    this.sql.exec("DELETE FROM revoked_devices WHERE until < ?", now);
    if (this.sql.exec("SELECT 1 FROM revoked_devices WHERE device_id = ?", deviceId).toArray().length > 0) return false;
    const inserted = this.sql.exec(
      "INSERT INTO used_tickets (nonce, until) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING RETURNING nonce",
      nonce,
      expiresAt + TICKET_CLOCK_SLACK_MS,
    );
    return inserted.toArray().length === 1;
  }

  /**
   * A logout, before its token dies: from here on no ticket of the device opens a socket. Kept as
   * long as a ticket issued before it can live.
   */
  revoke(deviceId: string, now: number): void {
    this.sql.exec(
      `INSERT INTO revoked_devices (device_id, until) VALUES (?, ?)
       ON CONFLICT (device_id) DO UPDATE SET until = excluded.until`,
      deviceId,
      now + this.ticketTtlMs + TICKET_CLOCK_SLACK_MS,
    );
  }

  /** A device opened a socket in a conversation. Stale rows cost one no-op call at logout. */
  trackConversationSocket(deviceId: string, conversationId: string, now: number): void {
    this.sql.exec(
      `INSERT INTO conversation_sockets (device_id, conversation_id, seen_at) VALUES (?, ?, ?)
       ON CONFLICT (device_id, conversation_id) DO UPDATE SET seen_at = excluded.seen_at`,
      deviceId,
      conversationId,
      now,
    );
  }

  conversationsWithSockets(deviceId: string): string[] {
    return this.sql
      .exec<{ conversation_id: string }>("SELECT conversation_id FROM conversation_sockets WHERE device_id = ?", deviceId)
      .toArray()
      .map((r) => r.conversation_id);
  }

  forgetConversationSockets(deviceId: string): void {
    this.sql.exec("DELETE FROM conversation_sockets WHERE device_id = ?", deviceId);
  }
}
