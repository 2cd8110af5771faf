import { and, asc, eq, gte, inArray, lt } from "drizzle-orm";
import * as z from "zod";
import { LIMITS, USER_LOOKUP_MAX, User, UserSearchQuery } from "../../protocol";
import { newApp, requireAuth } from "../app";
import { db, drizzleOf, schema } from "../../kernel/d1/db";
import { d1Shards } from "../../kernel/d1/shards";
import { ApiError } from "../lib/apiError";
import { toUser } from "../lib/userRecords";
import { devicesOf } from "../lib/deviceKeys";
import { readQuery } from "../lib/validate";

export const users = newApp();
users.use(requireAuth);

/**
 * `GET /users?ids=a,b,c` (an extension): the users with these ids, so that a client learns the
 * names of everyone in its conversation list in a few requests rather than one per person.
 * At most USER_LOOKUP_MAX ids.
 */
const UserLookupQuery = z.strictObject({
  ids: z
    .string()
    .transform((ids) => ids.split(","))
    .pipe(z.array(User.shape.id).min(1).max(USER_LOOKUP_MAX)),
});

users.get("/", async (c) => {
  if (new URL(c.req.url).searchParams.has("ids")) {
    const { ids } = readQuery(c.req.url, UserLookupQuery);
    const unique = [...new Set(ids)];
    const rows = await d1Shards(c.env).query(unique, (database, ids) => drizzleOf(database).select().from(schema.users).where(inArray(schema.users.id, ids)));
    // In the order asked; unknown ids are left out.
    const byId = new Map(rows.map((row) => [row.id, row]));
    return c.json({ users: unique.flatMap((id) => (byId.has(id) ? [toUser(byId.get(id)!)] : [])) });
  }
  const { q } = readQuery(c.req.url, UserSearchQuery);
  const prefix = q.toLowerCase();
  // Usernames are [a-z0-9_] once lower-cased, and "~" sorts after all of those, so the range
  // [prefix, prefix + "~") is exactly the prefix match, served by the unique index.
  if (!/^[a-z0-9_]+$/.test(prefix)) return c.json({ users: [] });
  // Every directory shard holds some of the names: each answers its first ones, and the merge
  // keeps the first of all.
  const perShard = await Promise.all(
    d1Shards(c.env).all.map((database) =>
      drizzleOf(database)
        .select()
        .from(schema.users)
        .where(and(gte(schema.users.usernameLower, prefix), lt(schema.users.usernameLower, `${prefix}~`)))
        .orderBy(asc(schema.users.usernameLower))
        .limit(LIMITS.usersSearchMax),
    ),
  );
  const rows = perShard.flat().sort((a, b) => (a.usernameLower < b.usernameLower ? -1 : 1)).slice(0, LIMITS.usersSearchMax);
  return c.json({ users: rows.map(toUser) });
});

users.get("/:id", async (c) => {
  const user = await db(c.env, c.req.param("id")).query.users.findFirst({ where: eq(schema.users.id, c.req.param("id")) });
  if (!user) throw new ApiError("not_found", "no such user");
  return c.json({ user: toUser(user) });
});

/** The user's logged-in devices with their MLS signature keys (for adding them to groups and for safety numbers). */
users.get("/:id/devices", async (c) => {
  const user = await db(c.env, c.req.param("id")).query.users.findFirst({ where: eq(schema.users.id, c.req.param("id")) });
  if (!user) throw new ApiError("not_found", "no such user");
  const devices = await devicesOf(c.env, [user.id]);
  return c.json({ devices: devices.map(({ id, name, createdAt, signatureKey }) => ({ id, name, createdAt, signatureKey })) });
});
