// Conversations and their members: the Worker authenticates and validates, then the conversation's
// object decides (membership, roles). D1 serves only the list, which no single object can answer.
// Messages (sending, history, sync) are routes/messages.ts; receipts routes/receipts.ts.
import { newId } from "../../kernel/ids";
import {
  AddMembersBody,
  CreateDirectBody,
  ConversationSettingsBody,
  CreateGroupBody,
  GroupInfoBody,
  MemberRoleBody,
  DEFAULT_CONVERSATION_SETTINGS,
  type Conversation,
  type Member,
} from "../../protocol";
import { newApp, requireAuth, type AppContext } from "../app";
import { messageFromRow, UNSHOWN_KINDS_SQL, type MessageRow } from "../../kernel/d1/rows";
import { ApiError, unwrap } from "../lib/apiError";
import { sha256 } from "../lib/crypto";
import { conversationStub, userStub } from "../../kernel/objects";
import { requireUsersExist } from "../lib/userRecords";
import { readJson } from "../lib/validate";
import { takeHourly, throttleKeys } from "../lib/throttle";

export const conversations = newApp();
conversations.use(requireAuth);

/**
 * A direct conversation's id is derived from the pair, so creating it twice is one object. The
 * pair's E2EE conversation is another one, with an id of its own.
 */
async function directConversationId(a: string, b: string, e2ee: boolean): Promise<string> {
  const [x, y] = a < b ? [a, b] : [b, a];
  return e2ee ? `dme_${(await sha256(`e2ee\n${x}\n${y}`)).slice(0, 32)}` : `dm_${(await sha256(`${x}\n${y}`)).slice(0, 32)}`;
}

conversations.post("/", async (c) => {
  const body = await readJson(c.req.raw, CreateDirectBody, c.get("settings").maxRequestBytes);
  const me = c.get("auth");
  if (body.userId === me.userId) throw new ApiError("bad_request", "a direct conversation needs another user");
  await requireUsersExist(c.env, [body.userId]);
  const e2ee = body.e2ee ?? false;
  const id = await directConversationId(me.userId, body.userId, e2ee);
  const result = unwrap(
    await conversationStub(c.env, id).create({
      id,
      type: "direct",
      title: null,
      e2ee,
      creator: me,
      memberIds: [body.userId],
      now: Date.now(),
    }),
  );
  return c.json({ conversation: result.conversation }, result.created ? 201 : 200);
});

conversations.get("/", async (c) => {
  return c.json({ conversations: await listConversations(c) });
});

conversations.get("/:id", async (c) => {
  const userId = c.get("auth").userId;
  const id = c.req.param("id");
  const [result, settings] = await Promise.all([conversationStub(c.env, id).view(userId), userStub(c.env, userId).conversationSettingsOf(userId, id)]);
  return c.json({ conversation: { ...unwrap(result).conversation, settings } });
});

// The caller's own settings of a conversation (mute, archive, pin), kept by their user object.
// Membership first, as elsewhere: a stranger gets 404 and nothing is stored.
conversations.put("/:id/settings", async (c) => {
  const body = await readJson(c.req.raw, ConversationSettingsBody, c.get("settings").maxRequestBytes);
  const userId = c.get("auth").userId;
  const id = c.req.param("id");
  unwrap(await conversationStub(c.env, id).view(userId));
  const { settings } = unwrap(await userStub(c.env, userId).changeConversationSettings(userId, id, body));
  return c.json({ conversationId: id, settings });
});

/** A group's title and description (admins; docs/api.md). */
conversations.patch("/:id", async (c) => {
  const body = await readJson(c.req.raw, GroupInfoBody, c.get("settings").maxRequestBytes);
  const result = unwrap(await conversationStub(c.env, c.req.param("id")).updateGroupInfo(c.get("auth"), body, Date.now()));
  return c.json({ conversation: result.conversation });
});

/** A member's role: an admin makes them an admin or a member again (docs/api.md). */
conversations.put("/:id/members/:userId", async (c) => {
  const body = await readJson(c.req.raw, MemberRoleBody, c.get("settings").maxRequestBytes);
  const result = unwrap(await conversationStub(c.env, c.req.param("id")).setRole(c.get("auth"), c.req.param("userId"), body.role, Date.now()));
  return c.json({ conversation: result.conversation });
});

conversations.post("/:id/members", async (c) => {
  const body = await readJson(c.req.raw, AddMembersBody, c.get("settings").maxRequestBytes);
  const stub = conversationStub(c.env, c.req.param("id"));
  // Membership first, so a stranger learns nothing (404) before the user check (400).
  unwrap(await stub.view(c.get("auth").userId));
  await requireUsersExist(c.env, body.userIds);
  const result = unwrap(await stub.addMembers(c.get("auth"), body.userIds, Date.now()));
  return c.json({ conversation: result.conversation });
});

conversations.delete("/:id/members/:userId", async (c) => {
  unwrap(await conversationStub(c.env, c.req.param("id")).removeMember(c.get("auth"), c.req.param("userId"), Date.now()));
  return c.body(null, 204);
});

export const groups = newApp();
groups.use(requireAuth);

groups.post("/create", async (c) => {
  const settings = c.get("settings");
  const body = await readJson(c.req.raw, CreateGroupBody, settings.maxRequestBytes);
  await requireUsersExist(c.env, body.memberIds);
  // Each group adds its members without asking them: a rate per creator.
  await takeHourly(c.env, throttleKeys.groupCreator(c.get("auth").userId), settings.abuse.groupsPerUserPerHour, "group creations");
  const id = newId();
  const result = unwrap(
    await conversationStub(c.env, id).create({
      id,
      type: "group",
      title: body.title,
      e2ee: body.e2ee ?? false,
      creator: c.get("auth"),
      memberIds: body.memberIds,
      now: Date.now(),
    }),
  );
  return c.json({ conversation: result.conversation }, 201);
});

// ---------------------------------------------------------------------------------------------

type ListRow = {
  id: string;
  type: "direct" | "group";
  title: string | null;
  description: string | null;
  e2ee: number;
  mls_epoch: number | null;
  created_at: number;
  last_seq: number;
  last_message_at: number | null;
  read_seq: number;
  joined_seq: number;
  left_seq: number | null;
  unread: number;
  thread_unread: number;
} & { [K in keyof MessageRow as `lm_${K}`]: MessageRow[K] | null };

/**
 * The caller's conversations, newest activity first, from the D1 projection: those they are a
 * member of, and those they were removed from or left, as they were then (docs/api.md). One query
 * for the conversations with their last message and unread counts, one for the members.
 */
async function listConversations(c: AppContext): Promise<Conversation[]> {
  const userId = c.get("auth").userId;
  // One call to the caller's user object for the whole list, beside the D1 query.
  const [{ results }, settings] = await Promise.all([
    c.env.DB.prepare(
    `WITH mine AS (
       SELECT conversation_id, read_seq, joined_seq, NULL AS left_seq, NULL AS left_at FROM members WHERE user_id = ?1
       UNION ALL
       SELECT conversation_id, left_seq, joined_seq, left_seq, left_at FROM former_members WHERE user_id = ?1
     )
     SELECT c.id, c.type, c.title, c.description, c.e2ee, c.mls_epoch, c.created_at,
       coalesce(m.left_seq, c.last_seq) AS last_seq, coalesce(m.left_at, c.last_message_at) AS last_message_at,
       coalesce(m.left_seq, m.read_seq) AS read_seq, m.joined_seq, m.left_seq,
       -- Top-level messages and thread replies apart; a former member has nothing waiting.
       CASE WHEN m.left_seq IS NULL THEN (SELECT count(*) FROM messages u WHERE u.conversation_id = c.id AND u.seq > m.read_seq
         AND u.sender_id != ?1 AND u.kind NOT IN ${UNSHOWN_KINDS_SQL} AND u.thread_root_seq IS NULL) ELSE 0 END AS unread,
       CASE WHEN m.left_seq IS NULL THEN (SELECT count(*) FROM messages u WHERE u.conversation_id = c.id AND u.seq > m.read_seq
         AND u.sender_id != ?1 AND u.kind NOT IN ${UNSHOWN_KINDS_SQL} AND u.thread_root_seq IS NOT NULL) ELSE 0 END AS thread_unread,
       lm.seq AS lm_seq, lm.id AS lm_id, lm.sender_id AS lm_sender_id, lm.sender_device_id AS lm_sender_device_id,
       lm.client_msg_id AS lm_client_msg_id, lm.kind AS lm_kind, lm.body AS lm_body, lm.payload AS lm_payload, lm.media AS lm_media,
       lm.thread_root_seq AS lm_thread_root_seq, lm.reply_count AS lm_reply_count, lm.last_reply_seq AS lm_last_reply_seq,
       lm.last_reply_at AS lm_last_reply_at, lm.created_at AS lm_created_at, lm.extra AS lm_extra
     FROM mine m
     JOIN conversations c ON c.id = m.conversation_id
     -- A commit, an action, a thread reply or a message the caller deleted for themself is no
     -- lastMessage: the latest other message up to the caller's last seq, found backwards by
     -- (conversation_id, seq).
     LEFT JOIN messages lm ON lm.conversation_id = c.id AND lm.seq = (SELECT x.seq FROM messages x
       WHERE x.conversation_id = c.id AND x.seq <= coalesce(m.left_seq, c.last_seq) AND x.kind NOT IN ('mls.commit', 'action')
         AND x.thread_root_seq IS NULL
         AND NOT EXISTS (SELECT 1 FROM hidden_messages h WHERE h.user_id = ?1 AND h.conversation_id = c.id AND h.seq = x.seq)
       ORDER BY x.seq DESC LIMIT 1)
     ORDER BY coalesce(m.left_at, c.last_message_at, c.created_at) DESC
     LIMIT 1000`,
  )
    .bind(userId)
    .all<ListRow>(),
    userStub(c.env, userId).conversationSettings(userId),
  ]);

  // A former member is shown no members: who is in the group now is no longer theirs to know.
  const current = results.filter((r) => r.left_seq === null);
  const members = new Map<string, Member[]>();
  for (let i = 0; i < current.length; i += 90) {
    const ids = current.slice(i, i + 90).map((r) => r.id);
    const rows = await c.env.DB.prepare(
      `SELECT conversation_id, user_id, role, joined_at FROM members WHERE conversation_id IN (${ids.map(() => "?").join(",")})`,
    )
      .bind(...ids)
      .all<{ conversation_id: string; user_id: string; role: "admin" | "member"; joined_at: number }>();
    for (const r of rows.results) {
      const list = members.get(r.conversation_id) ?? [];
      list.push({ userId: r.user_id, role: r.role, joinedAt: r.joined_at });
      members.set(r.conversation_id, list);
    }
  }

  return results.map((r) => ({
    id: r.id,
    type: r.type,
    title: r.title,
    ...(r.type === "group" ? { description: r.description } : {}),
    e2ee: r.e2ee === 1,
    ...(r.e2ee === 1 ? { mls: { epoch: r.mls_epoch ?? 0 } } : {}),
    createdAt: r.created_at,
    members: members.get(r.id) ?? [],
    lastSeq: r.last_seq,
    lastMessageAt: r.last_message_at,
    readSeq: r.read_seq,
    unread: r.unread,
    threadUnread: r.thread_unread,
    joinedSeq: Math.max(1, r.joined_seq),
    ...(r.left_seq !== null ? { leftSeq: r.left_seq } : {}),
    settings: settings[r.id] ?? DEFAULT_CONVERSATION_SETTINGS,
    lastMessage:
      r.lm_id === null
        ? null
        : messageFromRow(
            {
              seq: r.lm_seq ?? 0,
              id: r.lm_id,
              sender_id: r.lm_sender_id ?? "",
              sender_device_id: r.lm_sender_device_id ?? "",
              client_msg_id: r.lm_client_msg_id ?? "",
              kind: r.lm_kind ?? "text",
              body: r.lm_body,
              payload: r.lm_payload,
              media: r.lm_media ?? "[]",
              thread_root_seq: r.lm_thread_root_seq,
              reply_count: r.lm_reply_count ?? 0,
              last_reply_seq: r.lm_last_reply_seq,
              last_reply_at: r.lm_last_reply_at,
              created_at: r.lm_created_at ?? 0,
              extra: r.lm_extra,
            },
            r.id,
          ),
  }));
}
