// Message actions (docs/api.md "Message actions"): edit, delete for everyone, react and pin by one
// call, answered like a send; delete for me; the pinned messages; and full-text search over the
// caller's plaintext conversations. The conversation's object decides every action
// (durable-objects/conversation/actions.ts); search reads D1's FTS5 index, fed by the objects'
// outboxes. Each route authenticates itself: this app is mounted at the root.
import { ActionBody, HideBody, SearchQuery, type Message } from "../../protocol";
import { conversationStub } from "../../kernel/objects";
import { MESSAGE_JSON_SQL } from "../../kernel/d1/rows";
import { newApp, requireAuth } from "../app";
import { unwrap } from "../lib/apiError";
import { readJson, readQuery } from "../lib/validate";
import { ApiError } from "../lib/apiError";
import { d1Shards } from "../../kernel/d1/shards";
import { decodePositions, encodePositions, mergeNewestFirst, type ShardHit } from "../lib/shardMerge";

export const actions = newApp();

actions.post("/conversations/:id/actions", requireAuth, async (c) => {
  const body = await readJson(c.req.raw, ActionBody, c.get("settings").maxRequestBytes);
  const result = unwrap(await conversationStub(c.env, c.req.param("id")).act(c.get("auth"), body.clientMsgId, body.action, Date.now()));
  return c.json({ message: result.message }, result.duplicate ? 200 : 201);
});

actions.post("/conversations/:id/hidden", requireAuth, async (c) => {
  const body = await readJson(c.req.raw, HideBody, c.get("settings").maxRequestBytes);
  const result = unwrap(await conversationStub(c.env, c.req.param("id")).hide(c.get("auth").userId, body.seqs));
  return c.json({ seqs: result.seqs });
});

actions.get("/conversations/:id/pins", requireAuth, async (c) => {
  const result = unwrap(await conversationStub(c.env, c.req.param("id")).pins(c.get("auth").userId));
  return c.json({ messages: result.messages });
});

/** Marks FTS5's snippet() puts around each matched term (control characters: no tokenizer keeps them). */
const MATCH_START = "\u0001";
const MATCH_END = "\u0002";

/**
 * The FTS5 query for what a user typed: every word must occur (each quoted, so FTS5's own syntax
 * means nothing here: `OR`, `-`, `*`, `"`), the last one also as a prefix of a longer word, since a
 * search box is searched while typing. Null when nothing searchable is left.
 */
export function ftsQuery(typed: string): string | null {
  const words = typed
    .split(/\s+/u)
    .map((w) => w.replace(/["\u0000-\u001f]/gu, ""))
    .filter((w) => /[\p{L}\p{N}]/u.test(w))
    .slice(0, 10);
  if (words.length === 0) return null;
  return words.map((w, i) => `"${w}"${i === words.length - 1 ? "*" : ""}`).join(" ");
}

/** A snippet with its matched terms marked, as alternating parts. */
function snippetParts(snippet: string): { text: string; match: boolean }[] {
  const parts: { text: string; match: boolean }[] = [];
  for (const piece of snippet.split(MATCH_START)) {
    const end = piece.indexOf(MATCH_END);
    if (end === -1) {
      if (piece) parts.push({ text: piece, match: false });
      continue;
    }
    parts.push({ text: piece.slice(0, end), match: true });
    const rest = piece.slice(end + 1).replaceAll(MATCH_END, "");
    if (rest) parts.push({ text: rest, match: false });
  }
  return parts;
}

/**
 * Searches the plaintext messages of the caller's conversations (or of one), newest first: every
 * word typed must occur, the last also as a prefix. A member finds only what was said since they
 * joined (from the system message that added them), a former member only up to their removal;
 * never what they deleted for themself, never a deleted message (its body is gone from the
 * index) nor an E2EE one (no body on the server). The message's conversationId and seq open it in
 * context (GET /conversations/:id/messages?before=seq+26&limit=50).
 */
actions.get("/search", requireAuth, async (c) => {
  const query = readQuery(c.req.url, SearchQuery);
  const userId = c.get("auth").userId;
  const match = ftsQuery(query.q);
  if (match === null) return c.json({ results: [], cursor: null, hasMore: false });
  const shards = d1Shards(c.env);
  const from = query.before === undefined ? new Array<number>(shards.count).fill(Number.MAX_SAFE_INTEGER) : decodePositions(query.before, shards.count);
  if (!from) throw new ApiError("bad_request", "not a cursor of this deployment", { issues: [{ path: "before", message: "a cursor" }] });
  // A conversation's messages, index and members rows are on its own shard: a search in one reads
  // that shard, a search across all reads each shard from its own position, and the pages merge.
  const perShard = await Promise.all(
    shards.all.map(async (database, i): Promise<ShardHit<{ snip: string; json: string }>[]> => {
      if (query.conversationId !== undefined && shards.of(query.conversationId) !== database) return [];
      const hits = await searchShard(database, userId, match, from[i]!, query.conversationId ?? null, query.limit + 1);
      return hits.map((hit) => ({ position: hit.rid, at: hit.created_at, item: hit }));
    }),
  );
  const page = mergeNewestFirst(perShard, from, query.limit);
  return c.json({
    results: page.items.map((r) => ({ message: JSON.parse(r.json) as Message, snippet: snippetParts(r.snip) })),
    cursor: page.items.length > 0 ? encodePositions(page.positions) : null,
    hasMore: page.hasMore,
  });
});

/**
 * One shard's hits for `userId`, newest first in the order its index received them, from before
 * `before`. The FTS5 match runs first (its index), then each hit is checked against the caller's
 * span in its conversation (as a member since joined_seq, or as a former member through left_seq:
 * the rule of history and sync) by the two tables' primary keys; the page is then read as wire
 * JSON (MESSAGE_JSON_SQL).
 */
async function searchShard(database: D1Database, userId: string, match: string, before: number, conversationId: string | null, limit: number) {
  const { results } = await database
    .prepare(
      `WITH spans AS (
         SELECT conversation_id, joined_seq, ${Number.MAX_SAFE_INTEGER} AS left_seq FROM members WHERE user_id = ?1
         UNION ALL
         SELECT conversation_id, joined_seq, left_seq FROM former_members WHERE user_id = ?1
       ),
       hits AS (
         SELECT message_search.rowid AS rid, snippet(message_search, 0, ?5, ?6, '…', 16) AS snip
         FROM message_search
         JOIN messages hm ON hm.ingest_id = message_search.rowid
         JOIN spans sp ON sp.conversation_id = hm.conversation_id
         WHERE message_search MATCH ?2
           AND hm.ingest_id < ?3
           AND hm.seq >= sp.joined_seq AND hm.seq <= sp.left_seq
           AND (?4 IS NULL OR hm.conversation_id = ?4)
           AND NOT EXISTS (SELECT 1 FROM hidden_messages h WHERE h.user_id = ?1 AND h.conversation_id = hm.conversation_id AND h.seq = hm.seq)
         ORDER BY hm.ingest_id DESC
         LIMIT ?7)
       SELECT rid, snip,
         (SELECT created_at FROM messages WHERE messages.ingest_id = hits.rid) AS created_at,
         (SELECT ${MESSAGE_JSON_SQL} FROM messages WHERE messages.ingest_id = hits.rid) AS json
       FROM hits ORDER BY rid DESC`,
    )
    .bind(userId, match, before, conversationId, MATCH_START, MATCH_END, limit)
    .all<{ rid: number; snip: string; created_at: number; json: string }>();
  return results;
}
