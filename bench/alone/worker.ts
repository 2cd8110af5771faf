// The app with a conversation object's remote work answered at once: the bench's "alone" target
// (bench/run.ts, S1 and S2). It measures what a conversation object's own thread carries.
//
// Under `wrangler dev` the runtime runs everything on one thread: the conversation object, the
// users' objects its deferred pass calls, and local D1. In a deployment those run elsewhere, and
// the conversation's thread only builds the D1 batch and issues the calls. Here the pass still
// builds every D1 statement and makes every fan-out call, but D1's batch and each user object's
// `deliver` resolve at once without doing their work. Nothing else differs from the app: the same
// Worker, the same objects, the same settings. Started by the bench as
// `npm run dev -- bench/alone/worker.ts` (the script argument replaces wrangler.toml's `main`).
//
// ALONE_ANSWERS (a --var; default "d1,users") names what answers at once. "d1" alone leaves the
// users' objects real: what local D1 costs the thread, apart from the users' objects
// (`npm run bench -- --alone-answers d1`).
import app, { ThrottleDO, UserDO } from "../../worker/index";
import { ConversationDO as AppConversationDO } from "../../durable-objects/conversation/ConversationDO";
import type { D1Writer } from "../../durable-objects/conversation/d1Outbox";
import { peersOf } from "../../durable-objects/contract";
import { d1Shards } from "../../kernel/d1/shards";

export default app;
export { ThrottleDO, UserDO };

export class ConversationDO extends AppConversationDO {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const answers = aloneAnswers(env);
    if (!answers.has("d1")) return;
    const remoteD1 = (key: string): D1Writer => ({ prepare: (query) => d1Shards(env).of(key).prepare(query), batch: async () => [] });
    this.useConnections({ d1: remoteD1 });
    if (!answers.has("users")) return;
    // Answered as a bench user's object would: each bench user has one device, which holds a user
    // socket, so its online devices are those with a dedupe socket here, if any (see QuietMembers).
    const users = peersOf(env).user;
    this.useConnections({
      users: (userId) => ({
        deliver: async (_userId, _events, _inOrder, liveOn = {}) => {
          const devices = Object.keys(liveOn);
          return devices.length > 0 ? { devices, epoch: 0 } : null;
        },
        trackConversationSocket: (deviceId, conversationId) => users(userId).trackConversationSocket(deviceId, conversationId),
      }),
    });
  }
}

/** What answers at once: "d1", "users" (both by default). */
function aloneAnswers(env: Env): Set<string> {
  const value = (env as unknown as { ALONE_ANSWERS?: string }).ALONE_ANSWERS ?? "d1,users";
  return new Set(value.split(",").map((s) => s.trim()));
}
