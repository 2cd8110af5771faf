// Conversations and their members: the Worker authenticates and validates, then the conversation's
// object decides (membership, roles). The list is the caller's user object's, each entry read from
// its conversation.
// Messages (sending, history, sync) are routes/messages.ts; receipts routes/receipts.ts.
import { newId } from "../../kernel/ids";
import {
  AddMembersBody,
  CreateDirectBody,
  ConversationSettingsBody,
  CreateGroupBody,
  ConversationListQuery,
  CONVERSATION_PAGE_DEFAULT,
  GroupInfoBody,
  MemberRoleBody,
  DEFAULT_CONVERSATION_SETTINGS,
  type Conversation,
} from "../../protocol";
import { newApp, requireAuth, type AppContext } from "../app";
import { ApiError, unwrap } from "../lib/apiError";
import { sha256 } from "../lib/crypto";
import { conversationStub, userStub } from "../../kernel/objects";
import { requireUsersExist } from "../lib/userRecords";
import { readJson, readQuery } from "../lib/validate";
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
  return c.json(await listConversations(c, readQuery(c.req.url, ConversationListQuery)));
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

/**
 * A page of the caller's conversations (docs/api.md): the caller's user object answers which, in
 * what order, and the caller's settings of each; each conversation's object answers the rest, as
 * for GET /conversations/:id, one call per conversation on the page, in parallel (the object
 * already asked the conversations its user's devices watch live, to order them, and hands their
 * views over). No D1 read. A conversation that cannot be reached fails the page (onError: 503).
 */
async function listConversations(c: AppContext, query: { limit?: number | undefined; cursor?: string | undefined }) {
  const userId = c.get("auth").userId;
  const limit = query.limit ?? (query.cursor !== undefined ? CONVERSATION_PAGE_DEFAULT : null);
  const page = unwrap(await userStub(c.env, userId).conversationList(userId, { limit, cursor: query.cursor ?? null }));
  const views = await Promise.all(
    page.entries.map(async (entry): Promise<Conversation | null> => {
      const known = page.views[entry.id];
      if (known) return known;
      const result = await conversationStub(c.env, entry.id).view(userId);
      if (result.ok) return result.conversation;
      // Only a conversation that never had this user: nothing of it is theirs to list.
      console.warn(`conversation list of ${userId}: ${entry.id} answered ${result.code}`);
      return null;
    }),
  );
  // The user object orders by what the conversations told it; a message not yet relayed (the
  // caller's own, a moment ago) orders its conversation within the page by the conversation's own time.
  const conversations = views
    .filter((v): v is Conversation => v !== null)
    .map((v) => ({ ...v, settings: page.settings[v.id] ?? DEFAULT_CONVERSATION_SETTINGS }))
    .sort((a, b) => (b.lastMessageAt ?? b.createdAt) - (a.lastMessageAt ?? a.createdAt));
  return limit === null ? { conversations } : { conversations, hasMore: page.hasMore, cursor: page.cursor };
}
