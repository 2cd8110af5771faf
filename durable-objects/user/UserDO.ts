// One Durable Object per user: the user's device sockets (`GET /ws`), presence and its debounce,
// who watches this user, the inbox stream to every device, push for a user with no live device,
// and the registry of conversation sockets each device holds (so logout can close them).
//
// Every RPC takes the user id: an object learns its own identity from its first call and keeps it.
import { DurableObject } from "cloudflare:workers";
import {
  CLOSE,
  LIMITS,
  PROTOCOL_VERSION,
  UserClientFrame,
  type Message,
  type Presence,
  type UserServerFrame,
} from "../../protocol";
import { readSettings, type Settings } from "../../kernel/settings";
import { conversationStub, userStub } from "../../kernel/objects";
import { sharedWith } from "../../kernel/d1/privacy";
import { enqueuePushes } from "../../worker/push/jobs";
import { migrate } from "../lib/migrate";
import { readIdentity, readTicketUse, type Identity } from "../../kernel/identity";
import { exceedsUtf8, jsonError } from "../lib/socketIo";
import {
  conversationOf,
  frameOf,
  messageOf,
  type CarriedMessage,
  type InboxEvent,
  type RelayedReceipt,
} from "../conversation/fanout";
import { QUIET_HINT_MS, type DeliveryAnswer } from "../conversation/quiet";
import { PresenceStore, type PresenceState } from "./presenceState";
import type { ConversationDO as ConversationObject } from "../conversation/ConversationDO";

const MIGRATIONS = [
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
];

/**
 * How much longer than a ticket's own expiry the object remembers it (and a logout), in case this
 * object's clock runs ahead of the Worker's that checks the expiry.
 */
const TICKET_CLOCK_SLACK_MS = 5 * 60_000;

const DELIVERED_RETENTION_MS = 24 * 3600_000;

/** Per-socket state, in the attachment so it survives hibernation (well under its 16 KiB). */
interface SocketState extends Identity {
  connectedAt: number;
  lastFrameAt: number;
  /** The users this device watches (presence.watch), already filtered by the privacy rule. */
  watch: string[];
}

export class UserDO extends DurableObject<Env> {
  private readonly settings: Settings;
  private readonly presence: PresenceStore;
  private alarmAt: number | null | undefined = undefined;
  /**
   * `delivered_through` rows read or written during this wake-up. Only markDelivered writes the
   * table, and it updates this copy in the same synchronous step, so the copy cannot go stale.
   */
  private readonly deliveredThroughCache = new Map<string, number>();
  /** `answered` rows written during this wake-up, so a busy conversation's answer writes once per hint. */
  private readonly answeredUntil = new Map<string, number>();
  /** User sockets being let in: no answer names the devices online while one is. */
  private connecting = 0;
  private socketEpoch: number | undefined = undefined;
  /** How a conversation's object is told of a device coming online; tests replace it to make that fail. */
  conversationObject: (conversationId: string) => { memberOnline: ConversationObject["memberOnline"] } = (conversationId) =>
    conversationStub(this.env, conversationId);

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.settings = readSettings(env);
    migrate(ctx.storage.sql, MIGRATIONS);
    this.presence = new PresenceStore(ctx.storage.sql);
    // Keep-alives are answered without waking the object; their time is still readable.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  // --- Inbox: new messages, conversation changes, receipts ---------------------------------------

  /**
   * Relays new messages to every device of this user (but the one that sent each), once per
   * (conversationId, seq); queues a push when no device is online. `inOrder`: the call is the
   * conversation's own in-order fan-out, not a queued job (see markDelivered). `liveOn` (from
   * that conversation): devices whose dedupe conversation socket got every message above the
   * given seq live; their user sockets skip those messages. Receipts go to every device.
   * `wantsAnswer`: the caller wants this user's devices online (see QuietMembers), as the
   * in-order fan-out does and a queued job does to report them to the conversation.
   */
  async deliver(
    userId: string,
    events: InboxEvent[],
    inOrder = false,
    liveOn: Record<string, number> = {},
    wantsAnswer = inOrder,
  ): Promise<DeliveryAnswer | null> {
    this.presence.rememberUser(userId);
    const now = Date.now();
    const sockets = this.ctx.getWebSockets();
    const online = this.liveSockets(sockets, now).length > 0;
    const messages: Array<Extract<InboxEvent, { type: "message" }>> = [];
    const receipts: RelayedReceipt[] = [];
    for (const event of events) {
      if (event.type === "receipt") {
        receipts.push(event.receipt);
      } else if (event.type === "changed") {
        const conversation = await conversationStub(this.env, event.conversationId).viewForNotification(userId);
        if (conversation) this.sendAll(sockets, { type: "conversation", conversation }, null);
      } else {
        messages.push(event);
      }
    }
    if (!online) {
      // Pushes are queued before anything is marked delivered: a failed enqueue fails this call,
      // and the conversation's retry then finds the messages still fresh and queues them again.
      await enqueuePushes(
        this.env,
        messages
          .filter(({ message }) => message.senderId !== userId && message.kind !== "system")
          .filter(({ message }) => !this.wasDelivered(message, inOrder))
          .map(({ message, conversation }) => ({ userId, conversation, message: messageOf(message) })),
      );
    }
    // What is fresh is decided and recorded in one synchronous step, so an overlapping retry still
    // relays each message once.
    const fresh = this.markDelivered(
      messages.map((e) => e.message),
      now,
      inOrder,
    );
    this.relay(fresh, liveOn);
    // After the messages they may refer to. Every device gets them: a dedupe conversation socket
    // also got each one live, but only if it was open when the receipt was stored.
    for (const receipt of receipts) this.sendAll(sockets, { type: "receipt", ...receipt }, null);
    const answer = wantsAnswer ? this.answer(conversationOf(events[0]), now) : null;
    await this.wakeAt(now + DELIVERED_RETENTION_MS);
    return answer;
  }

  /**
   * For a conversation's call that asks (`deliver`): the devices holding this user's sockets,
   * while any of them is live (with none, a message may need a push, so the conversation must
   * keep calling), and the epoch. The conversation is remembered, to be told when a device opens
   * a user socket.
   */
  private answer(conversationId: string | null, now: number): DeliveryAnswer | null {
    if (conversationId === null || this.connecting > 0) return null;
    // Read again, not taken from the start of deliver: a socket let in during its awaits must be
    // named (its handshake told the conversations only of the answers given before it).
    const sockets = this.ctx.getWebSockets();
    if (this.liveSockets(sockets, now).length === 0) return null;
    // A socket whose attachment cannot be read names no device (""), which no conversation socket
    // covers: the answer is then never relied on.
    const devices = [...new Set(sockets.filter((ws) => ws.readyState === WebSocket.OPEN).map((ws) => readState(ws)?.deviceId ?? ""))];
    // The row outlives the conversation's use of the answer (QUIET_HINT_MS), whatever the clocks.
    if ((this.answeredUntil.get(conversationId) ?? 0) < now + QUIET_HINT_MS) {
      const until = now + 3 * QUIET_HINT_MS;
      this.ctx.storage.sql.exec(
        `INSERT INTO answered (conversation_id, until) VALUES (?, ?)
         ON CONFLICT (conversation_id) DO UPDATE SET until = excluded.until`,
        conversationId,
        until,
      );
      this.answeredUntil.set(conversationId, until);
    }
    return { devices, epoch: this.epoch() };
  }

  private epoch(): number {
    return (this.socketEpoch ??=
      this.ctx.storage.sql.exec<{ epoch: number }>("SELECT epoch FROM socket_epoch").toArray()[0]?.epoch ?? 0);
  }

  /**
   * Before a user socket is let in: every conversation that may still skip this user on an
   * earlier answer is told, with a new epoch, so that none skips a message the new device has
   * neither synced (it syncs after `ready`) nor been sent live.
   */
  private async endAnswers(userId: string): Promise<void> {
    const rows = this.ctx.storage.sql
      .exec<{ conversation_id: string }>("SELECT conversation_id FROM answered WHERE until > ?", Date.now())
      .toArray();
    if (rows.length > 0) {
      const epoch = this.epoch() + 1;
      this.ctx.storage.sql.exec(
        "INSERT INTO socket_epoch (id, epoch) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch",
        epoch,
      );
      this.socketEpoch = epoch;
      await Promise.all(rows.map((r) => this.conversationObject(r.conversation_id).memberOnline(userId, epoch)));
    }
    this.ctx.storage.sql.exec("DELETE FROM answered");
    this.answeredUntil.clear();
  }

  /**
   * Sends each message's frame to the user's sockets but those of its sender's device and of the
   * devices in `liveOn` whose conversation socket got it live. Each device's sockets are looked up
   * once per call, not once per message.
   */
  private relay(messages: CarriedMessage[], liveOn: Record<string, number>): void {
    if (messages.length === 0) return;
    const sockets = this.ctx.getWebSockets();
    const byDevice = new Map<string, WebSocket[]>();
    const socketsOf = (deviceId: string) => {
      let found = byDevice.get(deviceId);
      if (!found) byDevice.set(deviceId, (found = this.ctx.getWebSockets(`d:${deviceId}`)));
      return found;
    };
    const live = Object.entries(liveOn);
    for (const message of messages) {
      const except = new Set(socketsOf(message.senderDeviceId));
      for (const [deviceId, after] of live) if (message.seq > after) for (const ws of socketsOf(deviceId)) except.add(ws);
      const frame = frameOf(message);
      for (const ws of sockets) if (!except.has(ws)) trySend(ws, frame);
    }
  }

  /**
   * Records messages as delivered and returns those that were not already.
   *
   * A conversation's own fan-out calls (`inOrder`) come one at a time, in seq order, each from
   * the conversation's cursor on, so a message is new exactly when it is above the highest seq
   * relayed from that conversation: one row per conversation, read and moved once per call. That
   * per-message row was the largest part of a fan-out call's cost (bench S2 profile). Queued
   * fan-out (large groups) may arrive out of order and keeps one row per message; the two never
   * carry the same seq, since the conversation's cursor passes a batch once it is queued.
   */
  private markDelivered(messages: CarriedMessage[], now: number, inOrder: boolean): CarriedMessage[] {
    if (inOrder) {
      const fresh: CarriedMessage[] = [];
      for (const [conversationId, ofConversation] of groupByConversation(messages)) {
        const through = this.deliveredThrough(conversationId);
        const unsent = ofConversation.filter((m) => m.seq > through);
        if (unsent.length === 0) continue;
        const seq = Math.max(...unsent.map((m) => m.seq));
        this.ctx.storage.sql.exec(
          `INSERT INTO delivered_through (conversation_id, seq) VALUES (?, ?)
           ON CONFLICT (conversation_id) DO UPDATE SET seq = max(seq, excluded.seq)`,
          conversationId,
          seq,
        );
        this.deliveredThroughCache.set(conversationId, seq);
        fresh.push(...unsent);
      }
      return fresh;
    }
    // One statement per 30 messages rather than one per message.
    const fresh: CarriedMessage[] = [];
    for (let i = 0; i < messages.length; i += 30) {
      const chunk = messages.slice(i, i + 30);
      const inserted = new Set(
        this.ctx.storage.sql
          .exec<{ conversation_id: string; seq: number }>(
            `INSERT OR IGNORE INTO delivered (conversation_id, seq, at) VALUES ${chunk.map(() => "(?, ?, ?)").join(", ")}
             RETURNING conversation_id, seq`,
            ...chunk.flatMap((m) => [m.conversationId, m.seq, now]),
          )
          .toArray()
          .map((r) => `${r.conversation_id}\n${r.seq}`),
      );
      for (const m of chunk) if (inserted.has(`${m.conversationId}\n${m.seq}`)) fresh.push(m);
    }
    return fresh;
  }

  private wasDelivered(message: CarriedMessage, inOrder: boolean): boolean {
    if (inOrder) return message.seq <= this.deliveredThrough(message.conversationId);
    return (
      this.ctx.storage.sql
        .exec("SELECT 1 FROM delivered WHERE conversation_id = ? AND seq = ?", message.conversationId, message.seq)
        .toArray().length > 0
    );
  }

  private deliveredThrough(conversationId: string): number {
    let seq = this.deliveredThroughCache.get(conversationId);
    if (seq === undefined) {
      seq =
        this.ctx.storage.sql
          .exec<{ seq: number }>("SELECT seq FROM delivered_through WHERE conversation_id = ?", conversationId)
          .toArray()[0]?.seq ?? 0;
      this.deliveredThroughCache.set(conversationId, seq);
    }
    return seq;
  }

  // --- Presence ----------------------------------------------------------------------------------

  /** This user's presence right now (not debounced): what GET /presence reports. */
  async getPresence(userId: string): Promise<Presence> {
    this.presence.rememberUser(userId);
    const now = Date.now();
    const state = this.refreshPresence(now);
    return { userId, status: state.status, lastSeen: state.status === "online" ? null : state.lastSeen };
  }

  /** Registers a watcher device and returns the current presence for its first paint. */
  async watch(userId: string, watcher: Identity): Promise<Presence> {
    this.ctx.storage.sql.exec(
      "INSERT OR IGNORE INTO watchers (watcher_user_id, watcher_device_id) VALUES (?, ?)",
      watcher.userId,
      watcher.deviceId,
    );
    return this.getPresence(userId);
  }

  async unwatch(watcher: Identity): Promise<void> {
    this.ctx.storage.sql.exec(
      "DELETE FROM watchers WHERE watcher_user_id = ? AND watcher_device_id = ?",
      watcher.userId,
      watcher.deviceId,
    );
  }

  /**
   * A watched user's presence changed: relays it to this user's devices that watch them.
   * Returns the devices that no longer do, so the watched user's object can forget them.
   */
  async presenceEvent(deviceIds: string[], event: Presence): Promise<string[]> {
    const frame = JSON.stringify({ type: "presence", ...event } satisfies UserServerFrame);
    const gone: string[] = [];
    for (const deviceId of deviceIds) {
      const watching = this.ctx
        .getWebSockets(`d:${deviceId}`)
        .filter((ws) => readState(ws)?.watch.includes(event.userId));
      if (watching.length === 0) gone.push(deviceId);
      for (const ws of watching) trySend(ws, frame);
    }
    return gone;
  }

  // --- Logout ------------------------------------------------------------------------------------

  async trackConversationSocket(deviceId: string, conversationId: string): Promise<void> {
    this.ctx.storage.sql.exec(
      `INSERT INTO conversation_sockets (device_id, conversation_id, seen_at) VALUES (?, ?, ?)
       ON CONFLICT (device_id, conversation_id) DO UPDATE SET seen_at = excluded.seen_at`,
      deviceId,
      conversationId,
      Date.now(),
    );
  }

  /** Logout: closes the device's user sockets and its sockets in every conversation with 4001. */
  async closeDevice(deviceId: string): Promise<void> {
    for (const ws of this.ctx.getWebSockets(`d:${deviceId}`)) this.closeSocket(ws, CLOSE.unauthorized, "logged out");
    const rows = this.ctx.storage.sql
      .exec<{ conversation_id: string }>("SELECT conversation_id FROM conversation_sockets WHERE device_id = ?", deviceId)
      .toArray();
    await Promise.all(
      rows.map((r) =>
        conversationStub(this.env, r.conversation_id)
          .closeDevice(deviceId)
          .catch((err: unknown) => console.warn(`closeDevice in ${r.conversation_id} failed`, String(err))),
      ),
    );
    this.ctx.storage.sql.exec("DELETE FROM conversation_sockets WHERE device_id = ?", deviceId);
    this.onSocketsChanged(Date.now());
  }

  // --- WebSocket tickets ------------------------------------------------------------------------

  /**
   * Lets a verified ticket (worker/lib/tickets.ts) open one conversation socket (a user socket's
   * upgrade takes it in `fetch`): false when its nonce was used already or its device has logged
   * out since. SQLite's primary key decides between two handshakes racing with the same ticket,
   * in one synchronous step.
   */
  async consumeTicket(userId: string, deviceId: string, nonce: string, expiresAt: number): Promise<boolean> {
    this.presence.rememberUser(userId);
    return this.takeTicket(deviceId, nonce, expiresAt);
  }

  /** A ticket's single use (see consumeTicket): false if it was used, or its device logged out. */
  private takeTicket(deviceId: string, nonce: string, expiresAt: number): boolean {
    const sql = this.ctx.storage.sql;
    const now = Date.now();
    sql.exec("DELETE FROM used_tickets WHERE until < ?", now);
    sql.exec("DELETE FROM revoked_devices WHERE until < ?", now);
    if (sql.exec("SELECT 1 FROM revoked_devices WHERE device_id = ?", deviceId).toArray().length > 0) return false;
    const inserted = sql.exec(
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
  async revokeDevice(userId: string, deviceId: string): Promise<void> {
    this.presence.rememberUser(userId);
    this.ctx.storage.sql.exec(
      `INSERT INTO revoked_devices (device_id, until) VALUES (?, ?)
       ON CONFLICT (device_id) DO UPDATE SET until = excluded.until`,
      deviceId,
      Date.now() + this.settings.ticketTtlMs + TICKET_CLOCK_SLACK_MS,
    );
  }

  // --- The user socket -----------------------------------------------------------------------------

  async fetch(request: Request): Promise<Response> {
    const identity = readIdentity(request.headers);
    if (!identity) return jsonError("unauthorized", "no identity");
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return jsonError("bad_request", "expected a WebSocket upgrade");
    }
    this.presence.rememberUser(identity.userId);
    // A ticket's single use is taken here, in the call that opens the socket (the Worker checked
    // its MAC and expiry), as consumeTicket takes it for a conversation socket.
    const ticket = readTicketUse(request.headers);
    if (ticket && !this.takeTicket(identity.deviceId, ticket.nonce, ticket.expiresAt)) {
      return jsonError("unauthorized", "invalid or expired ticket");
    }
    if (this.ctx.getWebSockets(`d:${identity.deviceId}`).length >= this.settings.maxSocketsPerDevice) {
      return jsonError("rate_limited", "too many sockets for this device", 10);
    }
    this.connecting++;
    try {
      await this.endAnswers(identity.userId);
    } catch (err) {
      this.connecting--;
      console.warn("user socket: a conversation could not be told of a new device", String(err));
      return jsonError("unavailable", "try again", 1);
    }
    this.connecting--;
    const now = Date.now();
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    this.ctx.acceptWebSocket(server, [`d:${identity.deviceId}`]);
    const state: SocketState = { ...identity, connectedAt: now, lastFrameAt: now, watch: [] };
    server.serializeAttachment(state);
    trySend(server, JSON.stringify({ type: "ready", userId: identity.userId, deviceId: identity.deviceId, protocolVersion: PROTOCOL_VERSION } satisfies UserServerFrame));
    this.onSocketsChanged(now);
    return new Response(null, { status: 101, webSocket: client });
  }

  async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): Promise<void> {
    if (ws.readyState !== WebSocket.OPEN) return;
    const state = readState(ws);
    if (!state) return this.closeSocket(ws, CLOSE.unauthorized, "no identity");
    if (typeof data !== "string") return this.sendError(ws, "frames are JSON text");
    if (exceedsUtf8(data, LIMITS.frameBytesMax)) return this.closeSocket(ws, CLOSE.tooBig, "frame over 64 KiB");
    const now = Date.now();
    state.lastFrameAt = now;
    ws.serializeAttachment(state);
    let json: unknown;
    try {
      json = JSON.parse(data);
    } catch {
      return this.sendError(ws, "frame is not valid JSON");
    }
    const parsed = UserClientFrame.safeParse(json);
    if (!parsed.success) return this.sendError(ws, parsed.error.issues.map((i) => i.message).join("; "));
    try {
      await this.setWatch(ws, state, parsed.data.userIds);
    } catch (err) {
      console.error("presence.watch failed", err);
      trySend(ws, JSON.stringify({ type: "error", code: "internal", message: "internal error" } satisfies UserServerFrame));
    }
    this.onSocketsChanged(now);
  }

  async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    this.closeSocket(ws, code === 1005 || code === 1006 ? 1000 : code, "closed");
  }

  async webSocketError(ws: WebSocket): Promise<void> {
    this.closeSocket(ws, 1011, "error");
  }

  // --- The alarm: keep-alive expiry, debounced presence events, pruning --------------------------

  async alarm(): Promise<void> {
    this.alarmAt = null;
    const now = Date.now();
    for (const ws of this.ctx.getWebSockets()) {
      if (ws.readyState === WebSocket.OPEN && this.lastAlive(ws) + this.settings.presenceTimeoutMs <= now) {
        // Silent past the keep-alive window: the runtime may never report this socket closed.
        this.closeSocket(ws, CLOSE.idle, "keep-alive timeout", false);
      }
    }
    const state = this.refreshPresence(now);
    if (state.status !== state.publishedStatus && now - state.changedAt >= this.settings.presenceDebounceMs) {
      this.presence.markPublished(state);
      this.ctx.waitUntil(this.publish({ userId: this.userIdOf(), status: state.status, lastSeen: state.status === "online" ? null : state.lastSeen }));
    }
    this.ctx.storage.sql.exec("DELETE FROM delivered WHERE at < ?", now - DELIVERED_RETENTION_MS);
    await this.scheduleNext(now);
  }

  // ---------------------------------------------------------------------------------------------

  private async setWatch(ws: WebSocket, state: SocketState, requested: string[]): Promise<void> {
    const wanted = [...new Set(requested)].filter((id) => id !== state.userId);
    // The privacy rule: only users who share a conversation with the watcher are disclosed.
    const allowed = await sharedWith(this.env.DB, state.userId, wanted);
    const before = new Set(state.watch);
    const after = wanted.filter((id) => allowed.has(id));
    const added = after.filter((id) => !before.has(id));
    const removed = state.watch.filter((id) => !allowed.has(id) || !after.includes(id));
    state.watch = after;
    ws.serializeAttachment(state);
    const watcher: Identity = { userId: state.userId, deviceId: state.deviceId };
    await Promise.all([
      ...removed.map((id) => userStub(this.env, id).unwatch(watcher)),
      ...added.map(async (id) => {
        const presence = await userStub(this.env, id).watch(id, watcher);
        trySend(ws, JSON.stringify({ type: "presence", ...presence } satisfies UserServerFrame));
      }),
    ]);
  }

  private async publish(event: Presence): Promise<void> {
    const rows = this.ctx.storage.sql
      .exec<{ watcher_user_id: string; watcher_device_id: string }>("SELECT watcher_user_id, watcher_device_id FROM watchers")
      .toArray();
    const byUser = new Map<string, string[]>();
    for (const r of rows) byUser.set(r.watcher_user_id, [...(byUser.get(r.watcher_user_id) ?? []), r.watcher_device_id]);
    await Promise.all(
      [...byUser].map(async ([watcherUserId, deviceIds]) => {
        try {
          const gone = await userStub(this.env, watcherUserId).presenceEvent(deviceIds, event);
          for (const deviceId of gone) {
            this.ctx.storage.sql.exec(
              "DELETE FROM watchers WHERE watcher_user_id = ? AND watcher_device_id = ?",
              watcherUserId,
              deviceId,
            );
          }
        } catch (err) {
          console.warn(`presence event to ${watcherUserId} failed`, String(err));
        }
      }),
    );
  }

  /** Recomputes presence from the sockets and, on a change, arranges the debounced event. */
  private refreshPresence(now: number): PresenceState {
    const online = this.liveSockets(this.ctx.getWebSockets(), now).length > 0;
    return this.presence.update(online ? "online" : "offline", now);
  }

  private onSocketsChanged(now: number): void {
    this.refreshPresence(now);
    this.ctx.waitUntil(this.scheduleNext(now));
  }

  /** The next moment something is due: a debounced event, or a socket's keep-alive expiry. */
  private async scheduleNext(now: number): Promise<void> {
    const state = this.presence.get();
    let next = Number.POSITIVE_INFINITY;
    if (state && state.status !== state.publishedStatus) next = Math.min(next, state.changedAt + this.settings.presenceDebounceMs);
    for (const ws of this.liveSockets(this.ctx.getWebSockets(), now)) {
      next = Math.min(next, this.lastAlive(ws) + this.settings.presenceTimeoutMs);
    }
    const oldest = this.ctx.storage.sql.exec<{ at: number | null }>("SELECT min(at) AS at FROM delivered").one().at;
    if (oldest !== null) next = Math.min(next, oldest + DELIVERED_RETENTION_MS);
    if (next !== Number.POSITIVE_INFINITY) await this.wakeAt(Math.max(next, now));
  }

  private async wakeAt(at: number): Promise<void> {
    if (this.alarmAt === undefined) this.alarmAt = await this.ctx.storage.getAlarm();
    if (this.alarmAt !== null && this.alarmAt <= at) return;
    this.alarmAt = at;
    await this.ctx.storage.setAlarm(at);
  }

  /** The last sign of life: a frame, a keep-alive (answered by the runtime), or the handshake. */
  private lastAlive(ws: WebSocket): number {
    const state = readState(ws);
    const ping = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
    return Math.max(ping, state?.lastFrameAt ?? 0, state?.connectedAt ?? 0);
  }

  private liveSockets(sockets: WebSocket[], now: number): WebSocket[] {
    return sockets.filter(
      (ws) => ws.readyState === WebSocket.OPEN && this.lastAlive(ws) + this.settings.presenceTimeoutMs > now,
    );
  }

  private userIdOf(): string {
    return this.presence.userId() ?? "";
  }

  private sendAll(sockets: WebSocket[], frame: UserServerFrame, exceptDeviceId: string | null): void {
    if (sockets.length === 0) return;
    const text = JSON.stringify(frame);
    // The device tag finds the sender's sockets without reading every socket's attachment.
    const except = exceptDeviceId === null ? [] : this.ctx.getWebSockets(`d:${exceptDeviceId}`);
    for (const ws of sockets) if (!except.includes(ws)) trySend(ws, text);
  }

  private sendError(ws: WebSocket, message: string): void {
    trySend(ws, JSON.stringify({ type: "error", code: "bad_request", message } satisfies UserServerFrame));
  }

  private closeSocket(ws: WebSocket, code: number, reason: string, refresh = true): void {
    const state = readState(ws);
    try {
      ws.close(code, reason);
    } catch {
      // already closed
    }
    if (state && state.watch.length > 0) {
      const watcher: Identity = { userId: state.userId, deviceId: state.deviceId };
      // Unless another socket of the device still watches them.
      const still = new Set(this.ctx.getWebSockets(`d:${state.deviceId}`).filter((s) => s !== ws && s.readyState === WebSocket.OPEN).flatMap((s) => readState(s)?.watch ?? []));
      for (const id of state.watch) {
        if (!still.has(id)) this.ctx.waitUntil(userStub(this.env, id).unwatch(watcher).catch(() => undefined));
      }
    }
    if (refresh) this.onSocketsChanged(Date.now());
  }
}

function readState(ws: WebSocket): SocketState | null {
  const value: unknown = ws.deserializeAttachment();
  if (typeof value !== "object" || value === null) return null;
  const v = value as Partial<SocketState>;
  if (typeof v.userId !== "string" || typeof v.deviceId !== "string") return null;
  return {
    userId: v.userId,
    deviceId: v.deviceId,
    connectedAt: typeof v.connectedAt === "number" ? v.connectedAt : 0,
    lastFrameAt: typeof v.lastFrameAt === "number" ? v.lastFrameAt : 0,
    watch: Array.isArray(v.watch) ? v.watch.filter((x): x is string => typeof x === "string") : [],
  };
}

function trySend(ws: WebSocket, frame: string): void {
  try {
    ws.send(frame);
  } catch {
    // closing; the device catches up with GET /messages?since= on reconnect
  }
}

function groupByConversation<M extends { conversationId: string }>(messages: M[]): Map<string, M[]> {
  const groups = new Map<string, M[]>();
  for (const m of messages) {
    const group = groups.get(m.conversationId);
    if (group) group.push(m);
    else groups.set(m.conversationId, [m]);
  }
  return groups;
}
