import * as z from "zod";
import { LIMITS, type Presence } from "../../protocol";
import { newApp, requireAuth } from "../app";
import { userStub } from "../../kernel/objects";
import { d1Shards } from "../../kernel/d1/shards";
import { sharedWith } from "../../kernel/d1/privacy";
import { readQuery } from "../lib/validate";

export const presence = newApp();
presence.use(requireAuth);

const PresenceQuery = z.strictObject({
  userIds: z
    .string()
    .min(1)
    .transform((s) => s.split(","))
    .pipe(z.array(z.string().min(1).max(128)).max(LIMITS.presenceQueryMax)),
});

/** Live presence of up to 100 users; anyone who shares no conversation with the caller is `unknown`. */
presence.get("/", async (c) => {
  const { userIds } = readQuery(c.req.url, PresenceQuery);
  const unique = [...new Set(userIds)];
  const shared = await sharedWith(d1Shards(c.env).all, c.get("auth").userId, unique);
  const result: Presence[] = await Promise.all(
    unique.map((userId) =>
      shared.has(userId)
        ? userStub(c.env, userId).getPresence(userId)
        : Promise.resolve<Presence>({ userId, status: "unknown", lastSeen: null }),
    ),
  );
  return c.json({ presence: result });
});
