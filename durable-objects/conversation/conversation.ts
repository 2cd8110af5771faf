// The rules of one conversation: membership, sends, history and receipts. Plain code over the
// store, with the clock and the sockets passed in, so it reads (and tests) without the runtime.
import { newId } from "../../kernel/ids";
import {
  CLOSE,
  type Conversation as ConversationView,
  type ConversationServerFrame,
  type ConversationType,
  type MediaRef,
  type Member,
  type Message,
  type Receipt,
  type SendInput,
  type SystemEvent,
} from "../../protocol";
import { fail, type Failure, type Result } from "../../kernel/result";
import type { Identity } from "../../kernel/identity";
import type { TokenBuckets } from "../lib/rateLimit";
import { closeWithNotice, trySend } from "../lib/socketIo";
import type { ConversationStore } from "./conversationStore";
import { invalidContent } from "./mlsDelivery";
import { MessageActions } from "./actions";
import type { Annotations } from "./actionsStore";

export interface CreateInput {
  id: string;
  type: ConversationType;
  title: string | null;
  e2ee: boolean;
  creator: Identity;
  /** Everyone but the creator; the Worker has checked that they exist. */
  memberIds: string[];
  now: number;
}

/** A send as the object receives it: media ids already resolved to refs by the Worker. */
export type SendRequest = SendInput & { media?: MediaRef[] };

export interface HistoryInput {
  after?: number | undefined;
  before?: number | undefined;
  limit: number;
  thread?: number | undefined;
}

export interface ConversationDeps {
  limiter: TokenBuckets;
  sockets: {
    all(): WebSocket[];
    ofUser(userId: string): WebSocket[];
    /** Who holds the socket (its attachment), or null. */
    userOf(ws: WebSocket): string | null;
  };
  /** Asks for the deferred pass soon: the outbox to D1, then the fan-out to members' objects. */
  defer(): void;
  /** Asks for the alarm at `at` or earlier (a typing indicator lapses then). */
  wakeAt(at: number): void;
  /** Tells users' own objects (their other devices, the senders) of a receipt change. */
  notifyReceipt(userIds: string[], receipt: Receipt): void;
  /** Tells a user's own object (their devices' user sockets) of messages they deleted for themself. */
  notifyHidden?(userId: string, seqs: number[]): void;
}

/** A typing indicator lapses this long after its last refresh. */
export const TYPING_LAPSE_MS = 6_000;

export const MAX_MEMBERS = 1000;

export class Conversation {
  /** Reply, edit, delete, react, pin, delete for me (./actions.ts). */
  readonly actions: MessageActions;

  constructor(
    private readonly store: ConversationStore,
    private readonly deps: ConversationDeps,
  ) {
    this.actions = new MessageActions(store, {
      appendAction: (actor, clientMsgId, event, now, origin) => {
        const message = this.store.append({
          id: newId(now),
          senderId: actor.userId,
          senderDeviceId: actor.deviceId,
          clientMsgId,
          kind: "action",
          body: JSON.stringify(event),
          media: [],
          threadRootSeq: null,
          createdAt: now,
        });
        if (!message) return null;
        this.deps.defer();
        this.deliver(message, origin);
        return message;
      },
      takeRateToken: (userId, now) => this.deps.limiter.take(userId, now),
      sendToUser: (userId, frame) => {
        for (const ws of this.deps.sockets.ofUser(userId)) trySend(ws, frame);
      },
      notifyHidden: (userId, seqs) => this.deps.notifyHidden?.(userId, seqs),
    });
  }

  create(input: CreateInput): Result<{ created: boolean; conversation: ConversationView }> {
    const existing = this.store.meta;
    if (existing) {
      // Only a direct conversation is created twice: its id is derived from the pair.
      if (existing.type !== "direct" || !this.store.members.has(input.creator.userId)) {
        return fail("conflict", "conversation exists");
      }
      return { ok: true, created: false, conversation: this.viewFor(input.creator.userId) };
    }
    const others = [...new Set(input.memberIds)].filter((id) => id !== input.creator.userId);
    if (others.length + 1 > MAX_MEMBERS) return fail("bad_request", `at most ${MAX_MEMBERS} members`);
    this.store.create({ id: input.id, type: input.type, title: input.title, e2ee: input.e2ee, createdAt: input.now });
    this.store.putMember({
      userId: input.creator.userId,
      role: input.type === "group" ? "admin" : "member",
      joinedAt: input.now,
    });
    for (const userId of others) this.store.putMember({ userId, role: "member", joinedAt: input.now });
    this.appendSystem(input.creator, { event: "created", actorId: input.creator.userId, userIds: others }, input.now);
    return { ok: true, created: true, conversation: this.viewFor(input.creator.userId) };
  }

  view(userId: string): Result<{ conversation: ConversationView }> {
    if (!this.isMember(userId)) return fail("not_found", "no such conversation");
    return { ok: true, conversation: this.viewFor(userId) };
  }

  addMembers(actor: Identity, userIds: string[], now: number): Result<{ conversation: ConversationView }> {
    const denied = this.requireAdminOfGroup(actor.userId);
    if (denied) return denied;
    const added = [...new Set(userIds)].filter((id) => !this.store.members.has(id));
    if (this.store.members.size + added.length > MAX_MEMBERS) {
      return fail("bad_request", `at most ${MAX_MEMBERS} members`);
    }
    if (added.length > 0) {
      for (const userId of added) this.store.putMember({ userId, role: "member", joinedAt: now });
      this.appendSystem(actor, { event: "added", actorId: actor.userId, userIds: added }, now);
    }
    return { ok: true, conversation: this.viewFor(actor.userId) };
  }

  removeMember(actor: Identity, targetId: string, now: number): Result<{ removed: true }> {
    if (!this.isMember(actor.userId)) return fail("not_found", "no such conversation");
    if (this.store.requireMeta().type !== "group") return fail("bad_request", "a direct conversation keeps its two members");
    if (!this.store.members.has(targetId)) return fail("not_found", "no such member");
    const leaving = targetId === actor.userId;
    if (!leaving && this.store.members.get(actor.userId)?.role !== "admin") {
      return fail("forbidden", "only admins remove other members");
    }
    this.store.deleteMember(targetId);
    // A group never loses its last admin while it has members: the longest-standing member takes over.
    const remaining = [...this.store.members.values()];
    if (remaining.length > 0 && !remaining.some((m) => m.role === "admin")) {
      const heir = remaining.reduce((a, b) => (b.joinedAt < a.joinedAt ? b : a));
      this.store.putMember({ ...heir, role: "admin" });
    }
    this.appendSystem(actor, { event: leaving ? "left" : "removed", actorId: actor.userId, userIds: [targetId] }, now);
    for (const ws of this.deps.sockets.ofUser(targetId)) closeWithNotice(ws, CLOSE.removed, "removed from the conversation");
    return { ok: true, removed: true };
  }

  /**
   * Stores and delivers one message. `origin` is the socket it came from (it gets the ack), or
   * null for a REST send. A retry with a known (senderId, clientMsgId) returns the stored message
   * and writes nothing.
   */
  send(
    sender: Identity,
    request: SendRequest,
    now: number,
    origin: WebSocket | null,
  ): Result<{ message: Message; duplicate: boolean }> {
    if (!this.isMember(sender.userId)) return fail("not_found", "no such conversation");
    const invalid = this.invalidSend(request);
    // The common case is one statement: the insert itself finds a duplicate. Only a send that was
    // not stored looks for the stored message, and a retry of a stored send is answered with it
    // even when the sender is rate limited or the retry would no longer validate.
    if (!invalid && this.deps.limiter.available(sender.userId, now)) {
      const media = request.media ?? [];
      const e2ee = this.store.requireMeta().e2ee;
      const message = this.store.append({
        id: newId(now),
        senderId: sender.userId,
        senderDeviceId: sender.deviceId,
        clientMsgId: request.clientMsgId,
        kind: e2ee ? "encrypted" : media.length > 0 ? "media" : "text",
        // invalidSend saw to it that an E2EE message has a ciphertext and no body.
        body: e2ee ? null : (request.body ?? null),
        ...(request.ciphertext !== undefined ? { payload: request.ciphertext } : {}),
        media,
        threadRootSeq: request.threadRootSeq ?? null,
        createdAt: now,
        ...sendAnnotations(request),
      });
      if (message) {
        this.deps.limiter.take(sender.userId, now);
        this.deps.defer();
        this.deliver(message, origin);
        return { ok: true, message, duplicate: false };
      }
    }
    const existing = this.store.findByClientMsgId(sender.userId, request.clientMsgId);
    if (existing) {
      if (origin) sendFrame(origin, { type: "ack", clientMsgId: request.clientMsgId, message: existing });
      return { ok: true, message: existing, duplicate: true };
    }
    const wait = this.deps.limiter.take(sender.userId, now);
    if (wait > 0) return fail("rate_limited", "too many messages", wait);
    // Not rate limited and not a duplicate, so this send was invalid (else it was stored above).
    if (invalid) return invalid;
    // Unreachable while the rules above hold; logged here, and the Worker adds a request id.
    console.error(`conversation ${this.store.meta?.id}: a send from ${sender.userId} was neither stored nor refused`);
    return fail("internal", "send neither stored nor refused");
  }

  /** Why a send cannot be stored (media ids not all resolved, a bad thread root), or null. */
  private invalidSend(request: SendRequest): Failure | null {
    if ((request.mediaIds?.length ?? 0) !== (request.media?.length ?? 0)) return fail("bad_request", "unknown media id");
    const content = invalidContent(this.store.requireMeta(), request, request.media ?? []);
    if (content) return content;
    const annotations = this.actions.invalidAnnotations(request);
    if (annotations) return annotations;
    if (request.threadRootSeq !== undefined) {
      const root = this.store.getMessage(request.threadRootSeq);
      if (!root || root.kind === "system") return fail("bad_request", "threadRootSeq names no message");
      if (root.threadRootSeq !== null) return fail("bad_request", "a thread reply cannot start a thread");
    }
    return null;
  }

  /** Takes one token of the user's message rate limit (./mlsDelivery.ts's commits share it). */
  takeRateToken(userId: string, now: number): number {
    return this.deps.limiter.take(userId, now);
  }

  /**
   * Appends an accepted MLS commit (./mlsDelivery.ts decided) as an `mls.commit` message and
   * delivers it like any message; it counts in no unread and is no lastMessage (the store's).
   */
  appendCommit(sender: Identity, clientMsgId: string, commit: string, now: number): Message {
    const message = this.store.append({
      id: newId(now),
      senderId: sender.userId,
      senderDeviceId: sender.deviceId,
      clientMsgId,
      kind: "mls.commit",
      body: null,
      payload: commit,
      media: [],
      threadRootSeq: null,
      createdAt: now,
    });
    // MlsDelivery looked the clientMsgId up in this same step.
    if (!message) throw new Error("commit clientMsgId already stored");
    this.deps.defer();
    this.deliver(message, null);
    return message;
  }

  history(userId: string, query: HistoryInput): Result<{ messages: Message[]; hasMore: boolean }> {
    if (!this.isMember(userId)) return fail("not_found", "no such conversation");
    const page =
      query.after !== undefined
        ? this.store.messagesAfter(query.after, query.limit, query.thread)
        : this.store.messagesBefore(query.before ?? Number.MAX_SAFE_INTEGER, query.limit, query.thread);
    return { ok: true, messages: this.actions.viewFor(userId, page.messages), hasMore: page.hasMore };
  }

  /** Receipts are watermarks: they only move forward, and `read` implies `delivered`. */
  updateReceipt(userId: string, type: "delivered" | "read", seq: number, now: number): Result<{ receipt: Receipt }> {
    if (!this.isMember(userId)) return fail("not_found", "no such conversation");
    const lastSeq = this.store.requireMeta().lastSeq;
    if (seq > lastSeq) return fail("bad_request", `seq ${seq} is above lastSeq ${lastSeq}`);
    const current = this.store.receipt(userId);
    const readSeq = type === "read" ? Math.max(current.readSeq, seq) : current.readSeq;
    const deliveredSeq = Math.max(current.deliveredSeq, readSeq, type === "delivered" ? seq : 0);
    if (readSeq === current.readSeq && deliveredSeq === current.deliveredSeq) {
      return { ok: true, receipt: current };
    }
    const receipt: Receipt = { userId, deliveredSeq, readSeq, updatedAt: now };
    this.store.putReceipt(receipt);
    this.deps.defer();
    this.broadcast(JSON.stringify({ type: "receipt", ...receipt } satisfies ConversationServerFrame), null);
    // The reader's other devices, and whoever wrote the messages the watermark just passed.
    // Only a watermark that moved passed anyone's messages. Scanning from the lower one when it did
    // not move cost O(history) per receipt: a device that never sends `read` keeps readSeq at 0.
    const from = Math.min(
      deliveredSeq > current.deliveredSeq ? current.deliveredSeq : Number.POSITIVE_INFINITY,
      readSeq > current.readSeq ? current.readSeq : Number.POSITIVE_INFINITY,
    );
    const to = Math.max(deliveredSeq > current.deliveredSeq ? deliveredSeq : 0, readSeq > current.readSeq ? readSeq : 0);
    const senders = this.store.sendersBetween(from, to, userId);
    this.deps.notifyReceipt([userId, ...senders], receipt);
    return { ok: true, receipt };
  }

  receipts(userId: string): Result<{ receipts: Receipt[] }> {
    if (!this.isMember(userId)) return fail("not_found", "no such conversation");
    return { ok: true, receipts: [...this.store.members.keys()].map((id) => this.store.receipt(id)) };
  }

  /**
   * Typing is relayed when it starts or stops; a refresh only extends it. Without a refresh it
   * lapses after TYPING_LAPSE_MS and the others are told `on: false` (see lapseTyping).
   */
  typing(userId: string, on: boolean, now: number): void {
    const changed = on ? this.store.startTyping(userId, now + TYPING_LAPSE_MS, now) : this.store.stopTyping(userId);
    if (on) this.deps.wakeAt(now + TYPING_LAPSE_MS);
    if (changed) this.relayTyping(userId, on);
  }

  /** Ends lapsed typing indicators; returns when the next one lapses. */
  lapseTyping(now: number): number | null {
    const { lapsed, next } = this.store.expireTyping(now);
    for (const userId of lapsed) this.relayTyping(userId, false);
    return next;
  }

  private relayTyping(userId: string, on: boolean): void {
    const frame = JSON.stringify({ type: "typing", userId, on } satisfies ConversationServerFrame);
    for (const ws of this.deps.sockets.all()) if (this.deps.sockets.userOf(ws) !== userId) trySend(ws, frame);
  }

  // ---------------------------------------------------------------------------------------------

  private isMember(userId: string): boolean {
    return this.store.meta !== null && this.store.members.has(userId);
  }

  private requireAdminOfGroup(userId: string) {
    if (!this.isMember(userId)) return fail("not_found", "no such conversation");
    if (this.store.requireMeta().type !== "group") return fail("bad_request", "a direct conversation keeps its two members");
    if (this.store.members.get(userId)?.role !== "admin") return fail("forbidden", "only admins add members");
    return null;
  }

  private appendSystem(actor: Identity, event: SystemEvent, now: number): Message {
    const id = newId(now);
    // Its clientMsgId is new, so the append always stores it.
    const message = this.store.append({
      id,
      senderId: actor.userId,
      senderDeviceId: actor.deviceId,
      // System messages take a unique key of their own so they never collide with a client's.
      clientMsgId: `system:${id}`,
      kind: "system",
      body: JSON.stringify(event),
      media: [],
      threadRootSeq: null,
      createdAt: now,
    })!;
    this.deps.defer();
    this.deliver(message, null);
    return message;
  }

  /**
   * One JSON encoding of the message per delivery, shared by the ack for the origin socket and
   * the frame for all others (each is `{"type":…, …, "message":<it>}`, as ConversationServerFrame).
   */
  private deliver(message: Message, origin: WebSocket | null): void {
    const encoded = JSON.stringify(message);
    if (origin) trySend(origin, `{"type":"ack","clientMsgId":${JSON.stringify(message.clientMsgId)},"message":${encoded}}`);
    this.broadcast(`{"type":"message","message":${encoded}}`, origin);
  }

  private broadcast(frame: string, except: WebSocket | null): void {
    for (const ws of this.deps.sockets.all()) if (ws !== except) trySend(ws, frame);
  }

  /** The conversation as `userId` sees it, member or not: for notifying someone just removed. */
  viewFor(userId: string): ConversationView {
    const meta = this.store.requireMeta();
    const readSeq = this.store.receipt(userId).readSeq;
    const members: Member[] = [...this.store.members.values()];
    return {
      id: meta.id,
      type: meta.type,
      title: meta.title,
      e2ee: meta.e2ee,
      ...(meta.e2ee ? { mls: { epoch: meta.mlsEpoch } } : {}),
      createdAt: meta.createdAt,
      members,
      lastSeq: meta.lastSeq,
      lastMessageAt: meta.lastMessageAt,
      readSeq,
      unread: this.store.unreadCount(userId, readSeq),
      lastMessage: this.store.lastMessage(),
    };
  }
}

/** A send's reply, mentions and forward mark, as the store keeps them (none: nothing stored). */
function sendAnnotations(request: SendRequest): { annotations?: Annotations } {
  if (request.replyToSeq === undefined && request.mentions === undefined && request.forwarded === undefined) return {};
  const annotations: Annotations = {};
  if (request.replyToSeq !== undefined) annotations.replyToSeq = request.replyToSeq;
  if (request.mentions !== undefined) annotations.mentions = request.mentions;
  if (request.forwarded !== undefined) annotations.forwarded = request.forwarded;
  return { annotations };
}

function sendFrame(ws: WebSocket, frame: ConversationServerFrame): void {
  trySend(ws, JSON.stringify(frame));
}
