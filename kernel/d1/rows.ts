// One mapping from a stored message row to the wire `Message`, used for both the conversation
// object's SQLite and D1 (their message tables share column names).
import type { MediaRef, Message, MessageKind } from "../../protocol";

export type MessageRow = {
  seq: number;
  id: string;
  sender_id: string;
  sender_device_id: string;
  client_msg_id: string;
  kind: string;
  body: string | null;
  /** The MLS bytes of an E2EE message (base64url): the ciphertext of `encrypted`, the commit of `mls.commit`. */
  payload: string | null;
  media: string;
  thread_root_seq: number | null;
  reply_count: number;
  last_reply_seq: number | null;
  last_reply_at: number | null;
  created_at: number;
  /** JSON of the message's annotations (protocol/actions.ts MessageAnnotations), or null for none. */
  extra: string | null;
};

export const MESSAGE_COLUMNS =
  "seq, id, sender_id, sender_device_id, client_msg_id, kind, body, payload, media, thread_root_seq, reply_count, last_reply_seq, last_reply_at, created_at, extra";

const KINDS: readonly string[] = ["text", "media", "system", "encrypted", "mls.commit", "action"] satisfies MessageKind[];

/** Kinds a reader sees as messages of their own: no unread, lastMessage or list order for the others. */
export const UNSHOWN_KINDS_SQL = "('system', 'mls.commit', 'action')";

/** `messageFromRow`'s fields, as arguments of SQLite's `json_object` (a row of D1's `messages`). */
const MESSAGE_JSON_FIELDS = `'id', id, 'conversationId', conversation_id, 'seq', seq, 'senderId', sender_id,
  'senderDeviceId', sender_device_id, 'clientMsgId', client_msg_id,
  'kind', CASE WHEN kind IN (${KINDS.map((k) => `'${k}'`).join(", ")}) THEN kind ELSE 'text' END,
  'body', body, 'media', json(media), 'threadRootSeq', thread_root_seq, 'createdAt', created_at`;

/**
 * The same mapping as `messageFromRow`, done by SQLite: a `messages` row's wire `Message` as JSON
 * text (D1's, or a conversation object's with its id given as `conversation_id`), for a page
 * served as it is. SQLite then returns one column per message instead of fifteen, and nothing
 * rebuilds or re-encodes each message (docs/performance.md, S4). Tests hold the two mappings equal
 * (test/media.test.ts, "sync serves each message as the conversation's history does";
 * test/unit/conversation/actions.test.ts, "sync slices").
 */
const MESSAGE_JSON_OBJECT = `CASE WHEN reply_count > 0 AND last_reply_seq IS NOT NULL AND last_reply_at IS NOT NULL
  THEN json_object(${MESSAGE_JSON_FIELDS},
    'thread', json_object('replyCount', reply_count, 'lastReplySeq', last_reply_seq, 'lastReplyAt', last_reply_at))
  ELSE json_object(${MESSAGE_JSON_FIELDS}) END`;
const MESSAGE_JSON_BASE = `CASE WHEN payload IS NULL THEN ${MESSAGE_JSON_OBJECT}
  ELSE json_set(${MESSAGE_JSON_OBJECT}, CASE WHEN kind = 'mls.commit' THEN '$.commit' ELSE '$.ciphertext' END, payload) END`;
export const MESSAGE_JSON_SQL = `CASE WHEN extra IS NULL THEN ${MESSAGE_JSON_BASE} ELSE json_patch(${MESSAGE_JSON_BASE}, extra) END`;

export function messageFromRow(row: MessageRow, conversationId: string): Message {
  const message: Message = {
    id: row.id,
    conversationId,
    seq: row.seq,
    senderId: row.sender_id,
    senderDeviceId: row.sender_device_id,
    clientMsgId: row.client_msg_id,
    kind: KINDS.includes(row.kind) ? (row.kind as MessageKind) : "text",
    body: row.body,
    // Written by us from validated MediaRefs; parsed back as such.
    media: JSON.parse(row.media) as MediaRef[],
    threadRootSeq: row.thread_root_seq,
    createdAt: row.created_at,
  };
  if (row.payload !== null) {
    if (message.kind === "mls.commit") message.commit = row.payload;
    else message.ciphertext = row.payload;
  }
  if (row.reply_count > 0 && row.last_reply_seq !== null && row.last_reply_at !== null) {
    message.thread = { replyCount: row.reply_count, lastReplySeq: row.last_reply_seq, lastReplyAt: row.last_reply_at };
  }
  // Written by us from validated annotations; as json_patch does in MESSAGE_JSON_SQL.
  if (row.extra !== null) Object.assign(message, JSON.parse(row.extra) as Partial<Message>);
  return message;
}
