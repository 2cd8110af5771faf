// The Hono app type and the middleware every route shares.
import { Hono, type Context } from "hono";
import { createMiddleware } from "hono/factory";
import type { Identity } from "../kernel/identity";
import { ApiError, errorResponse, objectUnavailableFor } from "./lib/apiError";
import { readSettings, requireSecret, type Settings } from "../kernel/settings";
import { userStub } from "../kernel/objects";
import { bearerToken, sessionKeys, verifySessionToken, type SessionClaims } from "./lib/sessionTokens";

export type AppEnv = {
  Bindings: Env;
  Variables: { settings: Settings; requestId: string; auth: Identity; session: SessionClaims };
};

export type AppContext = Context<AppEnv>;

export const newApp = () => new Hono<AppEnv>();

/** Request id and settings for every request. */
export const base = createMiddleware<AppEnv>(async (c, next) => {
  c.set("requestId", c.req.header("cf-ray") ?? crypto.randomUUID());
  c.set("settings", readSettings(c.env));
  await next();
});

export function onError(err: Error, c: AppContext): Response {
  const requestId = c.get("requestId") ?? crypto.randomUUID();
  const request = `request ${requestId} ${c.req.method} ${new URL(c.req.url).pathname}`;
  if (err instanceof ApiError) {
    // A 5xx an object answered as a value (a Failure) is logged and identified like a thrown one.
    if (err.status >= 500) console.error(`${request} failed: ${err.code}: ${err.message}`);
    return errorResponse(err, requestId);
  }
  const retryAfterSeconds = objectUnavailableFor(err);
  if (retryAfterSeconds !== undefined) {
    console.warn(`${request}: a Durable Object was unavailable:`, String(err));
    return errorResponse(new ApiError("unavailable", "temporarily unavailable, try again", { retryAfterSeconds }), requestId);
  }
  console.error(`${request} failed:`, err);
  return errorResponse(new ApiError("internal", "internal error"), requestId);
}

/**
 * Resolves `Authorization: Bearer <token>` to a live session, or answers 401: the token's MAC and
 * expiry here, then one call to the caller's own user object, which says whether the session is
 * still live (a logout there ends it at once for every isolate). No database is read. A user
 * object that cannot be reached is a 503 (onError), never a 401 that would sign the device out.
 */
export const requireAuth = createMiddleware<AppEnv>(async (c, next) => {
  const token = bearerToken(c.req.header("authorization"));
  if (!token) throw new ApiError("unauthorized", "missing or malformed bearer token");
  const session = await verifiedSession(c, token);
  if (!session || !(await liveSession(c, session))) throw new ApiError("unauthorized", "unknown, expired or revoked token");
  c.set("auth", { userId: session.userId, deviceId: session.deviceId });
  c.set("session", session);
  await next();
});

const liveSession = (c: AppContext, session: SessionClaims) =>
  userStub(c.env, session.userId).checkSession(session.userId, session.deviceId, session.sessionId);

/**
 * A bearer token's claims when it is ours (its MAC under a key of SESSION_SECRET) and unexpired,
 * else null. Costs no call: a forged or stale token is refused before any object hears of it.
 */
export function verifiedSession(c: AppContext, token: string): Promise<SessionClaims | null> {
  const settings = c.get("settings");
  return verifySessionToken(token, sessionKeys(requireSecret("SESSION_SECRET", settings.sessionSecret)), Date.now(), settings.tokenTtlMs);
}
