// One Durable Object per user: the user's device sockets (`GET /ws`), presence and its debounce,
// who watches this user, the inbox stream to every device, push for a user with no live device
// and the user's push subscriptions (./pushSubscriptions.ts),
// the live sessions of its devices (every authenticated request asks here whether its token's
// session is live), the user's settings of their conversations (mute, archive, pin), the
// registry of conversation sockets each device holds (so logout can close them), and the inbox
// index that GET /messages?since= pages through (./inboxIndex.ts). The class routes events; the
// work is in the modules beside it.
//
// Every RPC takes the user id: an object learns its own identity from its first call and keeps it.
import { DurableObject } from "cloudflare:workers";
import { CLOSE, LIMITS, PROTOCOL_VERSION, UserClientFrame, UserSocketQuery, type ClaimedKeyPackage, type ConversationSettings, type ConversationSettingsBody, type Device, type PendingWelcome, type Presence, type User, type UserServerFrame } from "../../protocol";
import { fail, type Result } from "../../kernel/result";
import { readIdentity, readSessionId, readTicketUse, type Identity } from "../../kernel/identity";
import { readSettings, type Settings } from "../../kernel/settings";
import { retireDevice } from "../../kernel/d1/devices";
import { d1Shards } from "../../kernel/d1/shards";
import { existingUsers } from "../../kernel/d1/directory";
import {
  conversationOf,
  peersOf,
  PUSH_SUBSCRIPTIONS_PER_USER,
  type ConversationPeer,
  type DeliveryAnswer,
  type InboxEvent,
  type ListNotice,
  type ListPage,
  type LiveOn,
  type PresencePeer,
  type PushQueueMessage,
  type PushTarget,
  type StoredKeyPackage,
  type SyncCursor,
  type UserInbox,
  type WelcomeForDevice,
} from "../contract";
import { AlarmScheduler } from "../lib/alarms";
import { TokenBuckets } from "../lib/rateLimit";
import { migrate } from "../lib/migrate";
import { closeReply, closeWithNotice, exceedsUtf8, isUpgrade, jsonError, safeClose, trySend } from "../lib/socketIo";
import { DeliveryAnswers } from "./deliveryAnswers";
import { DeviceSockets, deviceTag, type SocketState } from "./deviceSockets";
import { DELIVERED_RETENTION_MS, Inbox } from "./inbox";
import { PresenceStore, type PresenceState } from "./presenceState";
import { enqueuePushes } from "./pushJobs";
import { KEY_PACKAGES_LOW, KEY_PACKAGES_MAX, KeyPackageDirectory } from "./keyPackages";
import { Welcomes } from "./welcomes";
import { USER_MIGRATIONS } from "./schema";
import { Sessions, type DeviceActivity } from "./sessions";
import { Watchers } from "./watchers";
import { PresencePrivacy } from "./presencePrivacy";
import { ConversationPrefs, PREFS_MIGRATIONS, PREFS_MIGRATIONS_TRACK } from "./conversationPrefs";
import { INDEX_MIGRATIONS, INDEX_MIGRATIONS_TRACK, InboxIndex, type SyncPage } from "./inboxIndex";
import { ConversationList, LIST_MIGRATIONS, LIST_MIGRATIONS_TRACK, type ListQuery } from "./conversationList";
import { Profile, PROFILE_MIGRATIONS, PROFILE_MIGRATIONS_TRACK } from "./profile";
import { PUSH_MIGRATIONS, PUSH_MIGRATIONS_TRACK, PushSubscriptions, type PushSubscriptionRecord } from "./pushSubscriptions";

/** How long a logout waits before trying again to mark its device logged out in D1. */
const RETIRE_RETRY_MS = 30_000;

/**
 * What a user object reaches outside itself. `useConnections` replaces any of them: the tests
 * pass a conversation that cannot be reached.
 */
export interface UserConnections {
  conversations(conversationId: string): ConversationPeer;
  users(userId: string): PresencePeer;
  pushQueue: Pick<Queue<PushQueueMessage>, "sendBatch">;
  /** The D1 shard of a user's or a device's rows (kernel/d1/shards.ts). */
  d1(key: string): D1Database;
}

export class UserDO extends DurableObject<Env> implements UserInbox, PresencePeer {
  private readonly settings: Settings;
  private readonly connections: UserConnections;
  private readonly sockets: DeviceSockets;
  private readonly presence: PresenceStore;
  private readonly inbox: Inbox;
  private readonly answers: DeliveryAnswers;
  private readonly sessions: Sessions;
  private readonly watchers: Watchers;
  private readonly privacy: PresencePrivacy;
  private readonly keyPackages: KeyPackageDirectory;
  private readonly welcomes: Welcomes;
  private readonly prefs: ConversationPrefs;
  private readonly index: InboxIndex;
  private readonly list: ConversationList;
  private readonly profile: Profile;
  private readonly pushSubscriptions: PushSubscriptions;
  private readonly alarms: AlarmScheduler<"keepalive" | "presence" | "prune" | "retire">;
  /** Per device: every frame of its user sockets costs a token (a watch calls up to 200 objects). */
  private readonly frameLimiter: TokenBuckets;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.settings = readSettings(env);
    const peers = peersOf(env);
    this.connections = { conversations: peers.conversation, users: peers.user, pushQueue: env.PUSH_QUEUE, d1: (key) => d1Shards(env).of(key) };
    const sql = ctx.storage.sql;
    migrate(sql, USER_MIGRATIONS);
    migrate(sql, PREFS_MIGRATIONS, PREFS_MIGRATIONS_TRACK);
    migrate(sql, INDEX_MIGRATIONS, INDEX_MIGRATIONS_TRACK);
    migrate(sql, LIST_MIGRATIONS, LIST_MIGRATIONS_TRACK);
    migrate(sql, PROFILE_MIGRATIONS, PROFILE_MIGRATIONS_TRACK);
    migrate(sql, PUSH_MIGRATIONS, PUSH_MIGRATIONS_TRACK);
    this.prefs = new ConversationPrefs(sql);
    this.index = new InboxIndex(sql);
    this.list = new ConversationList(sql);
    this.profile = new Profile(sql);
    this.pushSubscriptions = new PushSubscriptions(sql, PUSH_SUBSCRIPTIONS_PER_USER);
    this.sockets = new DeviceSockets(ctx, this.settings);
    this.frameLimiter = new TokenBuckets(this.settings.rateLimitPerSecond, this.settings.rateLimitBurst);
    this.presence = new PresenceStore(sql);
    this.sessions = new Sessions(sql, this.settings.ticketTtlMs);
    const conversations = (id: string) => this.connections.conversations(id);
    this.answers = new DeliveryAnswers(sql, this.sockets, conversations);
    this.keyPackages = new KeyPackageDirectory(sql);
    this.welcomes = new Welcomes(sql, (deviceId) => this.sockets.ofDevice(deviceId));
    this.inbox = new Inbox({
      sql,
      sockets: this.sockets,
      queuePushes: (jobs) => enqueuePushes(this.connections.pushQueue, jobs),
      conversations,
      left: (conversationId) => this.welcomes.dropConversation(conversationId),
      muted: (conversationId, now) => this.prefs.muted(conversationId, now),
    });
    this.privacy = new PresencePrivacy({
      current: () => this.list.current(),
      existing: (userIds) => existingUsers((id) => this.connections.d1(id), userIds),
      users: (id) => this.connections.users(id),
    });
    this.watchers = new Watchers({
      sql,
      sockets: this.sockets,
      users: (id) => this.connections.users(id),
      sharedWith: async (userIds) => new Set((await this.privacy.shared(userIds)).keys()),
    });
    this.alarms = new AlarmScheduler(ctx.storage, {
      keepalive: (now) => this.closeSilentSockets(now),
      presence: (now) => this.publishIfDue(now),
      prune: (now) => {
        const oldest = this.inbox.prune(now);
        const due = [oldest === null ? null : oldest + DELIVERED_RETENTION_MS, this.index.prune(now, this.settings.inboxRetentionMs)];
        const next = due.filter((at): at is number => at !== null);
        return next.length > 0 ? Math.min(...next) : null;
      },
      retire: (now) => this.retireDevices(now),
    });
    // Keep-alives are answered without waking the object; their time is still readable.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  /** Replaces some of the object's connections (tests make a conversation unreachable). */
  useConnections(replacements: Partial<UserConnections>): void {
    Object.assign(this.connections, replacements);
  }

  // --- Inbox: new messages, conversation changes, receipts ---------------------------------------

  /**
   * Relays new messages to every device of this user (but the one that sent each), once per
   * (conversationId, seq); queues a push when no device is online (./inbox.ts). `wantsAnswer`: the
   * caller wants this user's devices online (./deliveryAnswers.ts), as the in-order fan-out does
   * and a queued job does to report them to the conversation.
   */
  async deliver(userId: string, events: InboxEvent[], inOrder = false, liveOn: LiveOn = {}, wantsAnswer = inOrder): Promise<DeliveryAnswer | null> {
    this.presence.rememberUser(userId);
    const now = Date.now();
    // Indexed for sync, and the list's order, before anything is awaited, so a page asked for
    // meanwhile finds them.
    this.index.recordEvents(events, now);
    this.list.record(events, now);
    await this.inbox.deliver(userId, events, inOrder, liveOn, now);
    const conversationId = conversationOf(events[0]);
    const answer = wantsAnswer ? this.answers.answer(conversationId, now, liveOn) : null;
    // A conversation told that every live device watches it live may skip calling here
    // (QuietMembers): sync and a list page ask it first. One open on none of them keeps calling,
    // so a user online in many conversations is asked about the few open on their devices.
    if (answer?.watched && conversationId !== null) {
      this.index.watch(conversationId, now);
      this.list.watch(conversationId, now);
    }
    await this.alarms.wakeAt("prune", now + DELIVERED_RETENTION_MS);
    return answer;
  }

  // --- Sync: GET /messages?since= from the inbox index (./inboxIndex.ts) ----------------------------

  /**
   * A page of this user's messages after `cursor`, from the index, each message read from its
   * conversation as the user may see it now; `unavailable` when a conversation cannot be reached.
   */
  async syncPage(userId: string, cursor: SyncCursor, limit: number): Promise<Result<SyncPage>> {
    this.presence.rememberUser(userId);
    return this.index.page(userId, cursor, limit, (id) => this.connections.conversations(id), () => Date.now());
  }

  /** The conversations that may have skipped calling here, which a page asks first (for tests and operators). */
  async syncWatched(): Promise<string[]> {
    return this.index.watched();
  }

  // --- The conversation list: GET /conversations (./conversationList.ts) ---------------------------

  /** Memberships of this user that changed, from their conversations (retried there until this returns). */
  async listMembership(userId: string, notices: ListNotice[]): Promise<void> {
    this.presence.rememberUser(userId);
    this.list.apply(notices);
  }

  /**
   * A page of the user's conversations, newest activity first, with the views fetched to order it
   * and the user's settings of each; the Worker reads the rest of the page from the conversations.
   */
  async conversationList(userId: string, query: ListQuery): Promise<Result<ListPage>> {
    this.presence.rememberUser(userId);
    const page = await this.list.page(userId, query, (id) => this.connections.conversations(id), () => Date.now());
    if (!page.ok) return page;
    const now = Date.now();
    const settings: Record<string, ConversationSettings> = {};
    if (query.limit === null) Object.assign(settings, this.prefs.all(now));
    else for (const e of page.entries) settings[e.id] = this.prefs.get(e.id, now);
    const { entries, views, cursor, hasMore } = page;
    return { ok: true, entries, views, cursor, hasMore, settings };
  }

  /** The conversations a list page asks first (for tests and operators). */
  async listWatched(): Promise<string[]> {
    return this.list.watched();
  }

  // --- Conversation settings: mute, archive, pin (./conversationPrefs.ts) ----------------------------

  /** The user's settings of each conversation where they differ from the defaults (for operators and tests; a list page has its own). */
  async conversationSettings(userId: string): Promise<Record<string, ConversationSettings>> {
    this.presence.rememberUser(userId);
    return this.prefs.all(Date.now());
  }

  /** One conversation's settings (GET /conversations/:id). */
  async conversationSettingsOf(userId: string, conversationId: string): Promise<ConversationSettings> {
    this.presence.rememberUser(userId);
    return this.prefs.get(conversationId, Date.now());
  }

  /**
   * Changes one conversation's settings (the Worker checked membership and the body) and tells
   * every user socket of the user, the changing device's too, so each device holds what is stored.
   */
  async changeConversationSettings(userId: string, conversationId: string, change: ConversationSettingsBody): Promise<Result<{ settings: ConversationSettings }>> {
    this.presence.rememberUser(userId);
    const result = this.prefs.change(conversationId, change, Date.now());
    if (!result.ok) return result;
    if (result.changed) {
      const frame = { type: "conversationSettings", conversationId, settings: result.settings } satisfies UserServerFrame;
      this.sockets.sendAll(this.sockets.all(), JSON.stringify(frame));
    }
    return { ok: true, settings: result.settings };
  }

  // --- MLS: key packages and Welcomes (./keyPackages.ts, ./welcomes.ts) ---------------------------

  /** Stores a device's checked key packages, all in one step; returns its one-time count. */
  async uploadKeyPackages(userId: string, deviceId: string, packages: StoredKeyPackage[], lastResort: StoredKeyPackage | null): Promise<Result<{ count: number }>> {
    this.presence.rememberUser(userId);
    const count = this.keyPackages.upload(deviceId, packages, lastResort, Date.now());
    return count === null ? fail("bad_request", `a device keeps at most ${KEY_PACKAGES_MAX} key packages`) : { ok: true, count };
  }

  async keyPackageCount(userId: string, deviceId: string): Promise<{ count: number; lastResort: boolean }> {
    this.presence.rememberUser(userId);
    return this.keyPackages.count(deviceId, Date.now());
  }

  /** Takes one claim from this user's rate limit (this user is the claimer). */
  async takeKeyPackageClaim(userId: string): Promise<Result<{ allowed: true }>> {
    this.presence.rememberUser(userId);
    const wait = this.keyPackages.takeClaim(Date.now(), this.settings.mlsClaimsPerMinute);
    return wait > 0 ? fail("rate_limited", "too many key package claims", wait) : { ok: true, allowed: true };
  }

  /**
   * Hands out one package for each of `deviceIds` (this user's live devices but the claimer's)
   * and tells each device left below KEY_PACKAGES_LOW one-time packages.
   */
  async claimKeyPackages(userId: string, deviceIds: string[]): Promise<ClaimedKeyPackage[]> {
    this.presence.rememberUser(userId);
    const claimed = this.keyPackages.claim(deviceIds, Date.now());
    for (const c of claimed) {
      if (c.left >= KEY_PACKAGES_LOW) continue;
      const frame = JSON.stringify({ type: "mls.keyPackagesLow", deviceId: c.deviceId, count: c.left } satisfies UserServerFrame);
      for (const ws of this.sockets.ofDevice(c.deviceId)) trySend(ws, frame);
    }
    return claimed.map((c) => ({ userId, deviceId: c.deviceId, keyPackage: c.keyPackage, lastResort: c.lastResort }));
  }

  async mlsWelcomes(userId: string, welcomes: WelcomeForDevice[]): Promise<void> {
    this.presence.rememberUser(userId);
    this.welcomes.receive(welcomes);
  }

  async listWelcomes(userId: string, deviceId: string): Promise<PendingWelcome[]> {
    this.presence.rememberUser(userId);
    return this.welcomes.list(deviceId);
  }

  async deleteWelcome(userId: string, deviceId: string, id: string): Promise<Result<{ deleted: true }>> {
    this.presence.rememberUser(userId);
    return this.welcomes.delete(deviceId, id) ? { ok: true, deleted: true } : fail("not_found", "no such welcome");
  }

  // --- Presence ----------------------------------------------------------------------------------

  /** This user's presence right now (not debounced): what GET /presence and a new watch report. */
  async getPresence(userId: string): Promise<Presence> {
    this.presence.rememberUser(userId);
    return this.presenceNow(userId);
  }

  private presenceNow(userId: string): Presence {
    const state = this.refreshPresence(Date.now());
    return { userId, status: state.status, lastSeen: state.status === "online" ? null : state.lastSeen };
  }

  /**
   * `GET /presence` for this user: the presence of `userIds` as the privacy rule lets them see it
   * (./presencePrivacy.ts); `unavailable` when another user's object cannot be asked.
   */
  async presenceSeenBy(userId: string, userIds: string[]): Promise<Result<{ presence: Presence[] }>> {
    this.presence.rememberUser(userId);
    try {
      return { ok: true, presence: await this.privacy.visibleTo(userId, userIds, () => this.presenceNow(userId)) };
    } catch (err) {
      console.warn("presence: a user's object could not be asked", String(err));
      return fail("unavailable", "presence could not be checked; try again", 1);
    }
  }

  /**
   * Another user's object applying the privacy rule: this user's presence if they are a member of
   * any of `conversationIds` now. Stores nothing otherwise, so an id that is no one's leaves no
   * identity behind.
   */
  async presenceIfMember(userId: string, conversationIds: string[]): Promise<Presence | null> {
    return this.list.memberOfAny(conversationIds) ? this.getPresence(userId) : null;
  }

  /** Registers a watcher device and returns the current presence for its first paint. */
  async watch(userId: string, watcher: Identity): Promise<Presence> {
    this.watchers.add(watcher);
    return this.getPresence(userId);
  }

  async unwatch(watcher: Identity): Promise<void> {
    this.watchers.remove(watcher);
  }

  /** A watched user's presence changed: relayed to this user's devices that watch them. */
  async presenceEvent(deviceIds: string[], event: Presence): Promise<string[]> {
    return this.watchers.relay(deviceIds, event);
  }

  // --- Sessions: logout and tickets ---------------------------------------------------------------

  /**
   * A conversation accepted a socket of this device. One accepted while the device was logging
   * out (its session checked just before the logout, its tracking arriving after closeDevice ran)
   * is closed here, so a logout reaches every socket, however the two raced.
   */
  async trackConversationSocket(deviceId: string, conversationId: string): Promise<void> {
    const now = Date.now();
    if (this.sessions.loggedOut(deviceId, now)) {
      await this.connections.conversations(conversationId).closeDevice(deviceId);
      return;
    }
    this.sessions.trackConversationSocket(deviceId, conversationId, now);
  }

  /** Logout: closes the device's user sockets and its sockets in every conversation with 4001. */
  async closeDevice(deviceId: string): Promise<void> {
    for (const ws of this.sockets.ofDevice(deviceId)) this.closeSocket(ws, CLOSE.unauthorized, "logged out");
    await Promise.all(
      this.sessions.conversationsWithSockets(deviceId).map((conversationId) =>
        this.connections
          .conversations(conversationId)
          .closeDevice(deviceId)
          .catch((err: unknown) => console.warn(`closeDevice in ${conversationId} failed`, String(err))),
      ),
    );
    this.sessions.forgetConversationSockets(deviceId);
    this.onSocketsChanged(Date.now());
  }

  /**
   * Lets a verified ticket open one conversation socket (a user socket's upgrade takes it in
   * `fetch`): false when its nonce was used already or its device has logged out since.
   */
  async consumeTicket(userId: string, deviceId: string, nonce: string, expiresAt: number): Promise<boolean> {
    this.presence.rememberUser(userId);
    return this.sessions.takeTicket(deviceId, nonce, expiresAt, Date.now());
  }

  /** A login: the device's session, whose signed token the Worker hands out once this returns. */
  async startSession(userId: string, deviceId: string, sessionId: string, expiresAt: number, me?: { user: User; device: Device }): Promise<void> {
    this.presence.rememberUser(userId);
    this.sessions.start(deviceId, sessionId, expiresAt, Date.now());
    if (me) {
      this.profile.setUser(me.user);
      this.profile.setDevice(me.device);
    }
    this.devicesChanged();
  }

  /** A device was renamed (in D1 too): the user's devices showing the list fetch it again. */
  async deviceRenamed(userId: string, device?: Device): Promise<void> {
    this.presence.rememberUser(userId);
    if (device) this.profile.setDevice(device);
    this.devicesChanged();
  }

  /** The user's profile changed (in D1 too): `GET /me` answers it from here (./profile.ts). */
  async profileChanged(userId: string, user: User): Promise<void> {
    this.presence.rememberUser(userId);
    this.profile.setUser(user);
  }

  /** `GET /me` for this device, or null when this object has no copy (a device from before it kept one). */
  async me(userId: string, deviceId: string): Promise<{ user: User; device: Device } | null> {
    this.presence.rememberUser(userId);
    return this.profile.me(deviceId);
  }

  private devicesChanged(): void {
    this.sockets.sendAll(this.sockets.all(), JSON.stringify({ type: "devices" } satisfies UserServerFrame));
  }

  /** Whether a token the Worker verified (its MAC and expiry) names a live session: every authenticated request asks. */
  async checkSession(userId: string, deviceId: string, sessionId: string): Promise<boolean> {
    this.presence.rememberUser(userId);
    return this.sessions.isLive(deviceId, sessionId, Date.now(), this.settings.tokenTtlMs);
  }

  /** The user's devices with a live session and when each last made an authenticated request (GET /devices). */
  async signedInDevices(userId: string): Promise<DeviceActivity[]> {
    this.presence.rememberUser(userId);
    return this.sessions.signedInDevices(Date.now(), this.settings.tokenTtlMs);
  }

  /**
   * A logout: from the moment this returns the device's tokens are refused, no ticket of it opens
   * a socket (closeDevice then closes what it holds open), and its MLS key packages, pending
   * Welcomes and push subscriptions are gone. D1 is told after, here and, while
   * it fails, from the alarm: authentication does not read D1, so the logout does not wait for it.
   */
  async revokeDevice(userId: string, deviceId: string): Promise<void> {
    this.presence.rememberUser(userId);
    const now = Date.now();
    this.sessions.revoke(deviceId, now);
    this.keyPackages.dropDevice(deviceId);
    this.welcomes.dropDevice(deviceId);
    this.profile.dropDevice(deviceId);
    this.pushSubscriptions.dropDevice(deviceId);
    this.devicesChanged();
    const retry = await this.retireDevices(now);
    if (retry !== null) await this.alarms.wakeAt("retire", retry);
  }

  // --- Web Push subscriptions (./pushSubscriptions.ts) ---------------------------------------------

  /**
   * Keeps a subscription of a signed-in device: false, and nothing kept, once the session it came
   * with has ended (a logout running meanwhile has already dropped the device's subscriptions).
   */
  async subscribePush(userId: string, sessionId: string, subscription: PushSubscriptionRecord): Promise<boolean> {
    this.presence.rememberUser(userId);
    if (!this.sessions.isLive(subscription.deviceId, sessionId, Date.now(), this.settings.tokenTtlMs)) return false;
    this.pushSubscriptions.subscribe(subscription);
    return true;
  }

  /** Forgets a subscription: unsubscribed, gone at the push service, or claimed by another user. */
  async removePushSubscription(userId: string, endpoint: string): Promise<void> {
    this.presence.rememberUser(userId);
    this.pushSubscriptions.remove(endpoint);
  }

  /** Where this user's pushes go (the push consumer asks once per batch). */
  async pushTargets(userId: string): Promise<PushTarget[]> {
    this.presence.rememberUser(userId);
    return this.pushSubscriptions.all();
  }

  /** The subscription at `endpoint` while it is still this user's, else null (a push's retry asks). */
  async pushTarget(userId: string, endpoint: string): Promise<PushTarget | null> {
    this.presence.rememberUser(userId);
    return this.pushSubscriptions.find(endpoint);
  }

  /** Every subscription with its device (for operators and tests). */
  async pushSubscriptionRecords(userId: string): Promise<PushSubscriptionRecord[]> {
    this.presence.rememberUser(userId);
    return this.pushSubscriptions.records();
  }

  /** Marks logged-out devices as such in D1, oldest first; when D1 fails, says when to try again. */
  private async retireDevices(now: number): Promise<number | null> {
    for (const { deviceId, revokedAt } of this.sessions.devicesToRetire()) {
      try {
        await retireDevice(this.connections.d1(deviceId), deviceId, revokedAt);
      } catch (err) {
        console.warn(`marking device ${deviceId} logged out in D1 failed; retrying`, String(err));
        return now + RETIRE_RETRY_MS;
      }
      this.sessions.retired(deviceId);
    }
    return null;
  }

  // --- The user socket -----------------------------------------------------------------------------

  async fetch(request: Request): Promise<Response> {
    const identity = readIdentity(request.headers);
    if (!identity) return jsonError("unauthorized", "no identity");
    if (!isUpgrade(request)) return jsonError("bad_request", "expected a WebSocket upgrade");
    this.presence.rememberUser(identity.userId);
    // A ticket's single use is taken here, in the call that opens the socket (the Worker checked
    // its MAC and expiry), as consumeTicket takes it for a conversation socket; without a ticket,
    // the bearer token's session is checked here the same way (checkSession).
    const ticket = readTicketUse(request.headers);
    const sessionId = readSessionId(request.headers);
    if (ticket && !this.sessions.takeTicket(identity.deviceId, ticket.nonce, ticket.expiresAt, Date.now())) {
      return jsonError("unauthorized", "invalid or expired ticket");
    }
    if (!ticket && !(sessionId && this.sessions.isLive(identity.deviceId, sessionId, Date.now(), this.settings.tokenTtlMs))) {
      return jsonError("unauthorized", "unknown, expired or revoked token");
    }
    if (this.sockets.ofDevice(identity.deviceId).length >= this.settings.maxSocketsPerDevice) {
      return jsonError("rate_limited", "too many sockets for this device", 10);
    }
    // Every socket this object holds is its user's.
    if (this.sockets.all().length >= this.settings.maxSocketsPerUser) {
      return jsonError("rate_limited", "too many sockets for this user", 10);
    }
    const query = UserSocketQuery.safeParse(Object.fromEntries(new URL(request.url).searchParams));
    if (!query.success) return jsonError("bad_request", "invalid query");
    // Another protocol version: accepted and closed with 4010, as on the conversation socket, so
    // the app reloads. The socket is not the object's (not hibernatable, no presence, no watch).
    if (query.data.v !== undefined && query.data.v !== PROTOCOL_VERSION) {
      const { 0: client, 1: server } = new WebSocketPair();
      server.accept();
      closeWithNotice(server, CLOSE.protocolVersion, `protocol version ${PROTOCOL_VERSION} required`);
      return new Response(null, { status: 101, webSocket: client });
    }
    try {
      return await this.answers.beforeNewSocket(identity.userId, Date.now(), () => this.acceptSocket(identity));
    } catch (err) {
      console.warn("user socket: a conversation could not be told of a new device", String(err));
      return jsonError("unavailable", "try again", 1);
    }
  }

  private acceptSocket(identity: Identity): Response {
    const now = Date.now();
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [deviceTag(identity.deviceId)]);
    this.sockets.write(server, { ...identity, connectedAt: now, lastFrameAt: now, watch: [] });
    const ready: UserServerFrame = { type: "ready", userId: identity.userId, deviceId: identity.deviceId, protocolVersion: PROTOCOL_VERSION };
    trySend(server, JSON.stringify(ready));
    this.onSocketsChanged(now);
    return new Response(null, { status: 101, webSocket: client });
  }

  async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): Promise<void> {
    if (ws.readyState !== WebSocket.OPEN) return;
    const state = this.sockets.state(ws);
    if (!state) return this.closeSocket(ws, CLOSE.unauthorized, "no identity");
    if (this.frameLimiter.take(state.deviceId, Date.now()) > 0) return this.closeSocket(ws, CLOSE.rateLimited, "rate limited");
    if (typeof data !== "string") return sendError(ws, "bad_request", "frames are JSON text");
    if (exceedsUtf8(data, LIMITS.frameBytesMax)) return this.closeSocket(ws, CLOSE.tooBig, "frame over 64 KiB");
    const now = Date.now();
    state.lastFrameAt = now;
    this.sockets.write(ws, state);
    let json: unknown;
    try {
      json = JSON.parse(data);
    } catch {
      return sendError(ws, "bad_request", "frame is not valid JSON");
    }
    const parsed = UserClientFrame.safeParse(json);
    if (!parsed.success) return sendError(ws, "bad_request", parsed.error.issues.map((i) => i.message).join("; "));
    try {
      await this.watchers.setWatch(ws, state, parsed.data.userIds);
    } catch (err) {
      console.error("presence.watch failed", err);
      sendError(ws, "internal", "internal error");
    }
    this.onSocketsChanged(now);
  }

  async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    this.closeSocket(ws, closeReply(code), "closed", true, false);
  }

  async webSocketError(ws: WebSocket): Promise<void> {
    this.closeSocket(ws, 1011, "error", true, false);
  }

  // --- The alarm: keep-alive expiry, debounced presence events, pruning --------------------------

  async alarm(): Promise<void> {
    await this.alarms.run(Date.now());
  }

  /** Closes sockets silent past the keep-alive window (the runtime may never report them closed). */
  private closeSilentSockets(now: number): number | null {
    for (const ws of this.sockets.all()) {
      if (ws.readyState === WebSocket.OPEN && this.sockets.expiresAt(ws) <= now) this.closeSocket(ws, CLOSE.idle, "keep-alive timeout", false);
    }
    return this.nextExpiry(now);
  }

  /** Publishes a status change once it has held for the debounce window; returns when one is next due. */
  private publishIfDue(now: number): number | null {
    this.refreshPresence(now);
    const state = this.presence.publishDue(now, this.settings.presenceDebounceMs);
    if (state) {
      const event: Presence = { userId: this.presence.userId() ?? "", status: state.status, lastSeen: state.status === "online" ? null : state.lastSeen };
      this.ctx.waitUntil(this.watchers.publish(event));
    }
    return this.presence.nextPublishAt(this.settings.presenceDebounceMs);
  }

  private nextExpiry(now: number): number | null {
    const live = this.sockets.live(now);
    return live.length > 0 ? Math.min(...live.map((ws) => this.sockets.expiresAt(ws))) : null;
  }

  /** Recomputes presence from the sockets and, on a change, arranges the debounced event. */
  private refreshPresence(now: number): PresenceState {
    return this.presence.update(this.sockets.live(now).length > 0 ? "online" : "offline", now);
  }

  private onSocketsChanged(now: number): void {
    this.refreshPresence(now);
    const due: Array<["keepalive" | "presence", number | null]> = [
      ["presence", this.presence.nextPublishAt(this.settings.presenceDebounceMs)],
      ["keepalive", this.nextExpiry(now)],
    ];
    for (const [task, at] of due) if (at !== null) this.ctx.waitUntil(this.alarms.wakeAt(task, Math.max(at, now)) ?? Promise.resolve());
  }

  /** `notify`: a close we start (with its closing frame), not the answer to the client's. */
  private closeSocket(ws: WebSocket, code: number, reason: string, refresh = true, notify = true): void {
    const state = this.sockets.state(ws);
    if (notify) closeWithNotice(ws, code, reason);
    else safeClose(ws, code, reason);
    if (state) for (const call of this.watchers.stopWatching(ws, state)) this.ctx.waitUntil(call);
    if (refresh) this.onSocketsChanged(Date.now());
  }
}

function sendError(ws: WebSocket, code: "bad_request" | "internal", message: string): void {
  trySend(ws, JSON.stringify({ type: "error", code, message } satisfies UserServerFrame));
}
