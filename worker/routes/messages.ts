// Messages: sending (POST /send, POST /group/send; the conversation socket sends too, through
// routes/realtime.ts), one conversation's history, and multi-device sync (GET /messages?since=,
// every message of every conversation the caller belongs to, exactly once, in the order D1
// ingested them). Each route authenticates itself: this app is mounted at the root.
import { GroupSendBody, HistoryQuery, SendBody, SinceQuery, type SendInput } from "../../protocol";
import { sendWithMedia } from "../../kernel/d1/mediaRecords";
import { conversationStub } from "../../kernel/objects";
import { newApp, requireAuth, type AppContext } from "../app";
import { MESSAGE_JSON_SQL } from "../../kernel/d1/rows";
import { ApiError, unwrap } from "../lib/apiError";
import { readJson, readQuery } from "../lib/validate";

export const messages = newApp();

messages.post("/send", requireAuth, async (c) => {
  const { conversationId, ...content } = await readJson(c.req.raw, SendBody, c.get("settings").maxRequestBytes);
  return sendMessage(c, conversationId, content, null);
});

messages.post("/group/send", requireAuth, async (c) => {
  const { groupId, ...content } = await readJson(c.req.raw, GroupSendBody, c.get("settings").maxRequestBytes);
  return sendMessage(c, groupId, content, "group");
});

async function sendMessage(c: AppContext, conversationId: string, content: SendInput, requiredType: "group" | null) {
  const auth = c.get("auth");
  const stub = conversationStub(c.env, conversationId);
  const result = unwrap(
    await sendWithMedia(c.env, auth.userId, conversationId, content.mediaIds ?? [], async (media) =>
      // Awaited here: the stub's answer is a union of promises, which would not infer as one type.
      await stub.send(auth, { ...content, media }, Date.now(), requiredType),
    content.forwarded === true,
    ),
  );
  return c.json({ message: result.message }, result.duplicate ? 200 : 201);
}

messages.get("/conversations/:id/messages", requireAuth, async (c) => {
  const query = readQuery(c.req.url, HistoryQuery);
  const result = unwrap(await conversationStub(c.env, c.req.param("id")).history(c.get("auth").userId, query));
  return c.json({ messages: result.messages, hasMore: result.hasMore });
});

/**
 * `since` is 0, an epoch-ms time, or a cursor `c<ingestId>.<minTime>` (base 36) from a previous
 * page. The cursor is D1's ingest order, not message time: a message that reaches D1 late (its
 * conversation's outbox was behind) gets a later ingest id, so a client paging on never misses it.
 */
export function parseSince(since: string): { after: number; minTime: number } {
  if (/^\d{1,16}$/.test(since)) return { after: 0, minTime: Number(since) };
  const m = /^c([0-9a-z]{1,12})\.([0-9a-z]{1,12})$/.exec(since);
  if (!m) throw new ApiError("bad_request", "since must be 0, an epoch-ms time or a cursor");
  return { after: parseInt(m[1]!, 36), minTime: parseInt(m[2]!, 36) };
}

const cursorOf = (after: number, minTime: number) => `c${after.toString(36)}.${minTime.toString(36)}`;

messages.get("/messages", requireAuth, async (c) => {
  const query = readQuery(c.req.url, SinceQuery);
  const { after, minTime } = parseSince(query.since);
  // The inner query reads only the covering index (conversation_id, ingest_id, created_at): for
  // each of the caller's conversations, the ids after the cursor; the top `limit + 1` of them are
  // then read in full. Without that index SQLite sorted every full message row after the cursor
  // on every page: paging through 100k messages took 17 s (quadratic in the backlog). With it,
  // SQLite reads each conversation's entries in ingest order and stops once they can no longer
  // enter the page, so a page reads at most `limit + 1` entries per conversation whatever the
  // backlog (measured flat: docs/performance.md, S4); docs/scale.md has the per-user index that
  // bounds it by the page alone. The index holds seq too, so each conversation's span (what a
  // member added later, or a former member, may read: docs/api.md) is checked from it as well.
  const { results } = await c.env.DB.prepare(
    // A message the caller deleted for themself keeps its place, without its content (as the
    // conversation's history shows it to them); so does an edit of a message from before their
    // joining, without its text (durable-objects/conversation/actions.ts viewFor).
    `SELECT ingest_id, CASE
       WHEN EXISTS (SELECT 1 FROM hidden_messages h WHERE h.user_id = ?3 AND h.conversation_id = messages.conversation_id AND h.seq = messages.seq)
       THEN json_set(json_remove(${MESSAGE_JSON_SQL}, '$.ciphertext', '$.commit'), '$.body', NULL, '$.media', json('[]'), '$.hidden', json('true'))
       WHEN kind = 'action' AND json_extract(body, '$.type') = 'edit' AND json_extract(body, '$.targetSeq') < coalesce(
         (SELECT joined_seq FROM members mb WHERE mb.conversation_id = messages.conversation_id AND mb.user_id = ?3),
         (SELECT joined_seq FROM former_members f WHERE f.conversation_id = messages.conversation_id AND f.user_id = ?3), 0)
       -- Concatenated: a plain string, not JSON that json_set would nest as an object.
       THEN json_set(${MESSAGE_JSON_SQL}, '$.body', '' || json_remove(body, '$.body'))
       ELSE ${MESSAGE_JSON_SQL} END AS json FROM messages WHERE ingest_id IN (
       SELECT x.ingest_id FROM (
         SELECT conversation_id, joined_seq, ${Number.MAX_SAFE_INTEGER} AS left_seq FROM members WHERE user_id = ?3
         UNION ALL
         SELECT conversation_id, joined_seq, left_seq FROM former_members WHERE user_id = ?3
       ) AS span
       JOIN messages x ON x.conversation_id = span.conversation_id
       WHERE x.ingest_id > ?1 AND x.created_at >= ?2 AND x.seq >= span.joined_seq AND x.seq <= span.left_seq
       ORDER BY x.ingest_id LIMIT ?4)
     ORDER BY ingest_id`,
  )
    .bind(after, minTime, c.get("auth").userId, query.limit + 1)
    .all<{ ingest_id: number; json: string }>();
  const hasMore = results.length > query.limit;
  const page = hasMore ? results.slice(0, query.limit) : results;
  const last = page.length > 0 ? page[page.length - 1]!.ingest_id : after;
  // Each message is already its JSON text (MESSAGE_JSON_SQL): the page is spliced, not re-encoded.
  const messagesJson = page.map((r) => r.json).join(",");
  const cursor = JSON.stringify(cursorOf(last, minTime));
  return c.body(`{"messages":[${messagesJson}],"cursor":${cursor},"hasMore":${hasMore}}`, 200, {
    "content-type": "application/json",
  });
});
