// One Durable Object per conversation: it assigns `seq`, stores the message log, enforces
// membership and idempotency, holds the hibernating sockets of the devices viewing it, and feeds
// D1 through its outbox. The class only routes events; the work is in ./conversation.ts.
import { DurableObject } from "cloudflare:workers";
import {
  CLOSE,
  ConversationClientFrame,
  ConversationSocketQuery,
  LIMITS,
  PROTOCOL_VERSION,
  type ConversationServerFrame,
  type ReceiptBody,
  type Role,
} from "../../protocol";
import type * as z from "zod";
import { readSettings, type Settings } from "../../kernel/settings";
import { readIdentity, type Identity } from "../../kernel/identity";
import { fail, type Failure } from "../../kernel/result";
import { eraseUnsharedMedia, sendWithMedia } from "../../kernel/d1/mediaRecords";
import { peersOf, type ConversationPeer, type DeliveryAnswer, type DeviceKeys, type FanoutJob, type SeqRange, type SyncSlice, type UserInbox } from "../contract";
import type { Action, CommitBody } from "../../protocol";
import { AlarmScheduler } from "../lib/alarms";
import { Attachments, fieldsOf } from "../lib/attachments";
import { TokenBuckets } from "../lib/rateLimit";
import { closeReply, closeWithNotice, exceedsUtf8, isUpgrade, jsonError, safeClose, trySend } from "../lib/socketIo";
import { ConversationStore } from "./conversationStore";
import { Outbox, type D1Route } from "./d1Outbox";
import { d1Shards } from "../../kernel/d1/shards";
import { Fanout } from "./fanout";
import type { LiveCopy } from "./quiet";
import { Conversation, type CreateInput, type HistoryInput, type SendRequest } from "./conversation";
import { DeferredPass } from "./deferredPass";
import { SendStaging, type StagedSend } from "./sendStaging";
import { MlsDelivery } from "./mlsDelivery";
import { LIST_RELAY_MIGRATIONS, LIST_RELAY_MIGRATIONS_TRACK, ListRelay } from "./listRelay";
import { migrate } from "../lib/migrate";
import { backoffDelay } from "./d1Outbox";

/**
 * What a conversation reaches outside itself. `useConnections` replaces any of them: the tests pass a D1
 * that fails or a user object that throws, and the bench's "alone" Worker ones that answer at once.
 */
export interface ConversationConnections {
  /** The D1 shard of a conversation's or a media item's rows. */
  d1: D1Route;
  users(userId: string): Pick<UserInbox, "deliver" | "trackConversationSocket">;
  /** Where membership notices go: the users' objects (their conversation lists). */
  lists(userId: string): Pick<UserInbox, "listMembership">;
  /** Where Welcomes go: the new devices' user objects. */
  welcomes(userId: string): Pick<UserInbox, "mlsWelcomes">;
  fanoutQueue: Pick<Queue<FanoutJob>, "sendBatch">;
  /** Where media bytes live: a message deleted for everyone erases its media there. */
  media: Pick<R2Bucket, "delete">;
}

/** When the alarm sends a membership notice if the call that queued it could not (an eviction). */
const DEFERRED_LIST_BACKSTOP_MS = 5_000;

export class ConversationDO extends DurableObject<Env> implements ConversationPeer {
  private readonly settings: Settings;
  private readonly store: ConversationStore;
  private readonly connections: ConversationConnections;
  readonly outbox: Outbox;
  readonly fanout: Fanout;
  readonly deferred: DeferredPass;
  private readonly conversation: Conversation;
  private readonly staging: SendStaging;
  private readonly mls: MlsDelivery;
  private readonly alarms: AlarmScheduler<"pass" | "typing" | "welcomes" | "list">;
  /** Memberships told to the users' objects, for their conversation lists. */
  private readonly listRelay: ListRelay;
  /** Consecutive failed Welcome hand-overs, for the backoff (in memory: a lost value only retries sooner). */
  private welcomeFailures = 0;
  private readonly attachments = new Attachments(readAttachment);
  /** Per user: a send takes its token in Conversation.send; every other frame here. */
  private readonly limiter: TokenBuckets;
  /**
   * The object's sockets, for broadcasts: read once and again after a socket is accepted, closes
   * or fails, rather than on every message. A socket that closed and is still listed costs one
   * failed send, which is ignored.
   */
  private socketList: WebSocket[] | null = null;
  /**
   * The order in which this wake-up accepted sockets (those from before it count as 0). A receipt
   * is broadcast to every open socket as it is stored, so a socket accepted no later than the
   * count at that moment and still open got it live (see QuietMembers).
   */
  private accepted = 0;
  private readonly acceptOrder = new WeakMap<WebSocket, number>();
  /** The latest send of each socket still resolving media; in memory (nothing is pending across eviction). */
  private readonly socketSends = new WeakMap<WebSocket, Promise<void>>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.settings = readSettings(env);
    const peers = peersOf(env);
    this.connections = { d1: (key) => d1Shards(env).of(key), users: peers.user, welcomes: peers.user, lists: peers.user, fanoutQueue: env.FANOUT_QUEUE, media: env.MEDIA };
    this.store = new ConversationStore(ctx.storage.sql);
    migrate(ctx.storage.sql, LIST_RELAY_MIGRATIONS, LIST_RELAY_MIGRATIONS_TRACK);
    this.listRelay = new ListRelay(ctx.storage.sql, this.store, (userId) => this.connections.lists(userId));
    this.outbox = new Outbox(this.store, () => this.connections.d1(this.store.requireMeta().id), this.settings.outboxBatchSize, (mediaIds) =>
      eraseUnsharedMedia(this.connections.d1, this.connections.media, this.store.requireMeta().id, mediaIds),
    );
    this.fanout = new Fanout(
      this.store,
      (userId) => this.connections.users(userId),
      { sendBatch: (jobs) => this.connections.fanoutQueue.sendBatch(jobs) },
      this.settings.fanoutInlineMax,
      () => this.liveCopies(),
    );
    this.alarms = new AlarmScheduler(ctx.storage, {
      pass: async (now) => {
        await this.deferred.run();
        return this.deferred.nextRetry(now);
      },
      typing: (now) => this.conversation.lapseTyping(now),
      welcomes: (now) => this.deliverWelcomes(now),
      list: async (now) => ((await this.listRelay.send()) ? null : now + backoffDelay(this.listRelay.failures)),
    });
    this.deferred = new DeferredPass({
      store: this.store,
      outbox: this.outbox,
      fanout: this.fanout,
      settings: this.settings,
      wakeAt: (at) => this.alarms.wakeAt("pass", at),
      now: Date.now,
    });
    this.limiter = new TokenBuckets(this.settings.rateLimitPerSecond, this.settings.rateLimitBurst);
    this.conversation = new Conversation(this.store, {
      limiter: this.limiter,
      sockets: {
        all: () => this.allSockets(),
        ofUser: (userId) => ctx.getWebSockets(`u:${userId}`),
        userOf: (ws) => this.attachments.read(ws)?.userId ?? null,
      },
      defer: () => this.deferred.defer(),
      wakeAt: (at) => void this.alarms.wakeAt("typing", at),
      // The deferred pass relays them (updateReceipt asks for it), with its calls to members' objects.
      notifyReceipt: (userIds, receipt) =>
        this.fanout.noteReceipt(userIds, { conversationId: this.store.requireMeta().id, ...receipt }, this.accepted),
      // Best effort, like a frame: a device that misses it sees the messages hidden in its next
      // history or sync (both apply what the user hid).
      notifyHidden: (userId, seqs) =>
        this.ctx.waitUntil(
          this.connections
            .users(userId)
            .deliver(userId, [{ type: "hidden", conversationId: this.store.requireMeta().id, seqs }], false)
            .then(() => undefined)
            .catch((err: unknown) => console.warn(`conversation ${this.store.meta?.id}: hidden relay to ${userId} failed`, String(err))),
        ),
    });
    this.staging = new SendStaging(this.settings, (batch) => this.storeSends(batch));
    this.mls = new MlsDelivery(this.store, {
      appendCommit: (sender, clientMsgId, commit, now) => this.conversation.appendCommit(sender, clientMsgId, commit, now),
      appendDeviceLoggedOut: (device, now) => this.conversation.appendDeviceLoggedOut(device, now),
      // Handed over at once, after the commit's step is stored (the output gate holds the call
      // until then); the alarm, written with that step, is the backstop for an eviction or a
      // failure, and retries with backoff. A Welcome handed over twice is kept once.
      deliverWelcomes: () => {
        void this.alarms.wakeAt("welcomes", Date.now() + 5_000);
        this.ctx.waitUntil(this.deliverWelcomes(Date.now()).then(() => undefined));
      },
      takeRateToken: (userId, now) => this.conversation.takeRateToken(userId, now),
    });
    // Keep-alives are answered by the runtime without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  /** Replaces some of the object's connections (tests inject faults; the bench answers at once). */
  useConnections(replacements: Partial<ConversationConnections>): void {
    Object.assign(this.connections, replacements);
  }

  // --- RPC from the Worker ---------------------------------------------------------------------
  // Every entry point (these, the socket handshake, frames other than a plain send, the alarm)
  // first stores the socket sends staged before it (SendStaging), so none sees the conversation
  // without them.

  async create(input: CreateInput) {
    return this.changingMembers(
      () => this.conversation.create(input),
      (result) => result.ok && result.created,
    );
  }

  async view(userId: string) {
    this.staging.storeStaged();
    return this.conversation.view(userId);
  }

  /** For a user object relaying a membership change, including to someone just removed. */
  async viewForNotification(userId: string) {
    this.staging.storeStaged();
    return this.store.meta ? this.conversation.viewFor(userId) : null;
  }

  async addMembers(actor: Identity, userIds: string[], now: number) {
    return this.changingMembers(() => this.conversation.addMembers(actor, userIds, now));
  }

  async removeMember(actor: Identity, targetId: string, now: number) {
    return this.changingMembers(() => this.conversation.removeMember(actor, targetId, now));
  }

  /**
   * A call that may change who is a member. Directory writes (create, membership) reach D1 before
   * it returns when D1 is up, and the members' objects, so that the caller's next list and sync
   * have the system message; the users whose membership changed are told (membershipChanged). If
   * any of them is down, the alarm retries.
   */
  private async changingMembers<R extends { ok: boolean }>(change: () => R, settles: (result: R) => boolean = (result) => result.ok): Promise<R> {
    this.staging.storeStaged();
    const before = new Set(this.store.members.keys());
    const result = change();
    const told = this.membershipChanged(before);
    if (settles(result)) await this.deferred.settleNow();
    await told;
    return result;
  }

  /**
   * Queues a notice for every user whose membership changed since `before` (in the step that made
   * the change, so it is stored with it) and sends them: the change's call returns once the
   * users' objects took them, so the caller's next GET /conversations has it. Those that fail are
   * sent again from the alarm (./listRelay.ts).
   */
  private async membershipChanged(before: ReadonlySet<string>): Promise<void> {
    if (this.listRelay.changed(before) === 0) return;
    await this.alarms.wakeAt("list", Date.now() + DEFERRED_LIST_BACKSTOP_MS);
    if (!(await this.listRelay.send())) await this.alarms.wakeAt("list", Date.now() + backoffDelay(this.listRelay.failures));
  }

  /** The membership notices not yet taken by their users' objects (for operators and tests). */
  async pendingListNotices(): Promise<number> {
    return this.listRelay.pending();
  }

  async updateGroupInfo(actor: Identity, change: { title?: string | undefined; description?: string | null | undefined }, now: number) {
    this.staging.storeStaged();
    const result = this.conversation.updateGroupInfo(actor, change, now);
    // As with membership: the caller's next GET /conversations lists the new title.
    if (result.ok) await this.deferred.settleNow();
    return result;
  }

  async setRole(actor: Identity, targetId: string, role: Role, now: number) {
    this.staging.storeStaged();
    const result = this.conversation.setRole(actor, targetId, role, now);
    if (result.ok) await this.deferred.settleNow();
    return result;
  }

  async send(sender: Identity, request: SendRequest, now: number, requiredType: "group" | null = null) {
    this.staging.storeStaged();
    if (this.store.meta && this.store.members.has(sender.userId) && requiredType && this.store.meta.type !== requiredType) {
      return fail("bad_request", `conversation is not a ${requiredType}`);
    }
    // Like a socket send, a REST send awaits nothing but its own storage: the deferred pass writes
    // it to D1 with the others, and only then tells the members' objects (D1 first), so a device
    // told of the message finds it in GET /conversations. The sender has it in the answer.
    return this.conversation.send(sender, request, now, null);
  }

  /** An MLS commit (./mlsDelivery.ts); `keys` are D1's records of the devices it involves. */
  async mlsCommit(sender: Identity, body: CommitBody, keys: DeviceKeys, now: number) {
    this.staging.storeStaged();
    return this.mls.commit(sender, body, keys, now);
  }

  /** Logout of a member's device: tells the members to remove its leaf, if it has one (./mlsDelivery.ts). */
  async mlsDeviceLoggedOut(device: Identity, now: number): Promise<{ noticed: boolean }> {
    this.staging.storeStaged();
    return { noticed: this.mls.deviceLoggedOut(device, now) !== null };
  }

  async mlsGroupInfo(userId: string) {
    this.staging.storeStaged();
    return this.mls.groupInfo(userId);
  }

  /**
   * Hands the Welcomes stored with commits to their users' objects; returns when to try again
   * (backoff from 1 s to a minute) while any is left.
   */
  private async deliverWelcomes(now: number): Promise<number | null> {
    let failed = false;
    for (const [userId, welcomes] of this.mls.pendingByUser()) {
      try {
        await this.connections.welcomes(userId).mlsWelcomes(userId, welcomes);
        this.mls.delivered(welcomes.map((w) => w.id));
      } catch (err) {
        console.warn(`conversation ${this.store.meta?.id}: Welcome hand-over to ${userId} failed`, String(err));
        failed = true;
      }
    }
    this.welcomeFailures = failed ? this.welcomeFailures + 1 : 0;
    return failed ? now + Math.min(60_000, 1000 * 2 ** (this.welcomeFailures - 1)) : null;
  }

  async history(userId: string, query: HistoryInput) {
    this.staging.storeStaged();
    return this.conversation.history(userId, query);
  }

  async updateReceipt(userId: string, body: z.infer<typeof ReceiptBody>, now: number) {
    this.staging.storeStaged();
    const result = this.conversation.updateReceipt(userId, body.type, body.seq, now);
    // Like membership, a read over REST reaches D1 before it answers, so the caller's next
    // GET /conversations shows the new unread count (a read is not on the send path).
    if (result.ok) await this.deferred.flushNow();
    return result;
  }

  async receipts(userId: string) {
    this.staging.storeStaged();
    return this.conversation.receipts(userId);
  }

  // --- Message actions (./actions.ts) -----------------------------------------------------------

  /** An edit, delete for everyone, reaction or pin: appended as an `action` message, answered like a send. */
  async act(actor: Identity, clientMsgId: string, action: Action, now: number) {
    this.staging.storeStaged();
    return this.conversation.actions.act(actor, clientMsgId, action, now, null);
  }

  /** Delete for me. */
  async hide(userId: string, seqs: number[]) {
    this.staging.storeStaged();
    return this.conversation.actions.hide(userId, seqs);
  }

  async pins(userId: string) {
    this.staging.storeStaged();
    return this.conversation.actions.pins(userId);
  }

  /** Logout: the device's sockets here close with 4001. */
  async closeDevice(deviceId: string): Promise<number> {
    this.staging.storeStaged();
    const sockets = this.ctx.getWebSockets(`d:${deviceId}`);
    for (const ws of sockets) closeWithNotice(ws, CLOSE.unauthorized, "logged out");
    return sockets.length;
  }

  /**
   * A device of this member is opening a user socket: its object's earlier answers (QuietMembers)
   * no longer name all of the member's devices online, so its next calls are made again.
   */
  async memberOnline(userId: string, epoch: number): Promise<void> {
    this.fanout.quiet.memberOnline(userId, epoch);
  }

  /**
   * From the queue consumer: the member objects' answers to a job this object queued at `askedAt`
   * (QuietMembers), so that its next jobs skip the quiet members, as its own calls do.
   */
  async membersAnswered(answers: Record<string, DeliveryAnswer | null>, askedAt: number): Promise<void> {
    this.fanout.quiet.reported(answers, askedAt);
  }

  /** For a member's object closing what the fan-out skipped while the member was quiet (sync). */
  async syncHead(userId: string): Promise<number> {
    this.staging.storeStaged();
    return this.store.meta ? this.conversation.syncHead(userId) : 0;
  }

  /** A sync page's messages of this conversation, as `userId` may read them (../contract.ts SyncSlice). */
  async syncSlice(userId: string, ranges: SeqRange[], minTime: number, limit: number): Promise<SyncSlice> {
    this.staging.storeStaged();
    if (!this.store.meta) return { messages: [], through: ranges.reduce((max, r) => Math.max(max, r.through), 0) };
    return this.conversation.syncSlice(userId, ranges, minTime, limit);
  }

  async wasMemberAt(userId: string, times: number[]): Promise<boolean[]> {
    return this.store.meta ? this.store.wasMemberAt(userId, times) : times.map(() => false);
  }

  /** The messages stored but not yet relayed to the members' objects (for operators and tests). */
  async pendingFanout(): Promise<number> {
    this.staging.storeStaged();
    return (this.store.meta?.lastSeq ?? 0) - this.store.fanoutSeq();
  }

  /** The number of outbox rows not yet in D1 (for operators and tests). */
  async pendingOutbox(): Promise<number> {
    this.staging.storeStaged();
    return this.store.outboxSize();
  }

  // --- WebSockets --------------------------------------------------------------------------------

  async fetch(request: Request): Promise<Response> {
    this.staging.storeStaged();
    const identity = readIdentity(request.headers);
    if (!identity) return jsonError("unauthorized", "no identity");
    if (!isUpgrade(request)) return jsonError("bad_request", "expected a WebSocket upgrade");
    if (!this.store.meta || !this.store.members.has(identity.userId)) {
      return jsonError("not_found", "no such conversation");
    }
    const query = ConversationSocketQuery.safeParse(Object.fromEntries(new URL(request.url).searchParams));
    if (!query.success) return jsonError("bad_request", "invalid query");
    if (this.ctx.getWebSockets(`d:${identity.deviceId}`).length >= this.settings.maxSocketsPerDevice) {
      return jsonError("rate_limited", "too many sockets for this device", 10);
    }
    if (this.ctx.getWebSockets(`u:${identity.userId}`).length >= this.settings.maxSocketsPerUser) {
      return jsonError("rate_limited", "too many sockets for this user", 10);
    }

    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [`u:${identity.userId}`, `d:${identity.deviceId}`]);
    this.acceptOrder.set(server, ++this.accepted);
    this.socketList = null;
    // A dedupe socket gets every message stored from now on live: above this lastSeq.
    this.attachments.write(server, query.data.dedupe ? { ...identity, liveAfter: this.store.requireMeta().lastSeq } : identity);

    if (query.data.v !== undefined && query.data.v !== PROTOCOL_VERSION) {
      closeWithNotice(server, CLOSE.protocolVersion, `protocol version ${PROTOCOL_VERSION} required`);
      return new Response(null, { status: 101, webSocket: client });
    }
    // Replay and `ready` are sent in this one synchronous step, so no live message can slip
    // between the replayed ones or arrive before them.
    if (query.data.after !== undefined) {
      // Nothing from before the member joined (docs/api.md).
      let after = Math.max(query.data.after, this.conversation.replayFloor(identity.userId));
      for (;;) {
        const page = this.store.messagesAfter(after, LIMITS.pageMax);
        for (const message of this.conversation.actions.viewFor(identity.userId, page.messages)) sendFrame(server, { type: "message", message });
        if (!page.hasMore) break;
        after = page.messages[page.messages.length - 1]!.seq;
      }
    }
    sendFrame(server, { type: "ready", lastSeq: this.store.requireMeta().lastSeq, protocolVersion: PROTOCOL_VERSION });
    // The user's object remembers where this device has sockets, so logout can close them.
    this.ctx.waitUntil(
      this.connections
        .users(identity.userId)
        .trackConversationSocket(identity.deviceId, this.store.requireMeta().id)
        .catch((err: unknown) => console.warn("trackConversationSocket failed", String(err))),
    );
    return new Response(null, { status: 101, webSocket: client });
  }

  /**
   * Not `async`: the common frames are handled in this one synchronous step, and the runtime then
   * has no promise to wait on. Only a send with media (or behind one on its socket) returns one.
   */
  webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): void | Promise<void> {
    try {
      // Frames already in flight when we closed the socket (rate limit, removal) are dropped:
      // their sender cannot receive an ack, and resends them on a new socket.
      if (ws.readyState !== WebSocket.OPEN) return;
      const incoming = this.readFrame(ws, data);
      // The common case, a send without media with nothing ahead of it on this socket, is stored
      // now or with its burst (SendStaging): no promise, no closure, no copy of the frame (its
      // extra `type` is not read).
      if (incoming.ok && incoming.frame.type === "send" && !incoming.frame.mediaIds?.length && !this.socketSends.has(ws)) {
        this.staging.stage({ ws, identity: incoming.identity, frame: incoming.frame, now: Date.now() });
        return;
      }
      // Everything else follows the sends received before it, as if each had been stored on arrival.
      this.staging.storeStaged();
      // Every other frame costs a token of the sender's budget too (a send or an action takes its
      // own, after the idempotency check): a flood of typing, receipts or junk is closed like one of sends.
      if (!(incoming.ok && (incoming.frame.type === "send" || incoming.frame.type === "action")) && this.limiter.take(this.attachments.read(ws)?.userId ?? "", Date.now()) > 0) {
        closeWithNotice(ws, CLOSE.rateLimited, "rate limited");
        return;
      }
      if (!incoming.ok) {
        if (incoming.close) closeWithNotice(ws, incoming.close.code, incoming.close.reason);
        else sendFrame(ws, incoming.error);
        return;
      }
      const { identity, frame } = incoming;
      const now = Date.now();
      switch (frame.type) {
        case "send":
          return this.sendWithMediaInOrder(ws, identity, frame, this.socketSends.get(ws));
        case "typing":
          this.conversation.typing(identity.userId, frame.on, now);
          return;
        case "action": {
          const result = this.conversation.actions.act(identity, frame.clientMsgId, frame.action, now, ws);
          if (result.ok && result.duplicate) sendFrame(ws, { type: "ack", clientMsgId: frame.clientMsgId, message: result.message });
          else answerSend(ws, frame.clientMsgId, result);
          return;
        }
        case "read":
        case "delivered": {
          const result = this.conversation.updateReceipt(identity.userId, frame.type, frame.seq, now);
          if (!result.ok) sendFrame(ws, { type: "error", code: result.code, message: result.message });
          return;
        }
      }
    } catch (err) {
      this.failedFrame(ws, err);
    }
  }

  /** A frame read and checked, or how to refuse it; nothing is sent or changed here. */
  private readFrame(ws: WebSocket, data: string | ArrayBuffer): IncomingFrame {
    if (typeof data !== "string") return { ok: false, error: { type: "error", code: "bad_request", message: "frames are JSON text" } };
    if (exceedsUtf8(data, LIMITS.frameBytesMax)) return { ok: false, close: { code: CLOSE.tooBig, reason: "frame over 64 KiB" } };
    const identity = this.attachments.read(ws);
    if (!identity || !this.store.members.has(identity.userId)) {
      return { ok: false, close: { code: CLOSE.removed, reason: "not a member" } };
    }
    let json: unknown;
    try {
      json = JSON.parse(data);
    } catch {
      return { ok: false, error: { type: "error", code: "bad_request", message: "frame is not valid JSON" } };
    }
    const parsed = ConversationClientFrame.safeParse(json);
    if (!parsed.success) {
      const message = parsed.error.issues.map((i) => `${i.path.join(".") || "frame"}: ${i.message}`).join("; ");
      return { ok: false, error: { type: "error", code: "bad_request", message, ...refOf(json) } };
    }
    return { ok: true, identity, frame: parsed.data };
  }

  /** Stores, acks and broadcasts staged socket sends, in arrival order, in this one step. */
  private storeSends(batch: StagedSend[]): void {
    // A socket closed for its rate limit drops its sends behind the one refused, as frames that
    // arrive after the close are dropped.
    let closed: Set<WebSocket> | null = null;
    for (const { ws, identity, frame, now } of batch) {
      if (closed?.has(ws)) continue;
      try {
        const result = this.conversation.send(identity, frame, now, ws);
        answerSend(ws, frame.clientMsgId, result);
        if (!result.ok && result.code === "rate_limited") (closed ??= new Set()).add(ws);
      } catch (err) {
        this.failedFrame(ws, err);
      }
    }
  }

  /**
   * Media ids are resolved in D1 first (an await, so other events may run meanwhile); the sends
   * of one socket stay in order behind it.
   */
  private async sendWithMediaInOrder(ws: WebSocket, identity: Identity, request: SendRequest, previous: Promise<void> | undefined): Promise<void> {
    const run = async () => {
      const result = await sendWithMedia(
        this.env,
        identity.userId,
        this.store.requireMeta().id,
        request.mediaIds ?? [],
        (media) => {
          this.staging.storeStaged();
          return this.conversation.send(identity, { ...request, media }, Date.now(), ws);
        },
        request.forwarded === true,
      );
      answerSend(ws, request.clientMsgId, result);
    };
    const sending = previous ? previous.then(run) : run();
    const settled = sending.catch(() => {});
    this.socketSends.set(ws, settled);
    try {
      await sending;
    } catch (err) {
      this.failedFrame(ws, err);
    } finally {
      if (this.socketSends.get(ws) === settled) this.socketSends.delete(ws);
    }
  }

  private failedFrame(ws: WebSocket, err: unknown): void {
    console.error(`conversation ${this.store.meta?.id}: webSocketMessage failed`, err);
    sendFrame(ws, { type: "error", code: "internal", message: "internal error" });
  }

  private allSockets(): WebSocket[] {
    return (this.socketList ??= this.ctx.getWebSockets());
  }

  /**
   * For each member, the devices holding an open dedupe socket here, each with the seq above
   * which that socket got every message live, and its accept order (the lowest of each, if a
   * device holds several). Every message and receipt is broadcast to every open socket in the
   * same step that stores it, so a socket still open got them all; one that closed is left out,
   * and its device gets them on its user socket.
   */
  private liveCopies(): Map<string, Record<string, LiveCopy>> {
    const copies = new Map<string, Record<string, LiveCopy>>();
    for (const ws of this.allSockets()) {
      const socket = this.attachments.read(ws);
      if (!socket || socket.liveAfter === undefined || ws.readyState !== WebSocket.OPEN) continue;
      let devices = copies.get(socket.userId);
      if (!devices) copies.set(socket.userId, (devices = {}));
      const order = this.acceptOrder.get(ws) ?? 0;
      const copy = devices[socket.deviceId];
      devices[socket.deviceId] = copy
        ? { after: Math.min(copy.after, socket.liveAfter), order: Math.min(copy.order, order) }
        : { after: socket.liveAfter, order };
    }
    return copies;
  }

  async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    this.socketList = null;
    safeClose(ws, closeReply(code), "closed");
  }

  async webSocketError(): Promise<void> {
    this.socketList = null;
  }

  // --- The alarm: the deferred pass's backstop and retries, typing lapses ------------------------

  async alarm(): Promise<void> {
    this.staging.storeStaged();
    await this.alarms.run(Date.now());
  }
}

function sendFrame(ws: WebSocket, frame: ConversationServerFrame): void {
  trySend(ws, JSON.stringify(frame));
}

/** A refused send: the socket closes when its sender is rate limited, else gets the error. */
function answerSend(ws: WebSocket, clientMsgId: string, result: { ok: true } | Failure): void {
  if (result.ok) return;
  if (result.code === "rate_limited") closeWithNotice(ws, CLOSE.rateLimited, "rate limited");
  else sendFrame(ws, { type: "error", code: result.code, message: result.message, ref: clientMsgId });
}

type IncomingFrame =
  | { ok: true; identity: SocketAttachment; frame: z.infer<typeof ConversationClientFrame> }
  | { ok: false; close: { code: number; reason: string }; error?: undefined }
  | { ok: false; error: ConversationServerFrame; close?: undefined };

/** What a socket keeps across hibernation: who holds it and, for a dedupe socket, since when it is live. */
type SocketAttachment = Identity & { liveAfter?: number };

function readAttachment(value: unknown): SocketAttachment | null {
  const fields = fieldsOf(value);
  if (!fields) return null;
  const { userId, deviceId, liveAfter } = fields;
  if (typeof userId !== "string" || typeof deviceId !== "string") return null;
  return typeof liveAfter === "number" ? { userId, deviceId, liveAfter } : { userId, deviceId };
}

function refOf(json: unknown): { ref?: string } {
  const clientMsgId = fieldsOf(json)?.clientMsgId;
  return typeof clientMsgId === "string" ? { ref: clientMsgId.slice(0, LIMITS.clientMsgIdMax) } : {};
}
