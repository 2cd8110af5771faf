// The Worker: one route table. Each resource lives in its own file under routes/.
import { IDENTITY_HEADERS } from "../kernel/identity";
import { base, newApp, onError } from "./app";
import { ApiError } from "./lib/apiError";
import { securityHeaders } from "./lib/security";
import { auth, me } from "./routes/auth";
import { devices } from "./routes/devices";
import { conversations, groups } from "./routes/conversations";
import { messages } from "./routes/messages";
import { actions } from "./routes/actions";
import { mls } from "./routes/mls";
import { realtime } from "./routes/realtime";
import { receipts } from "./routes/receipts";
import { users } from "./routes/users";
import { presence } from "./routes/presence";
import { push } from "./routes/push";
import { media, upload } from "./routes/media";
import { handlePushBatch } from "./push/consumer";
import { consumeFanout } from "./queues";
import { sweepAbandonedUploads } from "./lib/mediaStore";
import { readSettings } from "../kernel/settings";
import { QUEUES } from "../durable-objects/contract";

export { ConversationDO } from "../durable-objects/conversation/ConversationDO";
export { UserDO } from "../durable-objects/user/UserDO";
export { ThrottleDO } from "../durable-objects/throttle/ThrottleDO";

const API_PREFIXES = ["/auth", "/me", "/users", "/conversations", "/group", "/send", "/messages", "/ws", "/presence", "/push", "/upload", "/media", "/mls", "/devices", "/search"];

const app = newApp();
app.use(base);
app.use(securityHeaders);
app.use(async (c, next) => {
  // Identity headers are set by the Worker only; a client can never supply them.
  if (c.req.header(IDENTITY_HEADERS.user) || c.req.header(IDENTITY_HEADERS.device)) {
    throw new ApiError("bad_request", "reserved header");
  }
  await next();
});
// Handlers run in the order they are mounted, and a sub-app's middleware applies to every path
// under its mount point: the sockets (which take a ticket instead of a bearer token) come first,
// and the apps mounted beside others authenticate each route themselves.
app.route("/", realtime);
app.route("/", messages);
app.route("/", actions);
app.route("/", mls);
app.route("/auth", auth);
app.route("/me", me);
app.route("/devices", devices);
app.route("/users", users);
app.route("/conversations", conversations);
app.route("/conversations", receipts);
app.route("/group", groups);
app.route("/presence", presence);
app.route("/push", push);
app.route("/upload", upload);
app.route("/media", media);

app.notFound(async (c) => {
  const path = new URL(c.req.url).pathname;
  const read = c.req.method === "GET" || c.req.method === "HEAD";
  if (API_PREFIXES.some((p) => path === p || path.startsWith(`${p}/`)) || !read) {
    throw new ApiError("not_found", "no such route");
  }
  // A path naming no file (no dot in its last segment) is a client-side route (/, /c/<id>,
  // /settings ...), a real URL: it gets the app's index.html, whose script reads the path
  // (web/src/app/route.ts). A file that is not there is a 404, not the app's HTML where a script
  // or image was expected.
  const lastSegment = path.slice(path.lastIndexOf("/") + 1);
  if (!lastSegment.includes(".")) return c.env.ASSETS.fetch(new Request(new URL("/", c.req.url), c.req.raw));
  const file = await c.env.ASSETS.fetch(c.req.raw);
  if (file.status === 404) throw new ApiError("not_found", "no such file");
  return file;
});
app.onError(onError);

export default {
  fetch: app.fetch,
  /** The cron trigger of wrangler.toml: sweeps abandoned uploads. */
  async scheduled(controller, env) {
    const swept = await sweepAbandonedUploads(env, readSettings(env).media, controller.scheduledTime);
    if (swept > 0) console.log(`swept ${swept} abandoned uploads`);
  },
  async queue(batch, env) {
    switch (batch.queue) {
      case QUEUES.fanout:
        return consumeFanout(batch, env);
      case QUEUES.push:
        return handlePushBatch(batch, env);
      default:
        console.error(`no consumer for queue ${batch.queue}; retrying its batch`);
        batch.retryAll();
    }
  },
} satisfies ExportedHandler<Env>;
