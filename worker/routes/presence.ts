import * as z from "zod";
import { LIMITS } from "../../protocol";
import { newApp, requireAuth } from "../app";
import { userStub } from "../../kernel/objects";
import { unwrap } from "../lib/apiError";
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

/**
 * Live presence of up to 100 users; anyone who shares no conversation with the caller is
 * `unknown`. The caller's object applies the privacy rule with the other users' objects
 * (durable-objects/user/presencePrivacy.ts); D1 is read only to skip ids that are nobody's.
 */
presence.get("/", async (c) => {
  const { userIds } = readQuery(c.req.url, PresenceQuery);
  const { userId } = c.get("auth");
  const { presence } = unwrap(await userStub(c.env, userId).presenceSeenBy(userId, userIds));
  return c.json({ presence });
});
