// Security headers for the web app's own files that pass through the Worker: index.html for every
// client-side route and sw.js (wrangler.toml's run_worker_first leaves the fingerprinted bundles,
// icons and manifest to the platform, with web/public/_headers; this still covers them should
// they come through here).
// The Content-Security-Policy allows no inline script or style and nothing from another origin:
// the client is built by Vite into files served from this origin, sockets go to this origin
// (CSP3 'self' covers ws:/wss: of the same host), and media comes from this origin's signed
// URLs or from blob: URLs of files the user just picked. API answers in JSON are private to their
// caller: `no-store` (no shared or browser cache keeps them) and `nosniff`. HSTS goes on the
// documents served over https: (a browser ignores it over http:, so `wrangler dev` is unaffected).
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../app";

export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob: data:",
  "media-src 'self' blob:",
  "connect-src 'self'",
  "font-src 'self'",
  "worker-src 'self'",
  "manifest-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const APP_FILE = /^(text\/html|text\/css|(text|application)\/javascript|application\/manifest\+json)/i;
const APP_IMAGE = /^\/(icons|assets)\//;

export const securityHeaders = createMiddleware<AppEnv>(async (c, next) => {
  await next();
  const res = c.res;
  if (res.status === 101 || res.webSocket) return;
  const type = res.headers.get("content-type") ?? "";
  const path = new URL(c.req.url).pathname;
  if (/^application\/json/i.test(type)) {
    // An object's answer (a refused upgrade) has immutable headers: copy it.
    const out = new Response(res.body, res);
    out.headers.set("x-content-type-options", "nosniff");
    if (!out.headers.has("cache-control")) out.headers.set("cache-control", "no-store");
    c.res = out;
    return;
  }
  const appFile = APP_FILE.test(type) || (type.startsWith("image/") && APP_IMAGE.test(path));
  if (!appFile || res.headers.has("content-security-policy")) return;
  // Responses from the assets binding have immutable headers: copy before changing.
  const out = new Response(res.body, res);
  if (new URL(c.req.url).protocol === "https:") out.headers.set("strict-transport-security", "max-age=31536000; includeSubDomains");
  out.headers.set("content-security-policy", CONTENT_SECURITY_POLICY);
  out.headers.set("x-content-type-options", "nosniff");
  out.headers.set("referrer-policy", "no-referrer");
  out.headers.set("x-frame-options", "DENY");
  out.headers.set("cross-origin-opener-policy", "same-origin");
  out.headers.set("permissions-policy", "camera=(), geolocation=(), microphone=(self)");
  c.res = out;
});
