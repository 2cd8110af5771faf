// The wire contract: every request body, query and WebSocket frame as a zod schema.
// Types are inferred from these schemas, never written by hand, so the Worker, the Durable
// Objects and the web client cannot drift apart. A change here that alters the wire format
// needs a PROTOCOL_VERSION bump (test/protocol.test.ts fails until it gets one).
import * as z from "zod";
import { shownName, text } from "./text";
import { ActionFrame, HiddenFrame, MessageAnnotations, SendAnnotations } from "./actions";
import { ConversationSettings, ConversationSettingsFrame } from "./conversationSettings";

// ---------------------------------------------------------------------------------------------
// Limits that are part of the contract (API.md), not deployment settings.
export const LIMITS = {
  usernameMin: 3,
  usernameMax: 32,
  passwordMin: 8,
  passwordMax: 256,
  displayNameMax: 64,
  deviceNameMax: 64,
  titleMax: 100,
  descriptionMax: 500,
  groupMembersMax: 1000,
  clientMsgIdMax: 64,
  bodyMax: 8192,
  mediaPerMessageMax: 10,
  usersSearchMax: 20,
  presenceQueryMax: 100,
  presenceWatchMax: 200,
  pageDefault: 100,
  pageMax: 500,
  frameBytesMax: 64 * 1024,
  /** An E2EE message's PrivateMessage, base64url: a body's 8,192 characters as UTF-8, framed and padded. */
  ciphertextMax: 48 * 1024,
} as const;

/**
 * The most ids one `GET /users?ids=` takes (an extension of the contract): D1 binds at most 100
 * parameters in one query. Kept out of LIMITS, whose values are part of the protocol's
 * fingerprint, as it was added without a protocol version of its own.
 */
export const USER_LOOKUP_MAX = 100;

const Id = text().min(1).max(128);
const Seq = z.number().int().nonnegative();
const Time = z.number().int().nonnegative();

// ---------------------------------------------------------------------------------------------
// Objects (API.md "Objects")

export const User = z.object({
  id: Id,
  username: text(),
  displayName: text(),
  /** The user's profile photo: a media id any signed-in user may load (`GET /media/:id/info`). */
  photoId: Id.optional(),
  createdAt: Time,
});

export const Device = z.object({ id: Id, name: text(), createdAt: Time });
/** One of the caller's own signed-in devices (`GET /devices`): `current` is the one asking. */
export const OwnDevice = Device.extend({ lastActiveAt: Time.nullable(), current: z.boolean() });

export const Role = z.enum(["admin", "member"]);
export const Member = z.object({ userId: Id, role: Role, joinedAt: Time });

export const MediaRef = z.object({
  id: Id,
  contentType: text(),
  size: z.number().int().nonnegative(),
  name: text(),
  width: z.number().int().positive().optional(),
  height: z.number().int().positive().optional(),
  durationMs: z.number().int().nonnegative().optional(),
  thumbnailId: Id.optional(),
});

/** `action`: an edit, delete, reaction or pin of an earlier message (./actions.ts). */
export const MessageKind = z.enum(["text", "media", "system", "encrypted", "mls.commit", "action"]);

export const ThreadSummary = z.object({
  replyCount: z.number().int().nonnegative(),
  lastReplySeq: Seq,
  lastReplyAt: Time,
});

export const Message = z.object({
  id: Id,
  conversationId: Id,
  seq: z.number().int().positive(),
  senderId: Id,
  senderDeviceId: text(),
  clientMsgId: text(),
  kind: MessageKind,
  body: text().nullable(),
  media: z.array(MediaRef),
  /** E2EE conversations: an `encrypted` message's PrivateMessage (base64url MLSMessage). */
  ciphertext: z.string().optional(),
  /** E2EE conversations: an `mls.commit` message's PublicMessage (base64url MLSMessage). */
  commit: z.string().optional(),
  threadRootSeq: z.number().int().positive().nullable(),
  thread: ThreadSummary.optional(),
  createdAt: Time,
  ...MessageAnnotations,
});

export const ConversationType = z.enum(["direct", "group"]);

export const Conversation = z.object({
  id: Id,
  type: ConversationType,
  title: text().nullable(),
  /** Groups: what the group is about, as its admins wrote it (null: none). */
  description: text().nullable().optional(),
  e2ee: z.boolean(),
  /** E2EE conversations only: the MLS group's current epoch. */
  mls: z.object({ epoch: z.number().int().nonnegative() }).optional(),
  createdAt: Time,
  members: z.array(Member),
  lastSeq: Seq,
  lastMessageAt: Time.nullable(),
  readSeq: Seq,
  /** The caller's top-level messages from others above readSeq (thread replies are threadUnread). */
  unread: z.number().int().nonnegative(),
  /** The caller's thread replies from others above readSeq. */
  threadUnread: z.number().int().nonnegative(),
  /** The latest top-level message the caller may read (thread replies and commits left out). */
  lastMessage: Message.nullable(),
  /** The first seq the caller may read: the system message that added them (1 for the founders). */
  joinedSeq: Seq,
  /**
   * Only for a former member: the seq of the system message that removed them or recorded their
   * leaving. They read history through it, and nothing after it; `members` is then empty.
   */
  leftSeq: z.number().int().positive().optional(),
  /** The caller's own settings of it (./conversationSettings.ts), on GET /conversations and /conversations/:id. */
  settings: ConversationSettings.optional(),
});

export const Receipt = z.object({
  userId: Id,
  deliveredSeq: Seq,
  readSeq: Seq,
  updatedAt: Time,
});

export const PresenceStatus = z.enum(["online", "offline", "unknown"]);
export const Presence = z.object({
  userId: Id,
  status: PresenceStatus,
  lastSeen: Time.nullable(),
});

// The body of a `system` message: a JSON document, so clients can render it in any language.
// `deviceLoggedOut` (E2EE conversations only): a device of the member `actorId` logged out while
// it held a leaf of the group; `deviceIds` names it, and a member's device is to commit its Remove.
// `renamed` carries the group's new `title`, `descriptionChanged` its new `description` (null:
// removed); `promoted` and `demoted` name in `userIds` the member made an admin or a member again.
export const SystemEvent = z.object({
  event: z.enum(["created", "added", "removed", "left", "deviceLoggedOut", "renamed", "descriptionChanged", "promoted", "demoted"]),
  actorId: Id,
  userIds: z.array(Id),
  deviceIds: z.array(Id).optional(),
  title: text().optional(),
  description: text().nullable().optional(),
});

// ---------------------------------------------------------------------------------------------
// Request bodies and queries

export const Username = z
  .string()
  .min(LIMITS.usernameMin)
  .max(LIMITS.usernameMax)
  .regex(/^[A-Za-z0-9_]+$/, "letters, digits and underscore only");
const Password = text().min(LIMITS.passwordMin).max(LIMITS.passwordMax);
const DisplayName = shownName(LIMITS.displayNameMax);
const DeviceName = shownName(LIMITS.deviceNameMax);

export const RegisterBody = z.strictObject({
  username: Username,
  password: Password,
  displayName: DisplayName.optional(),
  deviceName: DeviceName.optional(),
});

export const LoginBody = z.strictObject({
  username: text().min(1).max(LIMITS.usernameMax),
  password: text().min(1).max(LIMITS.passwordMax),
  deviceName: DeviceName.optional(),
});

/** `PATCH /devices/:id`: the name the account's device lists show. */
export const RenameDeviceBody = z.strictObject({ name: DeviceName });

export const CreateDirectBody = z.strictObject({ type: z.literal("direct"), userId: Id, e2ee: z.boolean().optional() });

export const CreateGroupBody = z.strictObject({
  title: shownName(LIMITS.titleMax),
  memberIds: z.array(Id).max(LIMITS.groupMembersMax),
  e2ee: z.boolean().optional(),
});

/** `PATCH /conversations/:id`: a group's title, description (null or "" removes it), or both. */
export const GroupInfoBody = z
  .strictObject({
    title: shownName(LIMITS.titleMax).optional(),
    description: text()
      .overwrite((s) => s.trim())
      .max(LIMITS.descriptionMax)
      .nullable()
      .optional(),
  })
  .refine((b) => b.title !== undefined || b.description !== undefined, { message: "give a title, a description or both" });

/** `PUT /conversations/:id/members/:userId`: a member's role in a group. */
export const MemberRoleBody = z.strictObject({ role: Role });

/** `PATCH /me`: the caller's profile; `photo` is a media id of an image they uploaded, null removes it. */
export const ProfileBody = z
  .strictObject({
    displayName: shownName(LIMITS.displayNameMax).optional(),
    photo: Id.nullable().optional(),
  })
  .refine((b) => b.displayName !== undefined || b.photo !== undefined, { message: "give a displayName, a photo or both" });

export const AddMembersBody = z.strictObject({
  userIds: z.array(Id).min(1).max(LIMITS.groupMembersMax),
});

const ClientMsgId = text().min(1).max(LIMITS.clientMsgIdMax);
const MessageContent = {
  clientMsgId: ClientMsgId,
  body: text().min(1).max(LIMITS.bodyMax).optional(),
  /** E2EE conversations, instead of `body`: a PrivateMessage of the conversation's group (base64url). */
  ciphertext: z.string().min(1).max(LIMITS.ciphertextMax).regex(/^[A-Za-z0-9_-]+$/, "base64url without padding").optional(),
  mediaIds: z.array(Id).max(LIMITS.mediaPerMessageMax).optional(),
  threadRootSeq: z.number().int().positive().optional(),
  ...SendAnnotations,
};
const hasContent = (m: { body?: string | undefined; ciphertext?: string | undefined; mediaIds?: string[] | undefined }) =>
  m.body !== undefined || m.ciphertext !== undefined || (m.mediaIds !== undefined && m.mediaIds.length > 0);
const contentMessage = { message: "a message needs a body, a ciphertext or at least one media id" };

export const SendBody = z
  .strictObject({ conversationId: Id, ...MessageContent })
  .refine(hasContent, contentMessage);
export const GroupSendBody = z
  .strictObject({ groupId: Id, ...MessageContent })
  .refine(hasContent, contentMessage);

/** What reaches the conversation DO: one shape for REST and socket sends. */
export const SendInput = z.object({ ...MessageContent }).refine(hasContent, contentMessage);

export const ReceiptBody = z.strictObject({
  type: z.enum(["delivered", "read"]),
  seq: Seq,
});

const IntString = (max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .regex(/^\d{1,16}$/, "a non-negative integer")
    .transform(Number)
    .pipe(z.number().int().nonnegative().max(max));

export const SinceQuery = z.strictObject({
  since: text().min(1).max(64).default("0"),
  limit: IntString(LIMITS.pageMax)
    .pipe(z.number().min(1))
    .default(LIMITS.pageDefault),
});

/** A page of GET /conversations holds at most this many; without `limit`, the whole list (up to 1000). */
export const CONVERSATION_PAGE_MAX = 200;
export const CONVERSATION_PAGE_DEFAULT = 50;

/**
 * `GET /conversations?limit=&cursor=`: a page of the list, newest activity first, and `cursor`
 * (from the previous page's answer) for the next one; a cursor without a limit pages by
 * CONVERSATION_PAGE_DEFAULT. Neither: the whole list, as before paging. Other parameters are
 * ignored, as they were before the list had any.
 */
export const ConversationListQuery = z.object({
  limit: IntString(CONVERSATION_PAGE_MAX).pipe(z.number().min(1)).optional(),
  cursor: text().min(1).max(200).optional(),
});

export const HistoryQuery = z
  .strictObject({
    after: IntString().optional(),
    before: IntString().optional(),
    limit: IntString(LIMITS.pageMax)
      .pipe(z.number().min(1))
      .default(LIMITS.pageDefault),
    thread: IntString().pipe(z.number().min(1)).optional(),
  })
  .refine((q) => q.after === undefined || q.before === undefined, {
    message: "give after or before, not both",
  });

export const UserSearchQuery = z.strictObject({
  q: text().trim().min(1).max(LIMITS.usernameMax),
});

export const ConversationSocketQuery = z.strictObject({
  after: IntString().optional(),
  /**
   * "1": this socket is the device's copy of the conversation, so the device's user socket does
   * not repeat the messages this socket got live (an extension; without it the user socket gets
   * every message).
   */
  dedupe: z.literal("1").optional(),
  ticket: text().max(256).optional(),
  v: IntString().optional(),
});

/** `GET /ws`: the same `ticket` and `v` as the conversation socket. */
export const UserSocketQuery = z.strictObject({
  ticket: text().max(256).optional(),
  v: IntString().optional(),
});

// ---------------------------------------------------------------------------------------------
// Web Push (API.md "Push notifications")

/** An uncompressed P-256 point (65 bytes, first 0x04) and a 16-byte secret, base64url (RFC 8291). */
const P256dhKey = text().regex(/^B[A-Za-z0-9_-]{86}=?$/, "a base64url uncompressed P-256 public key");
const AuthSecret = text().regex(/^[A-Za-z0-9_-]{22}(==)?$/, "a base64url 16-byte secret");

/**
 * A browser's `PushSubscription.toJSON()`. Not strict: browsers may add members to it, and a
 * subscription the browser hands us should never be refused for that.
 */
export const PushSubscriptionBody = z.object({
  endpoint: text().min(1).max(2048),
  expirationTime: z.number().nullable().optional(),
  keys: z.object({ p256dh: P256dhKey, auth: AuthSecret }),
});

export const PushEndpointQuery = z.strictObject({ endpoint: text().min(1).max(2048) });

/** The decrypted body of every push. `body` is a preview, absent for E2EE conversations. */
export const PushPayload = z.object({
  type: z.literal("message"),
  conversationId: Id,
  seq: z.number().int().positive(),
  messageId: Id,
  senderId: Id,
  title: text(),
  body: text().optional(),
});

// ---------------------------------------------------------------------------------------------
// WebSocket frames: one discriminated union per direction and socket.

export const SendFrame = z
  .strictObject({ type: z.literal("send"), ...MessageContent })
  .refine(hasContent, contentMessage);
export const TypingFrame = z.strictObject({ type: z.literal("typing"), on: z.boolean() });
export const ReadFrame = z.strictObject({ type: z.literal("read"), seq: Seq });
export const DeliveredFrame = z.strictObject({ type: z.literal("delivered"), seq: Seq });

export const ConversationClientFrame = z.discriminatedUnion("type", [
  SendFrame,
  TypingFrame,
  ReadFrame,
  DeliveredFrame,
  ActionFrame,
]);

export const PresenceWatchFrame = z.strictObject({
  type: z.literal("presence.watch"),
  userIds: z.array(Id).max(LIMITS.presenceWatchMax),
});
export const UserClientFrame = z.discriminatedUnion("type", [PresenceWatchFrame]);

export const ErrorFrame = z.object({
  type: z.literal("error"),
  code: text(),
  message: text(),
  ref: text().optional(),
});

/**
 * The last frame before the server closes a socket with an application code (an extension): the
 * code and reason of the close that follows. Under workerd the close handshake of a close the
 * object starts outside a socket event (logout, removal, protocol version) ends ~15 s late, and a
 * client's `close` event waits for it; this frame arrives at once, so a client acts on it.
 */
export const ClosingFrame = z.object({ type: z.literal("closing"), code: z.number().int(), reason: text() });

export const ConversationServerFrame = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ready"), lastSeq: Seq, protocolVersion: z.number().int() }),
  z.object({ type: z.literal("message"), message: Message }),
  z.object({ type: z.literal("ack"), clientMsgId: text(), message: Message }),
  z.object({ type: z.literal("typing"), userId: Id, on: z.boolean() }),
  z.object({ type: z.literal("receipt"), userId: Id, deliveredSeq: Seq, readSeq: Seq, updatedAt: Time }),
  HiddenFrame,
  ErrorFrame,
  ClosingFrame,
]);

export const UserServerFrame = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ready"), userId: Id, deviceId: Id, protocolVersion: z.number().int() }),
  z.object({ type: z.literal("message"), message: Message }),
  z.object({ type: z.literal("presence"), userId: Id, status: PresenceStatus, lastSeen: Time.nullable() }),
  z.object({
    type: z.literal("receipt"),
    conversationId: Id,
    userId: Id,
    deliveredSeq: Seq,
    readSeq: Seq,
    updatedAt: Time,
  }),
  z.object({ type: z.literal("conversation"), conversation: Conversation }),
  z.object({ type: z.literal("mls.welcome"), id: Id, conversationId: Id, seq: z.number().int().positive(), welcome: z.string() }),
  z.object({ type: z.literal("mls.keyPackagesLow"), deviceId: Id, count: z.number().int().nonnegative() }),
  /** The user's device list changed (a sign-in, a sign-out, a rename): GET /devices tells how. */
  z.object({ type: z.literal("devices") }),
  HiddenFrame,
  ConversationSettingsFrame,
  ErrorFrame,
  ClosingFrame,
]);

// ---------------------------------------------------------------------------------------------
// Inferred types

export type User = z.infer<typeof User>;
export type Device = z.infer<typeof Device>;
export type OwnDevice = z.infer<typeof OwnDevice>;
export type Role = z.infer<typeof Role>;
export type Member = z.infer<typeof Member>;
export type MediaRef = z.infer<typeof MediaRef>;
export type MessageKind = z.infer<typeof MessageKind>;
export type Message = z.infer<typeof Message>;
export type ThreadSummary = z.infer<typeof ThreadSummary>;
export type ConversationType = z.infer<typeof ConversationType>;
export type Conversation = z.infer<typeof Conversation>;
export type Receipt = z.infer<typeof Receipt>;
export type Presence = z.infer<typeof Presence>;
export type SystemEvent = z.infer<typeof SystemEvent>;
export type SendInput = z.infer<typeof SendInput>;
export type ConversationClientFrame = z.infer<typeof ConversationClientFrame>;
export type ConversationServerFrame = z.infer<typeof ConversationServerFrame>;
export type UserClientFrame = z.infer<typeof UserClientFrame>;
export type UserServerFrame = z.infer<typeof UserServerFrame>;
export type PushSubscriptionBody = z.infer<typeof PushSubscriptionBody>;
export type PushPayload = z.infer<typeof PushPayload>;
