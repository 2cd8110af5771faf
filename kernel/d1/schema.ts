// The D1 directory. Migrations in migrations/ are generated from this file by drizzle-kit
// (`npx drizzle-kit generate --name <change>`, CONTRIBUTING.md); never edit an applied migration.
//
// Owners: users, devices and push subscriptions are owned here. Conversations, members,
// receipts and messages are owned by each conversation's Durable Object; the rows here are
// projections fed by that object's outbox, used for listing and for multi-device sync.
import { sqliteTable, text, integer, index, uniqueIndex, primaryKey } from "drizzle-orm/sqlite-core";

export const users = sqliteTable(
  "users",
  {
    id: text("id").primaryKey(),
    username: text("username").notNull(),
    usernameLower: text("username_lower").notNull(),
    displayName: text("display_name").notNull(),
    // The profile photo: a media item of the user's own (an image), visible to every signed-in user.
    photoId: text("photo_id"),
    passwordHash: text("password_hash").notNull(),
    passwordSalt: text("password_salt").notNull(),
    passwordIterations: integer("password_iterations").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [uniqueIndex("users_username_lower").on(t.usernameLower), index("users_photo").on(t.photoId)],
);

export const devices = sqliteTable(
  "devices",
  {
    id: text("id").primaryKey(),
    userId: text("user_id").notNull(),
    name: text("name").notNull(),
    // While the device is signed in, "s1:" and the SHA-256 of its bearer token; NULL once logged
    // out. Authentication does not read it (the token is signed; its session is the user object's):
    // it marks the devices signed in for what lists them (kernel/d1/devices.ts).
    tokenHash: text("token_hash"),
    // The device's Ed25519 MLS signature key (base64url), set once (PUT /devices/me/mls).
    signatureKey: text("signature_key"),
    createdAt: integer("created_at").notNull(),
    revokedAt: integer("revoked_at"),
  },
  (t) => [uniqueIndex("devices_token_hash").on(t.tokenHash), index("devices_user").on(t.userId)],
);

export const conversations = sqliteTable(
  "conversations",
  {
    id: text("id").primaryKey(),
    type: text("type", { enum: ["direct", "group"] }).notNull(),
    title: text("title"),
    description: text("description"),
    e2ee: integer("e2ee", { mode: "boolean" }).notNull(),
    // E2EE conversations: the MLS epoch, as of the last commit the outbox brought.
    mlsEpoch: integer("mls_epoch"),
    createdAt: integer("created_at").notNull(),
    lastSeq: integer("last_seq").notNull().default(0),
    lastMessageAt: integer("last_message_at"),
  },
  (t) => [index("conversations_last_message_at").on(t.lastMessageAt)],
);

export const members = sqliteTable(
  "members",
  {
    conversationId: text("conversation_id").notNull(),
    userId: text("user_id").notNull(),
    role: text("role", { enum: ["admin", "member"] }).notNull(),
    joinedAt: integer("joined_at").notNull(),
    deliveredSeq: integer("delivered_seq").notNull().default(0),
    readSeq: integer("read_seq").notNull().default(0),
    // The first seq the member may read (the system message that added them); 0: everything.
    joinedSeq: integer("joined_seq").notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.conversationId, t.userId] }), index("members_user").on(t.userId)],
);

// Members removed or gone: they read their conversation's messages joined_seq..left_seq (through
// the system message that recorded it), and media shared there between joined_at and left_at.
export const formerMembers = sqliteTable(
  "former_members",
  {
    conversationId: text("conversation_id").notNull(),
    userId: text("user_id").notNull(),
    joinedSeq: integer("joined_seq").notNull(),
    leftSeq: integer("left_seq").notNull(),
    joinedAt: integer("joined_at").notNull(),
    leftAt: integer("left_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.conversationId, t.userId] }), index("former_members_user").on(t.userId)],
);

export const messages = sqliteTable(
  "messages",
  {
    // Assigned by D1 in commit order: the sync cursor of GET /messages?since=. D1 has one writer,
    // so a reader never sees ingest id N+1 before N; paging by it is exactly-once.
    ingestId: integer("ingest_id").primaryKey({ autoIncrement: true }),
    id: text("id").notNull(),
    conversationId: text("conversation_id").notNull(),
    seq: integer("seq").notNull(),
    senderId: text("sender_id").notNull(),
    senderDeviceId: text("sender_device_id").notNull(),
    clientMsgId: text("client_msg_id").notNull(),
    kind: text("kind", { enum: ["text", "media", "system", "encrypted", "mls.commit", "action"] }).notNull(),
    body: text("body"),
    // E2EE messages: the ciphertext (`encrypted`) or the commit (`mls.commit`), base64url; body is null.
    payload: text("payload"),
    media: text("media").notNull().default("[]"),
    threadRootSeq: integer("thread_root_seq"),
    replyCount: integer("reply_count").notNull().default(0),
    lastReplySeq: integer("last_reply_seq"),
    lastReplyAt: integer("last_reply_at"),
    createdAt: integer("created_at").notNull(),
    // JSON of the message's annotations (reply, mentions, forward, edit, delete, reactions, pin:
    // protocol/actions.ts), or null for none; merged into the wire message.
    extra: text("extra"),
  },
  (t) => [
    // A message is (conversation_id, seq): the outbox's idempotent inserts conflict on it. No
    // query looks a message up by `id`, so it has no index of its own (one less per D1 write).
    uniqueIndex("messages_conversation_seq").on(t.conversationId, t.seq),
    // GET /messages?since=: the caller's conversations in ingest order, covering the time filter,
    // so paging reads index entries rather than sorting full rows.
    // seq too, so that a member's span (joined_seq, left_seq) is checked from the index alone.
    index("messages_conversation_ingest_seq").on(t.conversationId, t.ingestId, t.createdAt, t.seq),
  ],
);

// Media metadata; the bytes live in R2 under `r2Key`. A row is `pending` while a multipart
// upload is in progress and `complete` once its bytes are all in R2.
export const media = sqliteTable(
  "media",
  {
    id: text("id").primaryKey(),
    uploaderId: text("uploader_id").notNull(),
    contentType: text("content_type").notNull(),
    size: integer("size").notNull(),
    name: text("name").notNull(),
    r2Key: text("r2_key").notNull(),
    status: text("status", { enum: ["pending", "complete"] }).notNull(),
    uploadId: text("upload_id"),
    partSize: integer("part_size"),
    width: integer("width"),
    height: integer("height"),
    durationMs: integer("duration_ms"),
    thumbnailId: text("thumbnail_id"),
    createdAt: integer("created_at").notNull(),
  },
  // media_pending: the sweeper of abandoned uploads reads the old pending rows.
  (t) => [index("media_uploader").on(t.uploaderId), index("media_pending").on(t.status, t.createdAt)],
);

// Where a media item was sent: members of these conversations may fetch it.
export const mediaShares = sqliteTable(
  "media_shares",
  {
    mediaId: text("media_id").notNull(),
    conversationId: text("conversation_id").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.mediaId, t.conversationId] })],
);

// The parts of a pending multipart upload that reached R2. The R2 binding cannot list the parts
// of an upload, so this is both what `complete` hands to R2 and what a resuming client reads.
export const mediaParts = sqliteTable(
  "media_parts",
  {
    mediaId: text("media_id").notNull(),
    partNumber: integer("part_number").notNull(),
    etag: text("etag").notNull(),
    size: integer("size").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.mediaId, t.partNumber] })],
);

// Which user claimed each Web Push endpoint last, on the endpoint's own shard: an endpoint belongs
// to one browser profile, so a claim by another user takes it from the previous one. The
// subscriptions themselves are in their users' objects (durable-objects/user/pushSubscriptions.ts).
export const pushEndpoints = sqliteTable("push_endpoints", {
  endpoint: text("endpoint").primaryKey(),
  userId: text("user_id").notNull(),
});

// Messages a member deleted for themself (docs/api.md "Message actions"), fed by the
// conversation's outbox: GET /messages?since= shows them to that member without their content.
export const hiddenMessages = sqliteTable(
  "hidden_messages",
  {
    userId: text("user_id").notNull(),
    conversationId: text("conversation_id").notNull(),
    seq: integer("seq").notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.conversationId, t.seq] })],
);

// Full-text search over plaintext messages is the FTS5 table `message_search` with its triggers
// (migrations/0011_message_search.sql): drizzle has no virtual tables, so it is written by hand.
