import { inArray } from "drizzle-orm";
import type { User } from "../../protocol";
import { drizzleOf, schema } from "../../kernel/d1/db";
import { d1Shards } from "../../kernel/d1/shards";
import { ApiError } from "./apiError";

type UserRow = typeof schema.users.$inferSelect;

/** A new user's row (as inserted) has no photo yet. */
export const toUser = (row: Omit<UserRow, "photoId"> & { photoId?: string | null }): User => ({
  id: row.id,
  username: row.username,
  displayName: row.displayName,
  ...(row.photoId != null ? { photoId: row.photoId } : {}),
  createdAt: row.createdAt,
});

/** Throws 400 naming the ids that are not users. Chunked: D1 takes at most 100 bound values. */
export async function requireUsersExist(env: Env, ids: string[]): Promise<void> {
  const unique = [...new Set(ids)];
  const found = new Set<string>();
  for (const [database, ids] of d1Shards(env).group(unique)) {
    for (let i = 0; i < ids.length; i += 90) {
      const chunk = ids.slice(i, i + 90);
      const rows = await drizzleOf(database).select({ id: schema.users.id }).from(schema.users).where(inArray(schema.users.id, chunk));
      for (const r of rows) found.add(r.id);
    }
  }
  const missing = unique.filter((id) => !found.has(id));
  if (missing.length > 0) {
    throw new ApiError("bad_request", "unknown user ids", { issues: missing.map((id) => ({ path: "userIds", message: `no user ${id}` })) });
  }
}
