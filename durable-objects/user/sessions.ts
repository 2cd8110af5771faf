// What the user object knows of its devices' sessions: the sessions that are live (a bearer token
// is signed, not stored, and is good while its session is here: worker/lib/sessionTokens.ts), the
// WebSocket tickets already used (a ticket opens one socket), the devices logged out lately (their
// tickets open none) and those whose D1 rows still say they are signed in, and where each device
// has conversation sockets, so logout can close them.

/**
 * How much longer than a ticket's own expiry the object remembers it (and a logout), in case this
 * object's clock runs ahead of the Worker's that checks the expiry.
 */
export const TICKET_CLOCK_SLACK_MS = 5 * 60_000;

/**
 * How finely a session's last activity is kept: an authenticated request writes it only when the
 * stored time is older than this, so most requests stay one read.
 */
export const ACTIVITY_RESOLUTION_MS = 60_000;

/** A signed-in device as its sessions tell: when it last made an authenticated request, if known. */
export interface DeviceActivity {
  deviceId: string;
  lastActiveAt: number | null;
}

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

  /** A login: the device's new session, live until `expiresAt` unless its device logs out first. */
  start(deviceId: string, sessionId: string, expiresAt: number, now: number): void {
    this.sql.exec("DELETE FROM sessions WHERE expires_at <= ?", now);
    this.sql.exec(
      "INSERT INTO sessions (session_id, device_id, created_at, expires_at, last_active_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
      sessionId,
      deviceId,
      now,
      expiresAt,
      now,
    );
  }

  /**
   * Whether a verified token's session is live: started for this device, not logged out, not
   * expired, and younger than `maxLifetimeMs` (TOKEN_TTL_DAYS now, which may have been lowered
   * since the token was signed). One primary-key read: this runs on every authenticated request.
   * A live session's last activity moves forward at most once per ACTIVITY_RESOLUTION_MS.
   */
  isLive(deviceId: string, sessionId: string, now: number, maxLifetimeMs: number): boolean {
    const row = this.sql
      .exec<{ created_at: number; expires_at: number; last_active_at: number | null }>(
        "SELECT created_at, expires_at, last_active_at FROM sessions WHERE session_id = ? AND device_id = ?",
        sessionId,
        deviceId,
      )
      .toArray()[0];
    const live = row !== undefined && row.expires_at > now && row.created_at + maxLifetimeMs > now;
    if (live && (row.last_active_at === null || row.last_active_at + ACTIVITY_RESOLUTION_MS <= now)) {
      this.sql.exec("UPDATE sessions SET last_active_at = ? WHERE session_id = ?", now, sessionId);
    }
    return live;
  }

  /** The devices with a live session (as isLive judges), each with its latest activity. */
  signedInDevices(now: number, maxLifetimeMs: number): DeviceActivity[] {
    return this.sql
      .exec<{ device_id: string; last_active_at: number | null }>(
        `SELECT device_id, MAX(last_active_at) AS last_active_at FROM sessions
         WHERE expires_at > ? AND created_at > ? GROUP BY device_id ORDER BY device_id`,
        now,
        now - maxLifetimeMs,
      )
      .toArray()
      .map((r) => ({ deviceId: r.device_id, lastActiveAt: r.last_active_at }));
  }

  /**
   * A logout, or a device signed out from elsewhere: its sessions end, so its tokens are refused
   * from here on, and no ticket of it opens a socket (kept as long as a ticket issued before can
   * live). Its D1 rows are left for `devicesToRetire`.
   */
  revoke(deviceId: string, now: number): void {
    this.sql.exec("DELETE FROM sessions WHERE device_id = ?", deviceId);
    this.sql.exec(
      `INSERT INTO revoked_devices (device_id, until) VALUES (?, ?)
       ON CONFLICT (device_id) DO UPDATE SET until = excluded.until`,
      deviceId,
      now + this.ticketTtlMs + TICKET_CLOCK_SLACK_MS,
    );
    this.sql.exec("INSERT INTO devices_to_retire (device_id, revoked_at) VALUES (?, ?) ON CONFLICT (device_id) DO NOTHING", deviceId, now);
  }

  /**
   * Whether the device logged out within the last ticket lifetime (a device never signs in again:
   * each login is a new one). Long enough for a socket accepted while its logout ran to be told.
   */
  loggedOut(deviceId: string, now: number): boolean {
    return this.sql.exec("SELECT 1 FROM revoked_devices WHERE device_id = ? AND until >= ?", deviceId, now).toArray().length > 0;
  }

  /** Logged-out devices whose D1 rows still say they are signed in, oldest first. */
  devicesToRetire(): Array<{ deviceId: string; revokedAt: number }> {
    return this.sql
      .exec<{ device_id: string; revoked_at: number }>("SELECT device_id, revoked_at FROM devices_to_retire ORDER BY revoked_at, device_id")
      .toArray()
      .map((r) => ({ deviceId: r.device_id, revokedAt: r.revoked_at }));
  }

  /** D1 now says the device is logged out. */
  retired(deviceId: string): void {
    this.sql.exec("DELETE FROM devices_to_retire WHERE device_id = ?", deviceId);
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
