// Who exists: the directory's users rows, each on its own shard (kernel/d1/shards.ts).
import { groupByShard } from "./shards";

/** D1 binds at most 100 values in one query. */
const CHUNK = 90;

/** Which of `userIds` are users; `shardOf` names the database of a user id. */
export async function existingUsers(shardOf: (userId: string) => D1Database, userIds: Iterable<string>): Promise<Set<string>> {
  const found = new Set<string>();
  await Promise.all(
    [...groupByShard(new Set(userIds), shardOf)].map(async ([database, ids]) => {
      for (let i = 0; i < ids.length; i += CHUNK) {
        const chunk = ids.slice(i, i + CHUNK);
        const { results } = await database
          .prepare(`SELECT id FROM users WHERE id IN (${chunk.map(() => "?").join(", ")})`)
          .bind(...chunk)
          .all<{ id: string }>();
        for (const row of results) found.add(row.id);
      }
    }),
  );
  return found;
}
