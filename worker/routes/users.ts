import { and, asc, eq, gte, lt } from "drizzle-orm";
import { LIMITS, UserSearchQuery } from "../../protocol";
import { newApp, requireAuth } from "../app";
import { db, schema } from "../db";
import { ApiError } from "../lib/errors";
import { toUser } from "../lib/users";
import { readQuery } from "../lib/validate";

export const users = newApp();
users.use(requireAuth);

users.get("/", async (c) => {
  const { q } = readQuery(c.req.url, UserSearchQuery);
  const prefix = q.toLowerCase();
  // Usernames are [a-z0-9_] once lower-cased, and "~" sorts after all of those, so the range
  // [prefix, prefix + "~") is exactly the prefix match, served by the unique index.
  if (!/^[a-z0-9_]+$/.test(prefix)) return c.json({ users: [] });
  const rows = await db(c.env)
    .select()
    .from(schema.users)
    .where(and(gte(schema.users.usernameLower, prefix), lt(schema.users.usernameLower, `${prefix}~`)))
    .orderBy(asc(schema.users.usernameLower))
    .limit(LIMITS.usersSearchMax);
  return c.json({ users: rows.map(toUser) });
});

users.get("/:id", async (c) => {
  const user = await db(c.env).query.users.findFirst({ where: eq(schema.users.id, c.req.param("id")) });
  if (!user) throw new ApiError("not_found", "no such user");
  return c.json({ user: toUser(user) });
});
