// The Hono app type and the middleware every route shares.
import { Hono, type Context } from "hono";
import { createMiddleware } from "hono/factory";
import type { Identity } from "../kernel/identity";
import { ApiError, errorResponse, objectUnavailableFor } from "./lib/apiError";
import { readSettings, type Settings } from "../kernel/settings";
import { sha256 } from "./lib/crypto";

export type AppEnv = {
  Bindings: Env;
  Variables: { settings: Settings; requestId: string; auth: Identity };
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

/** Resolves `Authorization: Bearer <token>` to a live device, or answers 401. */
export const requireAuth = createMiddleware<AppEnv>(async (c, next) => {
  const header = c.req.header("authorization") ?? "";
  const match = /^Bearer\s+([A-Za-z0-9_-]{16,256})$/.exec(header);
  if (!match) throw new ApiError("unauthorized", "missing or malformed bearer token");
  const identity = await identityForToken(c.env.DB, match[1]!, c.get("settings"));
  if (!identity) throw new ApiError("unauthorized", "unknown, expired or revoked token");
  c.set("auth", identity);
  await next();
});

export async function identityForToken(db: D1Database, token: string, settings: Settings): Promise<Identity | null> {
  const row = await db
    .prepare("SELECT id, user_id, created_at FROM devices WHERE token_hash = ?")
    .bind(await sha256(token))
    .first<{ id: string; user_id: string; created_at: number }>();
  if (!row || row.created_at + settings.tokenTtlMs < Date.now()) return null;
  return { userId: row.user_id, deviceId: row.id };
}
