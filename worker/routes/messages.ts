// Multi-device sync: GET /messages?since= pages through every message of every conversation
// the caller belongs to, exactly once, in the order D1 ingested them.
import { SinceQuery } from "../../protocol";
import { newApp, requireAuth } from "../app";
import { MESSAGE_JSON_SQL } from "../../kernel/d1/rows";
import { ApiError } from "../lib/apiError";
import { readQuery } from "../lib/validate";

export const messages = newApp();
messages.use(requireAuth);

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

messages.get("/", async (c) => {
  const query = readQuery(c.req.url, SinceQuery);
  const { after, minTime } = parseSince(query.since);
  // The inner query reads only the covering index (conversation_id, ingest_id, created_at): for
  // each of the caller's conversations, the ids after the cursor; the top `limit + 1` of them are
  // then read in full. Without that index SQLite sorted every full message row after the cursor
  // on every page: paging through 100k messages took 17 s (quadratic in the backlog). With it,
  // SQLite reads each conversation's entries in ingest order and stops once they can no longer
  // enter the page, so a page reads at most `limit + 1` entries per conversation whatever the
  // backlog (measured flat: docs/performance.md, S4); docs/scale.md has the per-user index that
  // bounds it by the page alone.
  const { results } = await c.env.DB.prepare(
    `SELECT ingest_id, ${MESSAGE_JSON_SQL} AS json FROM messages WHERE ingest_id IN (
       SELECT ingest_id FROM messages
       WHERE conversation_id IN (SELECT conversation_id FROM members WHERE user_id = ?3)
         AND ingest_id > ?1 AND created_at >= ?2
       ORDER BY ingest_id LIMIT ?4)
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
