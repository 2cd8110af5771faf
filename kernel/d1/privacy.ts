// The presence privacy rule: a user's presence is disclosed only to users who share a
// conversation with them (and to themselves).

/** Which of `userIds` share at least one conversation with `viewerId` (per D1's members, on every shard). */
export async function sharedWith(shards: readonly D1Database[], viewerId: string, userIds: string[]): Promise<Set<string>> {
  const shared = new Set<string>();
  const unique = [...new Set(userIds)];
  if (unique.includes(viewerId)) shared.add(viewerId);
  const others = unique.filter((id) => id !== viewerId);
  // D1 takes at most 100 bound parameters per statement.
  for (let i = 0; i < others.length; i += 90) {
    const chunk = others.slice(i, i + 90);
    for (const db of shards) {
      const { results } = await db
        .prepare(
          `SELECT DISTINCT theirs.user_id FROM members mine
           JOIN members theirs ON theirs.conversation_id = mine.conversation_id
           WHERE mine.user_id = ? AND theirs.user_id IN (${chunk.map(() => "?").join(",")})`,
        )
        .bind(viewerId, ...chunk)
        .all<{ user_id: string }>();
      for (const r of results) shared.add(r.user_id);
    }
  }
  return shared;
}
