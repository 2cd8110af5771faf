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
} from "../../protocol";
import type * as z from "zod";
import { readSettings, type Settings } from "../../kernel/settings";
import { readIdentity, type Identity } from "../../kernel/identity";
import { exceedsUtf8, jsonError } from "../lib/socketIo";
import { fail, type Failure } from "../../kernel/result";
import { sendWithMedia } from "../../worker/lib/media";
import { TokenBuckets } from "../lib/rateLimit";
import { ConversationStore } from "./conversationStore";
import { Outbox, backoffDelay } from "./d1Outbox";
import { Fanout } from "./fanout";
import type { DeliveryAnswer, LiveCopy } from "./quiet";
import { userStub } from "../../kernel/objects";
import { Conversation, type CreateInput, type HistoryInput, type SendRequest } from "./conversation";

/** When the alarm runs the deferred pass if the in-memory timer did not (an eviction). */
const DEFERRED_BACKSTOP_MS = 5_000;

export class ConversationDO extends DurableObject<Env> {
  private readonly settings: Settings;
  private readonly store: ConversationStore;
  readonly outbox: Outbox;
  readonly fanout: Fanout;
  private readonly conversation: Conversation;
  /**
   * The alarm time we last set (null: none; undefined: unknown since wake-up). One alarm serves
   * typing lapses, retries after a failure, and the deferred pass's durable backstop: it is set to
   * the earliest of their deadlines.
   */
  private alarmAt: number | null | undefined = undefined;
  /**
   * While D1 or the fan-out is failing, its retries wait for their own backoff however busy we
   * are; the other goes on meanwhile.
   */
  private d1RetryAt = 0;
  private fanoutRetryAt = 0;
  /** When the oldest write not yet in a deferred pass asked for one, and the timer set for it. */
  private deferredSince: number | null = null;
  private deferTimer: ReturnType<typeof setTimeout> | null = null;
  /** The deferred pass in progress. */
  private passRunning: Promise<void> | null = null;
  /** Each socket's identity, read from its attachment once per wake-up rather than once per frame. */
  private readonly identities = new WeakMap<WebSocket, SocketAttachment | null>();
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
  /** Socket sends received and not yet stored, oldest first (see stage), and the timer that stores them. */
  private staged: StagedSend[] = [];
  private stageTimer: ReturnType<typeof setTimeout> | null = null;
  /** When the latest socket send arrived (ms): the next one, if close behind, is part of a burst. */
  private lastSendAt = 0;
  /** The latest send of each socket still resolving media; in memory (nothing is pending across eviction). */
  private readonly socketSends = new WeakMap<WebSocket, Promise<void>>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.settings = readSettings(env);
    this.store = new ConversationStore(ctx.storage.sql);
    this.outbox = new Outbox(this.store, env.DB, this.settings.outboxBatchSize);
    this.fanout = new Fanout(this.store, env, this.settings.fanoutInlineMax, () => this.liveCopies());
    this.conversation = new Conversation(this.store, {
      limiter: new TokenBuckets(this.settings.rateLimitPerSecond, this.settings.rateLimitBurst),
      sockets: {
        all: () => this.allSockets(),
        ofUser: (userId) => ctx.getWebSockets(`u:${userId}`),
      },
      defer: () => this.defer(),
      wakeAt: (at) => void this.wakeAt(at),
      // The deferred pass relays them (updateReceipt asks for it), with its calls to members' objects.
      notifyReceipt: (userIds, receipt) =>
        this.fanout.noteReceipt(userIds, { conversationId: this.store.requireMeta().id, ...receipt }, this.accepted),
    });
    // Keep-alives are answered by the runtime without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  // --- RPC from the Worker ---------------------------------------------------------------------
  // Every entry point (these, the socket handshake, frames other than a plain send, the alarm)
  // first stores the socket sends staged before it (see stage), so none sees the conversation
  // without them.

  async create(input: CreateInput) {
    this.storeStaged();
    const result = this.conversation.create(input);
    // Directory writes (create, membership) reach D1 before the call returns when D1 is up, so
    // the caller's next GET /conversations lists them; if D1 is down, the alarm retries.
    if (result.ok && result.created) await this.flushNow();
    return result;
  }

  async view(userId: string) {
    this.storeStaged();
    return this.conversation.view(userId);
  }

  /** For a user object relaying a membership change, including to someone just removed. */
  async viewForNotification(userId: string) {
    this.storeStaged();
    return this.store.meta ? this.conversation.viewFor(userId) : null;
  }

  async addMembers(actor: Identity, userIds: string[], now: number) {
    this.storeStaged();
    const result = this.conversation.addMembers(actor, userIds, now);
    if (result.ok) await this.flushNow();
    return result;
  }

  async removeMember(actor: Identity, targetId: string, now: number) {
    this.storeStaged();
    const result = this.conversation.removeMember(actor, targetId, now);
    if (result.ok) await this.flushNow();
    return result;
  }

  async send(sender: Identity, request: SendRequest, now: number, requiredType: "group" | null = null) {
    this.storeStaged();
    if (this.store.meta && this.store.members.has(sender.userId) && requiredType && this.store.meta.type !== requiredType) {
      return fail("bad_request", `conversation is not a ${requiredType}`);
    }
    // Like a socket send, a REST send awaits nothing but its own storage: the deferred pass writes
    // it to D1 with the others, and only then tells the members' objects (D1 first), so a device
    // told of the message finds it in GET /conversations. The sender has it in the answer.
    return this.conversation.send(sender, request, now, null);
  }

  async history(userId: string, query: HistoryInput) {
    this.storeStaged();
    return this.conversation.history(userId, query);
  }

  async updateReceipt(userId: string, body: z.infer<typeof ReceiptBody>, now: number) {
    this.storeStaged();
    const result = this.conversation.updateReceipt(userId, body.type, body.seq, now);
    // Like membership, a read over REST reaches D1 before it answers, so the caller's next
    // GET /conversations shows the new unread count (a read is not on the send path).
    if (result.ok) await this.flushNow();
    return result;
  }

  async receipts(userId: string) {
    this.storeStaged();
    return this.conversation.receipts(userId);
  }

  /** Logout: the device's sockets here close with 4001. */
  async closeDevice(deviceId: string): Promise<number> {
    this.storeStaged();
    const sockets = this.ctx.getWebSockets(`d:${deviceId}`);
    for (const ws of sockets) safeClose(ws, CLOSE.unauthorized, "logged out");
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

  /** The number of outbox rows not yet in D1 (for operators and tests). */
  async pendingOutbox(): Promise<number> {
    this.storeStaged();
    return this.store.outboxSize();
  }

  // --- WebSockets --------------------------------------------------------------------------------

  async fetch(request: Request): Promise<Response> {
    this.storeStaged();
    const identity = readIdentity(request.headers);
    if (!identity) return jsonError("unauthorized", "no identity");
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return jsonError("bad_request", "expected a WebSocket upgrade");
    }
    if (!this.store.meta || !this.store.members.has(identity.userId)) {
      return jsonError("not_found", "no such conversation");
    }
    const query = ConversationSocketQuery.safeParse(Object.fromEntries(new URL(request.url).searchParams));
    if (!query.success) return jsonError("bad_request", "invalid query");
    if (this.ctx.getWebSockets(`d:${identity.deviceId}`).length >= this.settings.maxSocketsPerDevice) {
      return jsonError("rate_limited", "too many sockets for this device", 10);
    }

    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    this.ctx.acceptWebSocket(server, [`u:${identity.userId}`, `d:${identity.deviceId}`]);
    this.acceptOrder.set(server, ++this.accepted);
    this.socketList = null;
    // A dedupe socket gets every message stored from now on live: above this lastSeq.
    const attachment: SocketAttachment = query.data.dedupe ? { ...identity, liveAfter: this.store.requireMeta().lastSeq } : identity;
    server.serializeAttachment(attachment);

    if (query.data.v !== undefined && query.data.v !== PROTOCOL_VERSION) {
      server.close(CLOSE.protocolVersion, `protocol version ${PROTOCOL_VERSION} required`);
      return new Response(null, { status: 101, webSocket: client });
    }
    // Replay and `ready` are sent in this one synchronous step, so no live message can slip
    // between the replayed ones or arrive before them.
    if (query.data.after !== undefined) {
      let after = query.data.after;
      for (;;) {
        const page = this.store.messagesAfter(after, LIMITS.pageMax);
        for (const message of page.messages) send(server, { type: "message", message });
        if (!page.hasMore) break;
        after = page.messages[page.messages.length - 1]!.seq;
      }
    }
    send(server, { type: "ready", lastSeq: this.store.requireMeta().lastSeq, protocolVersion: PROTOCOL_VERSION });
    // The user's object remembers where this device has sockets, so logout can close them.
    this.ctx.waitUntil(
      userStub(this.env, identity.userId)
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
      // now or with its burst (see stage): no promise, no closure, no copy of the frame (its
      // extra `type` is not read).
      if (incoming.ok && incoming.frame.type === "send" && !incoming.frame.mediaIds?.length && !this.socketSends.has(ws)) {
        this.stage({ ws, identity: incoming.identity, frame: incoming.frame, now: Date.now() });
        return;
      }
      // Everything else follows the sends received before it, as if each had been stored on arrival.
      this.storeStaged();
      if (!incoming.ok) {
        if (incoming.close) safeClose(ws, incoming.close.code, incoming.close.reason);
        else send(ws, incoming.error);
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
        case "read":
        case "delivered": {
          const result = this.conversation.updateReceipt(identity.userId, frame.type, frame.seq, now);
          if (!result.ok) send(ws, { type: "error", code: result.code, message: result.message });
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
    const identity = this.identityOf(ws);
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

  /**
   * Stores a socket send now, or stages it to be stored with the sends that arrive with it, in
   * one step. Each step that writes ends in its own SQLite commit, which costs more than the
   * insert itself (about 60 µs against 10 here): a burst stored in one step shares one commit.
   *
   * A send that arrives within GROUP_COMMIT_BURST_MS of the one before it (by default, in the
   * same millisecond) is staged: a burst. Any other is stored at once, with whatever is staged
   * before it, so a conversation at a human pace or a steady rate never waits. The staged sends
   * are stored, in the order they arrived, when a send arrives after a longer gap, when
   * GROUP_COMMIT_MAX are staged, when the runtime has nothing else to deliver (a 0 ms timer,
   * which a saturated runtime may not fire; see `defer`), and before any other frame, call or
   * event reaches the conversation, so none sees it without them. Each is acked and broadcast in
   * the step that stores it, as before, so the output gate holds those frames until the commit
   * is durable: a send is never acked unstored, and one lost with its object (an eviction, a
   * reset) was never acked, so its device sends it again.
   */
  private stage(send: StagedSend): void {
    const burst = send.now - this.lastSendAt < this.settings.groupCommitBurstMs;
    this.lastSendAt = send.now;
    this.staged.push(send);
    if (!burst || this.staged.length >= this.settings.groupCommitMax) {
      this.storeStaged();
      return;
    }
    this.stageTimer ??= setTimeout(() => {
      this.stageTimer = null;
      this.storeStaged();
    }, 0);
  }

  /** Stores, acks and broadcasts every staged send, in arrival order, in this one step. */
  private storeStaged(): void {
    if (this.staged.length === 0) return;
    const batch = this.staged;
    this.staged = [];
    if (this.stageTimer !== null) clearTimeout(this.stageTimer);
    this.stageTimer = null;
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
      const result = await sendWithMedia(this.env, identity.userId, this.store.requireMeta().id, request.mediaIds ?? [], (media) =>
      {
        this.storeStaged();
        return this.conversation.send(identity, { ...request, media }, Date.now(), ws);
      },
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
    send(ws, { type: "error", code: "internal", message: "internal error" });
  }

  private allSockets(): WebSocket[] {
    return (this.socketList ??= this.ctx.getWebSockets());
  }

  private identityOf(ws: WebSocket): SocketAttachment | null {
    let identity = this.identities.get(ws);
    if (identity === undefined) this.identities.set(ws, (identity = readAttachment(ws)));
    return identity;
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
      const socket = this.identityOf(ws);
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
    // Complete the closing handshake; 1005/1006 are reserved and cannot be sent back.
    safeClose(ws, code === 1005 || code === 1006 ? 1000 : code, "closed");
  }

  async webSocketError(): Promise<void> {
    this.socketList = null;
  }

  // --- The deferred pass: outbox to D1, then fan-out to user objects ---------------------------

  /**
   * Asks for the deferred pass BATCH_DELAY_MS after the first write not yet in a pass, so that one
   * pass carries many messages: one D1 batch and one call per member for all of them. Passes are
   * at least that far apart: run back to back, a pass as fast as its awaits took one message each
   * and cost several times the CPU (bench, with D1 writes made instant).
   *
   * Neither the alarm nor a timer can be relied on to start it under load: with a steady stream
   * of socket messages, workerd fired neither until the stream stopped (bench S2: none for the
   * whole 10 s, then seconds of catching up, so user sockets, pushes and D1 lagged behind). So a
   * timer starts the pass when the object is quiet, and a write that finds it due starts it
   * itself. The alarm is only the durable backstop, for an object evicted with work pending.
   */
  private defer(): void {
    const now = Date.now();
    void this.wakeAt(now + DEFERRED_BACKSTOP_MS);
    this.deferredSince ??= now;
    this.startDeferredWhenDue(now);
  }

  private startDeferredWhenDue(now: number): void {
    if (this.passRunning || this.deferredSince === null) return;
    const due = this.deferredSince + this.settings.batchDelayMs;
    if (now >= due) {
      void this.runDeferred();
      return;
    }
    this.deferTimer ??= setTimeout(() => {
      this.deferTimer = null;
      this.startDeferredWhenDue(Date.now());
    }, due - now);
  }

  /** One pass at a time: the timer, a write and the alarm may all ask. */
  private runDeferred(): Promise<void> {
    if (this.passRunning) return this.passRunning;
    if (this.deferTimer !== null) clearTimeout(this.deferTimer);
    this.deferTimer = null;
    this.deferredSince = null;
    this.passRunning = this.deferredPass().finally(() => {
      this.passRunning = null;
      // Writes made during the pass wait for the next one, due BATCH_DELAY_MS after the first.
      this.startDeferredWhenDue(Date.now());
    });
    return this.passRunning;
  }

  /**
   * D1 first, then the members' objects, and only for messages D1 now holds: a device told of a
   * message (user socket, push) then finds it in GET /conversations. Each step takes what is there
   * when it starts; what arrives meanwhile goes in the next pass, as one batch.
   *
   * Each step retries on its own backoff. While D1 is failing, or waiting out its backoff, the
   * fan-out goes on regardless (messages flow, D1 catches up later): waiting for D1's retry held
   * every member's other devices and pushes back by up to BACKOFF_MAX_MS.
   */
  private async deferredPass(): Promise<void> {
    const started = Date.now();
    const written = this.store.meta?.lastSeq ?? 0;
    const d1Due = started >= this.d1RetryAt;
    const flushed = d1Due && (await this.outbox.flush(false));
    if (d1Due && !flushed) this.d1RetryAt = Date.now() + backoffDelay(this.outbox.failures);
    this.store.keepRecentFor("d1", flushed);
    const fanoutDue = started >= this.fanoutRetryAt;
    const fannedOut = fanoutDue && (await this.fanout.run(flushed ? written : Number.POSITIVE_INFINITY, flushed));
    if (fanoutDue && !fannedOut) this.fanoutRetryAt = Date.now() + backoffDelay(this.fanout.failures);
    this.store.keepRecentFor("fanout", fannedOut);
    await this.wakeForRetries();
  }

  /** The alarm at the earliest retry still ahead, so a failed step is retried with no new writes. */
  private async wakeForRetries(): Promise<void> {
    const retries = [this.d1RetryAt, this.fanoutRetryAt].filter((at) => at > Date.now());
    if (retries.length > 0) await this.wakeAt(Math.min(...retries));
  }

  async alarm(): Promise<void> {
    this.storeStaged();
    this.alarmAt = null;
    await this.runDeferred();
    const next = this.conversation.lapseTyping(Date.now());
    if (next !== null) await this.wakeAt(next);
  }

  /**
   * Not `async`: every send asks for the backstop, and an alarm already due by then (the common
   * case in a burst) is answered in this step, with no promise.
   */
  private wakeAt(at: number): Promise<void> | undefined {
    if (this.alarmAt !== undefined && this.alarmAt !== null && this.alarmAt <= at) return undefined;
    return this.setAlarmBy(at);
  }

  private async setAlarmBy(at: number): Promise<void> {
    if (this.alarmAt === undefined) this.alarmAt = await this.ctx.storage.getAlarm();
    if (this.alarmAt !== null && this.alarmAt <= at) return;
    this.alarmAt = at;
    await this.ctx.storage.setAlarm(at);
  }

  private async flushNow(): Promise<void> {
    // While D1 is failing the alarm retries with backoff; calls do not add their own attempts.
    if (Date.now() < this.d1RetryAt) return;
    const flushed = await this.outbox.flush();
    this.store.keepRecentFor("d1", flushed);
    if (flushed) return;
    this.d1RetryAt = Date.now() + backoffDelay(this.outbox.failures);
    await this.wakeForRetries();
  }
}

function send(ws: WebSocket, frame: ConversationServerFrame): void {
  try {
    ws.send(JSON.stringify(frame));
  } catch {
    // The socket is closing; its device resumes with ?after= when it reconnects.
  }
}

/** A refused send: the socket closes when its sender is rate limited, else gets the error. */
function answerSend(ws: WebSocket, clientMsgId: string, result: { ok: true } | Failure): void {
  if (result.ok) return;
  if (result.code === "rate_limited") safeClose(ws, CLOSE.rateLimited, "rate limited");
  else send(ws, { type: "error", code: result.code, message: result.message, ref: clientMsgId });
}

function safeClose(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // Already closed.
  }
}

/** A socket send received and checked, waiting to be stored with the others (see stage). */
interface StagedSend {
  ws: WebSocket;
  identity: SocketAttachment;
  frame: SendRequest;
  /** When it arrived: its createdAt and its rate limit's clock. */
  now: number;
}

type IncomingFrame =
  | { ok: true; identity: SocketAttachment; frame: z.infer<typeof ConversationClientFrame> }
  | { ok: false; close: { code: number; reason: string }; error?: undefined }
  | { ok: false; error: ConversationServerFrame; close?: undefined };

/** What a socket keeps across hibernation: who holds it and, for a dedupe socket, since when it is live. */
type SocketAttachment = Identity & { liveAfter?: number };

function readAttachment(ws: WebSocket): SocketAttachment | null {
  const value: unknown = ws.deserializeAttachment();
  if (typeof value !== "object" || value === null) return null;
  const { userId, deviceId, liveAfter } = value as Record<string, unknown>;
  if (typeof userId !== "string" || typeof deviceId !== "string") return null;
  return typeof liveAfter === "number" ? { userId, deviceId, liveAfter } : { userId, deviceId };
}

function refOf(json: unknown): { ref?: string } {
  if (typeof json === "object" && json !== null && "clientMsgId" in json && typeof json.clientMsgId === "string") {
    return { ref: json.clientMsgId.slice(0, LIMITS.clientMsgIdMax) };
  }
  return {};
}

