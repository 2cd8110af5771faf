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
  type Role,
  type SendInput,
  type SystemEvent,
} from "../../protocol";
import { fail, type Failure, type Result } from "../../kernel/result";
import type { Identity } from "../../kernel/identity";
import type { TokenBuckets } from "../lib/rateLimit";
import { closeWithNotice, trySend } from "../lib/socketIo";
import type { ConversationStore, EncodedMessage } from "./conversationStore";
import { invalidContent } from "./mlsDelivery";
import { editTargetOf, MessageActions, withoutEditText } from "./actions";
import type { Annotations } from "./actionsStore";
import type { SeqRange, SyncSlice } from "../contract";

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

/** A sync slice stops once its messages' text passes this (an RPC answer is capped at 32 MiB; a page gathers several). */
export const SYNC_SLICE_BYTES = 4 * 1024 * 1024;
/** ...or once it has looked at this many messages (those before `minTime` are looked at and left). */
export const SYNC_SLICE_SCAN = 2000;

const NO_GROUP_SETTINGS = "a direct conversation has no title, description or admins";

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
      spanOf: (userId) => this.span(userId),
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
    // Everyone reads from the `created` system message, seq 1.
    this.store.putMember({
      userId: input.creator.userId,
      role: input.type === "group" ? "admin" : "member",
      joinedAt: input.now,
      joinedSeq: 1,
    });
    for (const userId of others) this.store.putMember({ userId, role: "member", joinedAt: input.now, joinedSeq: 1 });
    this.appendSystem(input.creator, { event: "created", actorId: input.creator.userId, userIds: others }, input.now);
    return { ok: true, created: true, conversation: this.viewFor(input.creator.userId) };
  }

  /** A member's view, or a former member's (as it was when they left); 404 for anyone else. */
  view(userId: string): Result<{ conversation: ConversationView }> {
    if (!this.span(userId)) return fail("not_found", "no such conversation");
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
      // They read from the `added` system message on, nothing said before it (docs/api.md).
      const joinedSeq = this.store.requireMeta().lastSeq + 1;
      for (const userId of added) {
        this.store.putMember({ userId, role: "member", joinedAt: now, joinedSeq });
        this.startReceiptsAt(userId, joinedSeq - 1, now);
      }
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
    // They keep reading through the system message appended below, and nothing after it.
    this.store.deleteMember(targetId, this.store.requireMeta().lastSeq + 1, now);
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
   * A group's title and description, changed by an admin (docs/api.md): each field that changes
   * is one system message, so every member's devices see it in order. A value as it already is
   * changes nothing and stores nothing.
   */
  updateGroupInfo(actor: Identity, change: { title?: string | undefined; description?: string | null | undefined }, now: number): Result<{ conversation: ConversationView }> {
    const denied = this.requireAdminOfGroup(actor.userId, "only admins change the group's title and description", NO_GROUP_SETTINGS);
    if (denied) return denied;
    const meta = this.store.requireMeta();
    const title = change.title !== undefined && change.title !== meta.title ? change.title : undefined;
    // An empty description is none.
    const wanted = change.description === undefined ? undefined : change.description || null;
    const description = wanted !== undefined && wanted !== meta.description ? wanted : undefined;
    if (title === undefined && description === undefined) return { ok: true, conversation: this.viewFor(actor.userId) };
    const wait = this.deps.limiter.take(actor.userId, now);
    if (wait > 0) return fail("rate_limited", "too many changes", wait);
    this.store.setGroupInfo({ ...(title !== undefined ? { title } : {}), ...(description !== undefined ? { description } : {}) });
    if (title !== undefined) this.appendSystem(actor, { event: "renamed", actorId: actor.userId, userIds: [], title }, now);
    if (description !== undefined) this.appendSystem(actor, { event: "descriptionChanged", actorId: actor.userId, userIds: [], description }, now);
    return { ok: true, conversation: this.viewFor(actor.userId) };
  }

  /**
   * Makes a member an admin or a member again (an admin's call). A group keeps at least one admin:
   * the last one cannot be demoted (409), though they may leave (removeMember names an heir).
   */
  setRole(actor: Identity, targetId: string, role: Role, now: number): Result<{ conversation: ConversationView }> {
    const denied = this.requireAdminOfGroup(actor.userId, "only admins change members' roles", NO_GROUP_SETTINGS);
    if (denied) return denied;
    const target = this.store.members.get(targetId);
    if (!target) return fail("not_found", "no such member");
    if (target.role === role) return { ok: true, conversation: this.viewFor(actor.userId) };
    if (role === "member" && ![...this.store.members.values()].some((m) => m.role === "admin" && m.userId !== targetId)) {
      return fail("conflict", "a group keeps at least one admin: make another member an admin first");
    }
    const wait = this.deps.limiter.take(actor.userId, now);
    if (wait > 0) return fail("rate_limited", "too many changes", wait);
    this.store.putMember({ ...target, role });
    this.appendSystem(actor, { event: role === "admin" ? "promoted" : "demoted", actorId: actor.userId, userIds: [targetId] }, now);
    return { ok: true, conversation: this.viewFor(actor.userId) };
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
    const invalid = this.invalidSend(sender, request);
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
  private invalidSend(sender: Identity, request: SendRequest): Failure | null {
    if ((request.mediaIds?.length ?? 0) !== (request.media?.length ?? 0)) return fail("bad_request", "unknown media id");
    const content = invalidContent(this.store.requireMeta(), request, request.media ?? []);
    if (content) return content;
    const annotations = this.actions.invalidAnnotations(sender.userId, request);
    if (annotations) return annotations;
    if (request.threadRootSeq !== undefined) {
      const root = this.store.getMessage(request.threadRootSeq);
      // A root from before the sender joined is one they cannot read: as good as none.
      const visible = root !== null && root.seq >= (this.span(sender.userId)?.from ?? Number.POSITIVE_INFINITY);
      if (!root || !visible || root.kind === "system" || root.kind === "action") return fail("bad_request", "threadRootSeq names no message");
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

  /** The `deviceLoggedOut` system message of a member's device (./mlsDelivery.ts decided it holds a leaf). */
  appendDeviceLoggedOut(device: Identity, now: number): Message {
    return this.appendSystem(device, { event: "deviceLoggedOut", actorId: device.userId, userIds: [device.userId], deviceIds: [device.deviceId] }, now);
  }

  /** A page of what the caller may read: their span (from joining, through leaving if they left). */
  history(userId: string, query: HistoryInput): Result<{ messages: Message[]; hasMore: boolean }> {
    const span = this.span(userId);
    if (!span) return fail("not_found", "no such conversation");
    const forward = query.after !== undefined;
    const page = forward
      ? this.store.messagesAfter(Math.max(query.after ?? 0, span.from - 1), query.limit, query.thread)
      : this.store.messagesBefore(Math.min(query.before ?? Number.MAX_SAFE_INTEGER, span.through + 1), query.limit, query.thread);
    const inSpan = page.messages.filter((m) => m.seq >= span.from && m.seq <= span.through);
    const messages = this.actions.viewFor(userId, inSpan);
    // Past either end of the span there is nothing more to page to.
    const edge = forward ? messages.at(-1)?.seq !== span.through : messages[0]?.seq !== span.from;
    return { ok: true, messages, hasMore: page.hasMore && inSpan.length === page.messages.length && edge };
  }

  /** The last seq `userId` may read: the conversation's last for a member, where they left for a former one, 0 for anyone else. */
  syncHead(userId: string): number {
    const span = this.span(userId);
    return span ? Math.min(span.through, this.store.requireMeta().lastSeq) : 0;
  }

  /**
   * A sync page's messages of this conversation (SyncSlice): those of `ranges` in the caller's
   * span, created at or after `minTime`, as history shows them to the caller (`viewFor`: deleted
   * for them, edits of messages before their joining), each encoded by SQLite and re-encoded only
   * where the caller's view differs (`encodedViewFor`). Stops at `limit`
   * messages, at SYNC_SLICE_BYTES of them (one at least), or after SYNC_SLICE_SCAN messages looked
   * at, so one call costs the same whatever the ranges span.
   */
  syncSlice(userId: string, ranges: SeqRange[], minTime: number, limit: number): SyncSlice {
    const end = ranges.reduce((max, r) => Math.max(max, r.through), 0);
    const span = this.span(userId);
    if (!span || limit < 1) return { messages: [], through: limit < 1 ? 0 : end };
    const last = this.store.requireMeta().lastSeq;
    const picked: EncodedMessage[] = [];
    let scanned = 0;
    let bytes = 0;
    const cut = (through: number): SyncSlice => ({ messages: this.actions.encodedViewFor(userId, picked), through });
    for (const range of ranges) {
      let after = Math.max(range.from, span.from - 1);
      const through = Math.min(range.through, span.through, last);
      while (after < through) {
        const asked = Math.min(limit - picked.length, SYNC_SLICE_SCAN - scanned);
        const chunk = this.store.encodedBetween(after, through, asked);
        for (const m of chunk) {
          after = m.seq;
          scanned++;
          if (m.createdAt >= minTime) {
            picked.push(m);
            bytes += m.json.length;
            if (picked.length >= limit || bytes >= SYNC_SLICE_BYTES) return cut(m.seq);
          }
          if (scanned >= SYNC_SLICE_SCAN) return cut(m.seq);
        }
        if (chunk.length < asked) break;
      }
    }
    return cut(end);
  }

  /** Where a member's socket replay starts at the earliest: the seq before their joining. */
  replayFloor(userId: string): number {
    return (this.span(userId)?.from ?? 1) - 1;
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

  /**
   * The seqs `userId` may read: from the system message that added them (everything for those
   * who joined before spans were kept) through the one that removed them, if it did; null for
   * someone who never was a member.
   */
  private span(userId: string): { from: number; through: number; former: boolean } | null {
    if (this.store.meta === null) return null;
    const member = this.store.members.get(userId);
    if (member) return { from: Math.max(1, member.joinedSeq), through: Number.MAX_SAFE_INTEGER, former: false };
    const former = this.store.formerMember(userId);
    return former ? { from: Math.max(1, former.joinedSeq), through: former.leftSeq, former: true } : null;
  }

  /**
   * A member who joins later counts as having read everything before their joining: their unread
   * count starts at zero and others' read ticks stay as they were. Told to the open sockets.
   */
  private startReceiptsAt(userId: string, seq: number, now: number): void {
    const current = this.store.receipt(userId);
    if (seq <= current.readSeq) return;
    const receipt: Receipt = { userId, deliveredSeq: Math.max(current.deliveredSeq, seq), readSeq: seq, updatedAt: now };
    this.store.putReceipt(receipt);
    this.broadcast(JSON.stringify({ type: "receipt", ...receipt } satisfies ConversationServerFrame), null);
  }

  /** Why `userId` may not act as an admin of this group, or null: a stranger, a direct conversation, a non-admin. */
  private requireAdminOfGroup(userId: string, why = "only admins add members", directWhy = "a direct conversation keeps its two members"): Failure | null {
    if (!this.isMember(userId)) return fail("not_found", "no such conversation");
    if (this.store.requireMeta().type !== "group") return fail("bad_request", directWhy);
    if (this.store.members.get(userId)?.role !== "admin") return fail("forbidden", why);
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
    const frame = `{"type":"message","message":${encoded}}`;
    // An edit of a message from before some member's joining reaches that member without its
    // text (./actions.ts viewFor); every other message is the same for everyone.
    const target = editTargetOf(message);
    if (target === null || ![...this.store.members.values()].some((m) => m.joinedSeq > target)) {
      this.broadcast(frame, origin);
      return;
    }
    const redacted = JSON.stringify({ type: "message", message: withoutEditText(message) } satisfies ConversationServerFrame);
    for (const ws of this.deps.sockets.all()) {
      if (ws === origin) continue;
      const userId = this.deps.sockets.userOf(ws);
      const from = userId === null ? Number.MAX_SAFE_INTEGER : (this.store.members.get(userId)?.joinedSeq ?? Number.MAX_SAFE_INTEGER);
      trySend(ws, from > target ? redacted : frame);
    }
  }

  private broadcast(frame: string, except: WebSocket | null): void {
    for (const ws of this.deps.sockets.all()) if (ws !== except) trySend(ws, frame);
  }

  /** The preview: the latest top-level message `userId` may read and did not delete for themself. */
  private lastMessageFor(userId: string, through: number): Message | null {
    const last = this.store.lastMessage(through);
    if (!last || this.actions.tables.hiddenBetween(userId, last.seq, last.seq).size === 0) return last;
    const earlier = this.actions.tables.latestShownSeq(userId, last.seq - 1);
    return earlier === null ? null : (this.store.getMessage(earlier) ?? null);
  }

  /**
   * The conversation as `userId` sees it: a member's view; a former member's, as it was when they
   * left (no members, nothing after `leftSeq`); for anyone else (a notification to someone the
   * object does not know) the conversation as it is, without members.
   */
  viewFor(userId: string): ConversationView {
    const meta = this.store.requireMeta();
    const readSeq = this.store.receipt(userId).readSeq;
    const span = this.span(userId);
    const former = span?.former ? span : null;
    const members: Member[] =
      span && !former ? [...this.store.members.values()].map((m) => ({ userId: m.userId, role: m.role, joinedAt: m.joinedAt })) : [];
    const through = former ? former.through : Number.MAX_SAFE_INTEGER;
    return {
      id: meta.id,
      type: meta.type,
      title: meta.title,
      ...(meta.type === "group" ? { description: meta.description } : {}),
      e2ee: meta.e2ee,
      ...(meta.e2ee ? { mls: { epoch: meta.mlsEpoch } } : {}),
      createdAt: meta.createdAt,
      members,
      lastSeq: former ? former.through : meta.lastSeq,
      lastMessageAt: former ? (this.store.getMessage(former.through)?.createdAt ?? meta.lastMessageAt) : meta.lastMessageAt,
      // A former member sends no receipts: everything they may read counts as read.
      readSeq: former ? former.through : readSeq,
      ...(former ? { unread: 0, threadUnread: 0 } : this.store.unreadCounts(userId, readSeq)),
      lastMessage: this.lastMessageFor(userId, through),
      joinedSeq: span?.from ?? 1,
      ...(former ? { leftSeq: former.through } : {}),
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
