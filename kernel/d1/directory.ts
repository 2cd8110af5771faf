// Who exists: the directory's users rows, each on its own shard (kernel/d1/shards.ts).
import { queryByShard } from "./shards";

/** Which of `userIds` are users; `shardOf` names the database of a user id. */
export async function existingUsers(shardOf: (userId: string) => D1Database, userIds: Iterable<string>): Promise<Set<string>> {
  const rows = await queryByShard(userIds, shardOf, async (database, ids) =>
    (
      await database
        .prepare(`SELECT id FROM users WHERE id IN (${ids.map(() => "?").join(", ")})`)
        .bind(...ids)
        .all<{ id: string }>()
    ).results,
  );
  return new Set(rows.map((row) => row.id));
}
