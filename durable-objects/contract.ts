// What the Durable Objects and the queue consumers say to each other: one module that every side
// imports, so that no object imports another's class and no consumer trusts a job it has not
// parsed. The wire contract with clients is `protocol/`; this is the contract inside the server.
//
// Queue jobs cross a boundary that outlives a deploy (a job queued by one version may be consumed
// by the next), so each is a zod schema and its consumer parses it. RPC between objects is typed
// by the interfaces below and not parsed again: both ends are this codebase, and parsing every
// fan-out call would cost the send path (each message crosses it once per member).
import * as z from "zod";
import { ConversationType, Message, MessageKind, PushPayload, Receipt, type Conversation, type ConversationSettings, type Presence, type UserServerFrame } from "../protocol";
import type { Identity } from "../kernel/identity";
import { conversationStub, userStub } from "../kernel/objects";

/** Queue names, as in wrangler.toml. */
export const QUEUES = { fanout: "edge-chat-fanout", push: "edge-chat-push" } as const;

const Id = z.string().min(1).max(128);
const Seq = z.number().int().nonnegative();

// --- Fan-out: a conversation's news for its members' user objects ----------------------------

export const ConversationSummary = z.object({ id: Id, type: ConversationType, title: z.string().nullable(), e2ee: z.boolean() });
export type ConversationSummary = z.infer<typeof ConversationSummary>;

/**
 * A stored message as the fan-out carries it: the fields a user object routes and dedupes by, and
 * the user socket's frame, encoded once by the conversation instead of once by every member's
 * object (and a string costs far less to pass between objects than the message as an object).
 */
export const RelayedMessage = z.object({
  conversationId: Id,
  seq: Seq,
  senderId: Id,
  senderDeviceId: Id,
  kind: MessageKind,
  /** `{"type":"message","message":…}`, as UserServerFrame; a push decodes the message from it. */
  frame: z.string(),
  /** The message's time: what orders the user's conversation list. Jobs queued before it was carried lack it. */
  createdAt: z.number().optional(),
});
export type RelayedMessage = z.infer<typeof RelayedMessage>;

/** Queued jobs written before frames were carried hold the whole message instead. */
export const CarriedMessage = z.union([RelayedMessage, Message]);
export type CarriedMessage = z.infer<typeof CarriedMessage>;

/** The message as the fan-out carries it, its user socket frame encoded here once. */
export function relayedMessage(message: Message): RelayedMessage {
  const { conversationId, seq, senderId, senderDeviceId, kind, createdAt } = message;
  const frame = JSON.stringify({ type: "message", message } satisfies UserServerFrame);
  return { conversationId, seq, senderId, senderDeviceId, kind, frame, createdAt };
}

export function frameOf(message: CarriedMessage): string {
  return "frame" in message ? message.frame : JSON.stringify({ type: "message", message } satisfies UserServerFrame);
}

export function messageOf(message: CarriedMessage): Message {
  return "frame" in message ? (JSON.parse(message.frame) as { message: Message }).message : message;
}

/** A receipt as a user object relays it to its devices (UserServerFrame `receipt`). */
export const RelayedReceipt = Receipt.extend({ conversationId: Id });
export type RelayedReceipt = z.infer<typeof RelayedReceipt>;

/**
 * What a user object receives. `changed` asks it to fetch the conversation's new state; `receipt`
 * is a member's new watermarks, for the reader's other devices and the senders it passed.
 */
export const InboxEvent = z.discriminatedUnion("type", [
  z.object({ type: z.literal("message"), message: CarriedMessage, conversation: ConversationSummary }),
  z.object({ type: z.literal("changed"), conversationId: Id }),
  z.object({ type: z.literal("receipt"), receipt: RelayedReceipt }),
  /** Messages the user deleted for themself, for all their devices (UserServerFrame `hidden`). */
  z.object({ type: z.literal("hidden"), conversationId: Id, seqs: z.array(z.number().int().positive()) }),
]);
export type InboxEvent = z.infer<typeof InboxEvent>;

/** Per device, the seq above which its dedupe conversation socket got every message live. */
export const LiveOn = z.record(z.string(), Seq);
export type LiveOn = z.infer<typeof LiveOn>;

/**
 * A unit of queued fan-out work (groups above FANOUT_INLINE_MAX members): these events for these
 * users. `liveOn`: per user, see LiveOn. `askedAt`: when the conversation queued the job; the
 * consumer reports the user objects' answers back to it (QuietMembers). Jobs queued before either
 * was carried lack it.
 */
export const FanoutJob = z.object({
  userIds: z.array(Id).min(1),
  events: z.array(InboxEvent).min(1),
  liveOn: z.record(z.string(), LiveOn).optional(),
  askedAt: z.number().optional(),
});
export type FanoutJob = z.infer<typeof FanoutJob>;

/** How long a user object's DeliveryAnswer lets the fan-out skip that member before it calls again. */
export const QUIET_HINT_MS = 10_000;

/**
 * A user object's answer to a conversation's in-order call, while any of its user sockets is
 * live: the devices holding its user sockets, and its socket epoch (see QuietMembers). `watched`:
 * every one of those devices got the call's messages live on a dedupe socket of the conversation
 * (the call's `liveOn`), so the object now asks the conversation before a sync or list page what
 * it may have skipped telling it; the conversation skips calls only on such an answer. An object
 * of an earlier version leaves it out, and always watched.
 */
export const DeliveryAnswer = z.object({ devices: z.array(z.string()), epoch: z.number().int().nonnegative(), watched: z.boolean().optional() });
export type DeliveryAnswer = z.infer<typeof DeliveryAnswer>;

/** The conversation a call's events are about (a call, like a job, carries one conversation's). */
export function conversationOf(event: InboxEvent | undefined): string | null {
  if (!event) return null;
  if (event.type === "message") return event.message.conversationId;
  if (event.type === "receipt") return event.receipt.conversationId;
  return event.conversationId;
}

// --- Push: the user object queues, the push consumer sends -------------------------------------

/** One message pushed to one user: expanded by the consumer into one delivery per subscription. */
export const PushJobMessage = z.object({
  kind: z.literal("job"),
  userId: Id,
  conversation: z.object({ id: Id, type: ConversationType, title: z.string().nullable() }),
  message: z.object({
    id: Id,
    seq: z.number().int().positive(),
    senderId: Id,
    /** Absent for E2EE conversations and encrypted messages. */
    preview: z.string().optional(),
  }),
});

/**
 * A notification still owed to one subscription after a retryable failure. The payload is final
 * (title resolved); it is encrypted afresh on each try. `tries` counts the tries made before this
 * queue message was first delivered; the queue's own `attempts` counts the rest.
 */
export const PushDeliveryMessage = z.object({
  kind: z.literal("delivery"),
  userId: Id,
  endpoint: z.string().min(1).max(2048),
  topic: z.string(),
  payload: PushPayload,
  tries: z.number().int().nonnegative(),
});

/** Where one of a user's pushes goes: a subscription's endpoint and its keys, as the user's object keeps them. */
export interface PushTarget {
  endpoint: string;
  p256dh: string;
  auth: string;
}

/**
 * Each message fans out into one outbound request per subscription, so a user's subscriptions
 * are capped: beyond this, subscribing drops the user's least recently (re)subscribed one.
 */
export const PUSH_SUBSCRIPTIONS_PER_USER = 20;

export const PushQueueMessage = z.discriminatedUnion("kind", [PushJobMessage, PushDeliveryMessage]);
export type PushJobMessage = z.infer<typeof PushJobMessage>;
export type PushDeliveryMessage = z.infer<typeof PushDeliveryMessage>;
export type PushQueueMessage = z.infer<typeof PushQueueMessage>;

// --- End-to-end encryption: what the Worker and the objects pass about MLS ----------------------

/**
 * What D1 says of the devices a commit involves (the caller's, and each one it adds), by device
 * id: whose it is and its registered Ed25519 signature key (base64url), if any. Read by the Worker
 * for the conversation, which has no D1 lookup on its commit path.
 */
export type DeviceKeys = Record<string, { userId: string; signatureKey: string | null }>;

/** A Welcome on its way to one device, through its user's object (UserServerFrame `mls.welcome`). */
export interface WelcomeForDevice {
  id: string;
  conversationId: string;
  seq: number;
  deviceId: string;
  welcome: string;
}

/** A key package as its device's user object keeps it: the encoded package and when it expires (epoch ms). */
export interface StoredKeyPackage {
  keyPackage: string;
  notAfter: number;
}

// --- Sync: the user object's inbox index, resolved by the conversations -------------------------

/**
 * Where a `GET /messages?since=` page resumes in the caller's inbox index: every index entry
 * below `ingestId` is done, and entry `ingestId` through `seq`. `minTime` (epoch ms, 0 for none):
 * only messages created at or after it.
 */
export interface SyncCursor {
  ingestId: number;
  seq: number;
  minTime: number;
  /** A cursor a page handed out (not `0` or a time): refused once the index dropped what it had not reached. */
  resume: boolean;
}

/** Seqs `from + 1` through `through` of one conversation. */
export interface SeqRange {
  from: number;
  through: number;
}

/**
 * A conversation's answer for a sync page: the messages of the asked ranges that the user may
 * read, as they read them (encoded once, spliced into the page by the Worker), in seq order; and
 * `through`, the highest seq it examined: every readable message up to it is in `messages`, and
 * nothing above it was looked at (a slice cut by its limit stops at its last message).
 */
export interface SyncSlice {
  messages: Array<{ seq: number; json: string }>;
  through: number;
}

// --- The conversation list: memberships told to the user objects, pages read from them ---------

/**
 * A membership of one user, as its conversation tells the user's object (create, add, remove,
 * leave): the span (`leftSeq` null for a member) and the time of the system message that recorded
 * the change, which a former member's list entry keeps as its activity. `version`: that message's
 * seq, so a notice retried late never undoes a newer one.
 */
export interface ListNotice {
  conversationId: string;
  joinedSeq: number;
  leftSeq: number | null;
  at: number;
  version: number;
}

/** One conversation of a user's list, as that user's object holds it (`joinedSeq` null until told). */
export interface ListEntry {
  id: string;
  joinedSeq: number | null;
  leftSeq: number | null;
  activityAt: number;
}

/**
 * A page of the user's list (GET /conversations): its entries newest activity first, the views
 * the object already fetched to put them in order (conversations its user's devices watch live),
 * the user's settings of each, and where the next page starts.
 */
export interface ListPage {
  entries: ListEntry[];
  views: Record<string, Conversation>;
  settings: Record<string, ConversationSettings>;
  cursor: string | null;
  hasMore: boolean;
}

// --- The calls objects make on each other ------------------------------------------------------

/** What a conversation (or the fan-out consumer, or the Worker) asks of a member's user object. */
export interface UserInbox {
  /**
   * Relays events to the user's devices, once per (conversationId, seq). `inOrder`: the call is
   * the conversation's own in-order fan-out, not a queued job. `wantsAnswer`: return the devices
   * online (DeliveryAnswer) while any is live.
   */
  deliver(userId: string, events: InboxEvent[], inOrder?: boolean, liveOn?: LiveOn, wantsAnswer?: boolean): Promise<DeliveryAnswer | null>;
  /** Remembers where a device has conversation sockets, so logout can close them. */
  trackConversationSocket(deviceId: string, conversationId: string): Promise<void>;
  /**
   * Keeps Welcomes for this user's devices until each acknowledges its own (DELETE
   * /mls/welcomes/:id) and tells the devices online. Idempotent by Welcome id.
   */
  mlsWelcomes(userId: string, welcomes: WelcomeForDevice[]): Promise<void>;
  /** Memberships of this user that changed (its conversation list); idempotent, by `version`. */
  listMembership(userId: string, notices: ListNotice[]): Promise<void>;
}

/** What one user's object asks of another's for presence. */
export interface PresencePeer {
  /**
   * The presence privacy rule, asked of the user whose presence is wanted: their presence if they
   * are a member now of any of `conversationIds` (the asker's current conversations, at most
   * PRIVACY_CHUNK of them: durable-objects/user/presencePrivacy.ts), else null.
   */
  presenceIfMember(userId: string, conversationIds: string[]): Promise<Presence | null>;
  watch(userId: string, watcher: Identity): Promise<Presence>;
  unwatch(watcher: Identity): Promise<void>;
  /** Relays a watched user's change; returns the watcher devices that no longer watch. */
  presenceEvent(deviceIds: string[], event: Presence): Promise<string[]>;
}

/** What a user object (and the fan-out consumer) asks of a conversation's object. */
export interface ConversationPeer {
  /** The conversation as `userId` sees it, member or not (a removal is told to the removed). */
  viewForNotification(userId: string): Promise<Conversation | null>;
  /** Logout: the device's sockets there close with 4001. */
  closeDevice(deviceId: string): Promise<number>;
  /** A device of this member is opening a user socket (see QuietMembers). */
  memberOnline(userId: string, epoch: number): Promise<void>;
  /** The answers to a queued fan-out job's calls, asked at `askedAt`. */
  membersAnswered(answers: Record<string, DeliveryAnswer | null>, askedAt: number): Promise<void>;
  /**
   * The last seq stored that `userId` may read (a former member's: where they left; 0 for
   * someone who never was a member): what the fan-out may have skipped telling a quiet member.
   */
  syncHead(userId: string): Promise<number>;
  /**
   * For a sync page: the messages of `ranges` (ascending, disjoint) that `userId` may read,
   * created at or after `minTime`, at most `limit` of them (see SyncSlice).
   */
  syncSlice(userId: string, ranges: SeqRange[], minTime: number, limit: number): Promise<SyncSlice>;
  /** For each of `times`, whether `userId` was a member then (who may see media shared here at that time). */
  wasMemberAt(userId: string, times: number[]): Promise<boolean[]>;
}

/** How an object reaches the others: by id, through the runtime's stubs or, in a test, fakes. */
export interface Peers {
  user(userId: string): UserInbox & PresencePeer;
  conversation(conversationId: string): ConversationPeer;
}

/** The runtime's stubs, addressed by the verified ids (kernel/objects.ts). */
export function peersOf(env: Env): Peers {
  return { user: (userId) => userStub(env, userId), conversation: (conversationId) => conversationStub(env, conversationId) };
}
