// Loopback clients for the benchmark: the app's REST API and sockets, and the baseline's rooms.
//
// Sockets use the `ws` package with permessage-deflate off on both targets, so the bench measures
// the servers' work, not zlib's. It can send an Authorization header, so most sockets skip the
// ticket round trip; S5's app sockets take a ticket first, as the web client does (`ticketUrl`).
import WebSocket, { type RawData } from "ws";
import { apiRequest } from "../../scripts/lib/http.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const PASSWORD = "bench-password-1";

export class HttpError extends Error {}

/** A bench user with its one device. */
export interface User {
  userId: string;
  deviceId: string;
  token: string;
}

/** What the bench reads of a conversation (protocol/schemas.ts Conversation). */
export interface Conversation {
  id: string;
  lastSeq: number;
}

export interface ApiOptions {
  token?: string;
  body?: unknown;
  expect?: number[];
}

/**
 * A JSON call; throws with the body when the status is not one of `expect`. `T` is what the
 * answer is taken to be (the API's own types are in protocol/, checked by the app's tests).
 */
export async function api<T = unknown>(base: string, method: string, path: string, { token, body, expect = [200, 201] }: ApiOptions = {}): Promise<T> {
  const { status, text } = await apiRequest(base, method, path, { token, body, timeoutMs: 60_000 });
  if (!expect.includes(status)) throw new HttpError(`${method} ${path}: ${status} ${text.slice(0, 300)}`);
  return (text ? JSON.parse(text) : null) as T;
}

/** Runs `fn` over `items` with at most `limit` in flight; returns results in order. */
export async function pool<I, O>(items: readonly I[], limit: number, fn: (item: I, index: number) => Promise<O>): Promise<O[]> {
  const out = new Array<O>(items.length);
  // One iterator shared by the workers: each takes the next item.
  const next = items.entries();
  const worker = async () => {
    for (const [i, item] of next) out[i] = await fn(item, i);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Registers `n` users (one device each). Registration is a 100k-iteration PBKDF2: done once per bench. */
export async function registerUsers(base: string, n: number, prefix: string): Promise<User[]> {
  return pool(Array.from({ length: n }, (_, i) => i), 4, async (i) => {
    const username = `${prefix}${i}`.slice(0, 32);
    const session = await api<{ user: { id: string }; device: { id: string }; token: string }>(base, "POST", "/auth/register", { body: { username, password: PASSWORD, deviceName: "bench" } });
    return { userId: session.user.id, deviceId: session.device.id, token: session.token };
  });
}

export async function createGroup(base: string, creator: User, others: User[], title: string): Promise<Conversation> {
  const { conversation } = await api<{ conversation: Conversation }>(base, "POST", "/group/create", {
    token: creator.token,
    body: { title, memberIds: others.map((u) => u.userId) },
  });
  return conversation;
}

/**
 * How often a device's sockets say "ping", as the web client's do (web/src/lib/socket.ts). A user
 * object counts a device online only while its socket was heard from within PRESENCE_TIMEOUT_MS
 * (60 s): a bench device that stayed silent longer went offline mid-scenario, and from then on
 * every message queued a push job for it.
 */
export const KEEPALIVE_MS = 25_000;

/**
 * Opens a socket; resolves once `isReady(text)` accepts a frame (or at `open` when no predicate).
 * `onFrame(buf)` sees every frame after that (and the ready one too). `keepalive`: once open, the
 * socket pings every KEEPALIVE_MS until it closes, as a client device does.
 */
export interface SocketOptions {
  headers?: Record<string, string>;
  isReady?: ((text: string) => boolean) | null;
  onFrame?: (data: RawData) => void;
  timeoutMs?: number;
  keepalive?: boolean;
}

export function openSocket(url: string, { headers = {}, isReady = null, onFrame = () => {}, timeoutMs = 30_000, keepalive = false }: SocketOptions = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false, handshakeTimeout: timeoutMs });
    let settled = false;
    const timer = setTimeout(() => fail(new Error(`socket ${url}: not ready after ${timeoutMs} ms`)), timeoutMs);
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        ws.terminate();
      } catch {
        // already gone
      }
      reject(err);
    };
    const ok = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(ws);
    };
    ws.on("message", (data) => {
      if (!settled && isReady && isReady(data.toString())) ok();
      onFrame(data);
    });
    ws.on("open", () => {
      if (keepalive) {
        const pinger = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send("ping"), KEEPALIVE_MS).unref();
        ws.once("close", () => clearInterval(pinger));
      }
      if (!isReady) ok();
    });
    ws.on("error", (err) => fail(err));
    ws.on("unexpected-response", (_req, res) => fail(new Error(`socket ${url}: HTTP ${res.statusCode}`)));
    ws.on("close", (code) => fail(new Error(`socket ${url}: closed ${code} before ready`)));
  });
}

/** Handshake failures worth another try: the connection was reset or refused before the upgrade. */
const TRANSIENT = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ECONNABORTED"]);
// fetch (the ticket's request) reports the socket's error as its cause.
const transient = (err: unknown): boolean => {
  const { code, causeCode, message } = errorParts(err);
  return TRANSIENT.has(code) || TRANSIENT.has(causeCode) || /socket hang up|fetch failed/.test(message);
};

/** An error's code, its cause's code and its message, each "" when it has none. */
function errorParts(err: unknown): { code: string; causeCode: string; message: string } {
  const codeOf = (e: unknown) => (typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : "");
  return {
    code: codeOf(err),
    causeCode: err instanceof Error ? codeOf(err.cause) : "",
    message: err instanceof Error ? err.message : "",
  };
}

/**
 * A socket URL for `openSocketRetrying` that takes a fresh single-use ticket (POST /auth/ticket)
 * for each attempt, as the web client does on every (re)connect (web/src/lib/socket.ts).
 */
export const ticketUrl = (base: string, wsUrl: string, token: string) => async (): Promise<string> => {
  const { ticket } = await api<{ ticket: string }>(base, "POST", "/auth/ticket", { token });
  return `${wsUrl}${wsUrl.includes("?") ? "&" : "?"}ticket=${encodeURIComponent(ticket)}`;
};

/**
 * Runs `fn` up to `attempts` times while it fails with a transient network error (backoff 100 ms
 * doubling, with jitter), as a client does after a reset; anything else fails at once. Every retry
 * is counted in `stats` ({ retries, byCode }) so the caller can report it.
 */
export interface RetryStats {
  retries?: number;
  byCode?: Record<string, number>;
}

export async function retrying<T>(fn: () => Promise<T>, stats: RetryStats, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!transient(err) || attempt >= attempts) throw err;
      stats.retries = (stats.retries ?? 0) + 1;
      const { code: own, causeCode, message } = errorParts(err);
      const code = own || causeCode || message;
      stats.byCode = { ...stats.byCode, [code]: (stats.byCode?.[code] ?? 0) + 1 };
      await sleep(100 * 2 ** (attempt - 1) * (0.5 + Math.random()));
    }
  }
}

/**
 * `openSocket`, retried (`retrying`) when the handshake is reset or refused; an HTTP status, a
 * close before ready or a timeout fails at once. `url` is a string, or an async function that
 * gives one per attempt (`ticketUrl`).
 */
export function openSocketRetrying(url: string | (() => Promise<string>), opts: SocketOptions, stats: RetryStats, attempts = 5): Promise<WebSocket> {
  return retrying(async () => openSocket(typeof url === "function" ? await url() : url, opts), stats, attempts);
}

export const isReadyFrame = (text: string): boolean => text.startsWith('{"type":"ready"');

/**
 * Pings every socket and resolves once each has answered "pong": the runtime has heard from all
 * of them just now. Rejects after `timeoutMs`.
 */
export function heardFrom(sockets: WebSocket[], timeoutMs = 60_000): Promise<void[]> {
  return Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => {
            ws.off("message", onMessage);
            reject(new Error(`no pong within ${timeoutMs} ms`));
          }, timeoutMs);
          const onMessage = (data: RawData) => {
            if (!Buffer.isBuffer(data) || data.length !== 4 || data.toString() !== "pong") return;
            clearTimeout(timer);
            ws.off("message", onMessage);
            resolve();
          };
          ws.on("message", onMessage);
          ws.send("ping");
        }),
    ),
  );
}

/** Closes sockets and waits (bounded) for them to finish closing. */
export async function closeAll(sockets: readonly (WebSocket | null | undefined)[], { abrupt = false } = {}): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const ws of sockets) {
    if (!ws || ws.readyState === WebSocket.CLOSED) continue;
    waits.push(new Promise((r) => ws.once("close", r)));
    try {
      if (abrupt) ws.terminate();
      else ws.close(1000, "bench done");
    } catch {
      // gone
    }
  }
  await Promise.race([Promise.all(waits), sleep(5_000)]);
  for (const ws of sockets) if (ws && ws.readyState !== WebSocket.CLOSED) ws.terminate();
}

export { WebSocket };
