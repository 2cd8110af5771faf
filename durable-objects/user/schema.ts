// The user object's own SQLite tables. Append-only: index i is schema version i + 1, and an object
// created before a step exists runs it on its next wake-up (../lib/migrate.ts). Each table is
// owned by one module: conversation_sockets, used_tickets, revoked_devices, sessions and
// devices_to_retire by ./sessions.ts;
// delivered and delivered_through by ./inbox.ts; answered and socket_epoch by
// ./deliveryAnswers.ts; presence and identity by ./presenceState.ts; watchers by ./watchers.ts;
// key_packages and claim_bucket by ./keyPackages.ts; mls_welcomes by ./welcomes.ts.
export const USER_MIGRATIONS = [
  // Where each device has (or had) conversation sockets. Stale rows cost one no-op call at logout.
  `CREATE TABLE conversation_sockets (
     device_id TEXT NOT NULL, conversation_id TEXT NOT NULL, seen_at INTEGER NOT NULL,
     PRIMARY KEY (device_id, conversation_id))`,
  // Messages already relayed, so an at-least-once fan-out reaches each device once. Pruned after a day.
  `CREATE TABLE delivered (
     conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,
     PRIMARY KEY (conversation_id, seq)) WITHOUT ROWID`,
  `CREATE INDEX delivered_at ON delivered (at)`,
  `CREATE TABLE presence (
     id INTEGER PRIMARY KEY CHECK (id = 1), status TEXT NOT NULL, last_seen INTEGER,
     changed_at INTEGER NOT NULL, published_status TEXT NOT NULL)`,
  // The user this object belongs to, learnt from its first call.
  `CREATE TABLE identity (id INTEGER PRIMARY KEY CHECK (id = 1), user_id TEXT NOT NULL)`,
  // Devices of other users that watch this user's presence (their viewport), until they stop.
  `CREATE TABLE watchers (
     watcher_user_id TEXT NOT NULL, watcher_device_id TEXT NOT NULL,
     PRIMARY KEY (watcher_user_id, watcher_device_id))`,
  // The highest seq relayed from each conversation whose fan-out calls come in seq order (see
  // deliver): one row per conversation instead of one per message.
  `CREATE TABLE delivered_through (conversation_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID`,
  // Conversations told which devices hold this user's sockets (a DeliveryAnswer), until when they
  // may rely on it, and the epoch that a device opening a user socket moves on (see QuietMembers).
  `CREATE TABLE answered (conversation_id TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID`,
  `CREATE TABLE socket_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL)`,
  // WebSocket tickets let through (worker/lib/tickets.ts), until they expire: a ticket opens one
  // socket. And this user's devices logged out lately, whose tickets no longer open any.
  `CREATE TABLE used_tickets (nonce TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID`,
  `CREATE INDEX used_tickets_until ON used_tickets (until)`,
  `CREATE TABLE revoked_devices (device_id TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID`,
  // MLS key packages of this user's devices: one-time ones (taken by a claim) and at most one
  // last-resort one per device (kept). The key package text is unique, so a re-upload adds nothing.
  `CREATE TABLE key_packages (
     id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, key_package TEXT NOT NULL UNIQUE,
     not_after INTEGER NOT NULL, last_resort INTEGER NOT NULL)`,
  `CREATE INDEX key_packages_device ON key_packages (device_id, last_resort, id)`,
  // The claim rate limit of this user as a claimer (a token bucket).
  `CREATE TABLE claim_bucket (id INTEGER PRIMARY KEY CHECK (id = 1), tokens REAL NOT NULL, at INTEGER NOT NULL)`,
  // Welcomes for this user's devices, until acknowledged or the user leaves the conversation.
  `CREATE TABLE mls_welcomes (
     id TEXT PRIMARY KEY, device_id TEXT NOT NULL, conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, welcome TEXT NOT NULL)`,
  // The live sessions of this user's devices (a login starts one; its token is signed, not stored:
  // worker/lib/sessionTokens.ts), until a logout deletes them or they expire.
  `CREATE TABLE sessions (
     session_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID`,
  `CREATE INDEX sessions_device ON sessions (device_id)`,
  `CREATE INDEX sessions_expiry ON sessions (expires_at)`,
  // Devices logged out whose D1 rows (the signed-in mark, push subscriptions) are not yet updated.
  `CREATE TABLE devices_to_retire (device_id TEXT PRIMARY KEY, revoked_at INTEGER NOT NULL) WITHOUT ROWID`,
  // When the session last authenticated a request, to within ACTIVITY_RESOLUTION_MS (GET /devices).
  `ALTER TABLE sessions ADD COLUMN last_active_at INTEGER`,
];
