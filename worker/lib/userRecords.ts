import type { User } from "../../protocol";
import type { schema } from "../../kernel/d1/db";
import { existingUsers } from "../../kernel/d1/directory";
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

/** Throws 400 naming the ids that are not users. */
export async function requireUsersExist(env: Env, ids: string[]): Promise<void> {
  const unique = [...new Set(ids)];
  const shards = d1Shards(env);
  const found = await existingUsers((id) => shards.of(id), unique);
  const missing = unique.filter((id) => !found.has(id));
  if (missing.length > 0) {
    throw new ApiError("bad_request", "unknown user ids", { issues: missing.map((id) => ({ path: "userIds", message: `no user ${id}` })) });
  }
}
