// A local Web Push service for the tests (vitest globalSetup, runs in Node): it hands out
// subscriptions like a browser's PushManager would, and receives pushes like FCM or Mozilla's
// autopush would: it verifies the VAPID JWT (RFC 8292) against the subscription's
// applicationServerKey, decrypts the aes128gcm body (RFC 8291, RFC 8188) and records what it got.
// Tests can script its answers (410, 500 then 201, 429 with Retry-After) per subscription.
//
// Control API (JSON):
//   POST /subscriptions {applicationServerKey}          -> {id, endpoint, keys: {p256dh, auth}}
//   POST /subscriptions/:id/script {responses: [{status, retryAfter?}]}  queued answers, used first
//   GET  /subscriptions/:id                              -> {received: Received[], attempts: Attempt[]}
//   POST /push/:id                                       the push endpoint itself
import { createDecipheriv, createECDH, createHmac, createPublicKey, randomBytes, verify, type ECDH } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    pushServiceUrl: string;
  }
}

export interface Received {
  headers: { ttl: string | null; urgency: string | null; topic: string | null; contentEncoding: string | null; authorization: string | null };
  vapid: { k: string; aud: string; exp: number; sub: string };
  payload: unknown;
  bodyBytes: number;
}
export interface Attempt {
  status: number;
  error?: string;
}
interface Scripted {
  status: number;
  retryAfter?: string;
}
interface Subscription {
  ecdh: ECDH;
  auth: Buffer;
  applicationServerKey: string;
  script: Scripted[];
  received: Received[];
  attempts: Attempt[];
}

/** RFC 8030 §7.2: a push service has to accept 4096 bytes of body; we accept no more. */
const MAX_BODY = 4096;

class Rejection extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const hmac = (key: Buffer, data: Buffer) => createHmac("sha256", key).update(data).digest();

/** RFC 8291 §3.4 and RFC 8188 §2: one record, padding delimited by 0x02. */
export function decryptAes128gcm(body: Buffer, ecdh: ECDH, auth: Buffer): Buffer {
  if (body.length < 21) throw new Rejection(400, "body shorter than the aes128gcm header");
  const salt = body.subarray(0, 16);
  const recordSize = body.readUInt32BE(16);
  const idLength = body[20]!;
  if (idLength !== 65) throw new Rejection(400, `keyid is ${idLength} bytes, expected a 65-byte P-256 point`);
  const senderPublic = body.subarray(21, 86);
  const record = body.subarray(86);
  if (record.length > recordSize) throw new Rejection(400, "more than one record");
  if (record.length < 17) throw new Rejection(400, "record too short");
  const ecdhSecret = ecdh.computeSecret(senderPublic);
  const keyInfo = Buffer.concat([Buffer.from("WebPush: info\0"), ecdh.getPublicKey(), senderPublic, Buffer.from([1])]);
  const ikm = hmac(hmac(auth, ecdhSecret), keyInfo);
  const prk = hmac(salt, ikm);
  const cek = hmac(prk, Buffer.from("Content-Encoding: aes128gcm\0\x01", "binary")).subarray(0, 16);
  const nonce = hmac(prk, Buffer.from("Content-Encoding: nonce\0\x01", "binary")).subarray(0, 12);
  const decipher = createDecipheriv("aes-128-gcm", cek, nonce);
  decipher.setAuthTag(record.subarray(record.length - 16));
  let padded: Buffer;
  try {
    padded = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
  } catch {
    throw new Rejection(400, "decryption failed");
  }
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (end < 0 || padded[end] !== 2) throw new Rejection(400, "last record lacks the 0x02 delimiter");
  return padded.subarray(0, end);
}

/** RFC 8292 §3: `vapid t=<JWT>, k=<public key>`; an ES256 JWT with aud, exp (at most 24 h) and sub. */
export function verifyVapid(authorization: string | undefined, expectedKey: string, endpointHost: string): Received["vapid"] {
  const match = /^vapid\s+t=([A-Za-z0-9_.-]+),\s*k=([A-Za-z0-9_-]+)$/.exec(authorization ?? "");
  if (!match) throw new Rejection(401, "no vapid Authorization");
  const [, jwt = "", k = ""] = match;
  if (k !== expectedKey) throw new Rejection(403, "k is not the subscription's applicationServerKey");
  const [header, claims, signature] = jwt.split(".");
  if (!header || !claims || !signature) throw new Rejection(401, "malformed JWT");
  const point = Buffer.from(k, "base64url");
  const key = createPublicKey({
    key: { kty: "EC", crv: "P-256", x: point.subarray(1, 33).toString("base64url"), y: point.subarray(33, 65).toString("base64url") },
    format: "jwk",
  });
  const ok = verify("sha256", Buffer.from(`${header}.${claims}`), { key, dsaEncoding: "ieee-p1363" }, Buffer.from(signature, "base64url"));
  if (!ok) throw new Rejection(401, "bad JWT signature");
  const head = jsonObject(Buffer.from(header, "base64url"));
  if (head.alg !== "ES256") throw new Rejection(401, "JWT alg is not ES256");
  const { aud, exp, sub } = jsonObject(Buffer.from(claims, "base64url"));
  if (typeof aud !== "string" || typeof exp !== "number" || typeof sub !== "string") {
    throw new Rejection(401, "JWT lacks aud, exp or sub");
  }
  if (new URL(aud).host !== endpointHost) throw new Rejection(401, `JWT aud ${aud} is not this push service`);
  const now = Date.now() / 1000;
  if (exp <= now || exp > now + 86_400) throw new Rejection(401, "JWT exp is past or more than 24 h ahead");
  if (!/^(mailto:|https:)/.test(sub)) throw new Rejection(401, "JWT sub is not mailto: or https:");
  return { k, aud, exp, sub };
}

function jsonObject(bytes: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new Rejection(400, "not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Rejection(400, "not a JSON object");
  return Object.fromEntries(Object.entries(value));
}

function isScripted(value: unknown): value is Scripted {
  if (typeof value !== "object" || value === null || !("status" in value) || typeof value.status !== "number") return false;
  return !("retryAfter" in value) || typeof value.retryAfter === "string";
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks);
}

function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}) {
  res.writeHead(status, body === undefined ? headers : { "content-type": "application/json", ...headers });
  res.end(body === undefined ? undefined : JSON.stringify(body));
}

export async function startPushService(): Promise<{ url: string; close: () => Promise<void> }> {
  const subscriptions = new Map<string, Subscription>();
  let url = "";

  function receive(sub: Subscription, req: IncomingMessage, body: Buffer): Received {
    const header = (name: string) => {
      const value = req.headers[name];
      return typeof value === "string" ? value : null;
    };
    if (header("content-encoding") !== "aes128gcm") throw new Rejection(415, "Content-Encoding is not aes128gcm");
    const ttl = header("ttl");
    if (ttl === null || !/^\d+$/.test(ttl)) throw new Rejection(400, "missing or invalid TTL");
    const topic = header("topic");
    if (topic !== null && !/^[A-Za-z0-9_-]{1,32}$/.test(topic)) throw new Rejection(400, "Topic is not 1-32 URL-safe base64 characters");
    const urgency = header("urgency");
    if (urgency !== null && !["very-low", "low", "normal", "high"].includes(urgency)) throw new Rejection(400, "bad Urgency");
    if (body.length > MAX_BODY) throw new Rejection(413, "body over 4096 bytes");
    const vapid = verifyVapid(header("authorization") ?? undefined, sub.applicationServerKey, new URL(url).host);
    const plaintext = decryptAes128gcm(body, sub.ecdh, sub.auth);
    return {
      headers: { ttl, urgency, topic, contentEncoding: header("content-encoding"), authorization: header("authorization") },
      vapid,
      payload: jsonObject(plaintext),
      bodyBytes: body.length,
    };
  }

  const server = createServer(async (req, res) => {
    try {
      const path = new URL(req.url ?? "/", "http://x").pathname;
      const body = await readBody(req);
      let m: RegExpExecArray | null;
      if (req.method === "POST" && path === "/subscriptions") {
        const { applicationServerKey } = jsonObject(body);
        if (typeof applicationServerKey !== "string") return send(res, 400, { error: "applicationServerKey required" });
        const id = randomBytes(12).toString("hex");
        const ecdh = createECDH("prime256v1");
        ecdh.generateKeys();
        const auth = randomBytes(16);
        subscriptions.set(id, { ecdh, auth, applicationServerKey, script: [], received: [], attempts: [] });
        return send(res, 201, {
          id,
          endpoint: `${url}/push/${id}`,
          keys: { p256dh: ecdh.getPublicKey().toString("base64url"), auth: auth.toString("base64url") },
        });
      }
      if ((m = /^\/subscriptions\/([0-9a-f]+)(\/script)?$/.exec(path))) {
        const sub = subscriptions.get(m[1]!);
        if (!sub) return send(res, 404, { error: "no such subscription" });
        if (req.method === "GET" && !m[2]) return send(res, 200, { received: sub.received, attempts: sub.attempts });
        if (req.method === "POST" && m[2]) {
          const { responses } = jsonObject(body);
          if (!Array.isArray(responses) || !responses.every(isScripted)) return send(res, 400, { error: "responses: [{status, retryAfter?}]" });
          sub.script.push(...responses);
          return send(res, 204);
        }
      }
      if (req.method === "POST" && (m = /^\/push\/([0-9a-f]+)$/.exec(path))) {
        const sub = subscriptions.get(m[1]!);
        if (!sub) return send(res, 404, { error: "no such subscription" });
        const scripted = sub.script.shift();
        if (scripted && (scripted.status < 200 || scripted.status > 299)) {
          sub.attempts.push({ status: scripted.status });
          return send(res, scripted.status, { error: "scripted" }, scripted.retryAfter ? { "retry-after": scripted.retryAfter } : {});
        }
        try {
          sub.received.push(receive(sub, req, body));
        } catch (err) {
          const status = err instanceof Rejection ? err.status : 400;
          sub.attempts.push({ status, error: String(err) });
          return send(res, status, { error: String(err) });
        }
        const status = scripted?.status ?? 201;
        sub.attempts.push({ status });
        return send(res, status, undefined, { location: `${url}/messages/${randomBytes(8).toString("hex")}` });
      }
      return send(res, 404, { error: "no such route" });
    } catch (err) {
      return send(res, 500, { error: String(err) });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("push service has no TCP address");
  url = `http://127.0.0.1:${address.port}`;
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** vitest globalSetup: one push service for the whole run, its URL given to tests as `pushServiceUrl`. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const service = await startPushService();
  project.provide("pushServiceUrl", service.url);
  return service.close;
}
