// Test helpers: HTTP calls and WebSockets through the real Worker, with a timeout on every wait.
import { env, exports } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import type { ConversationDO } from "../durable-objects/conversation/ConversationDO";
import type { UserDO } from "../durable-objects/user/UserDO";
import type { Settings } from "../kernel/settings";
import type { Conversation, Device, Message, User } from "../protocol";
import { MlsDevice } from "../web/src/e2ee/engine";
import { SIGNED_IN_MARK } from "../kernel/d1/devices";
import { d1Shards } from "../kernel/d1/shards";
import { conversationStub, userStub } from "../kernel/objects";
import { peersOf, type ConversationPeer, type PresencePeer } from "../durable-objects/contract";
import { base64url, sha256 } from "../worker/lib/crypto";
import { mintSessionToken, sessionKeys } from "../worker/lib/sessionTokens";

const ORIGIN = "http://chat.test";

export interface Session {
  user: User;
  device: Device;
  token: string;
}

export interface CallOptions {
  method?: string;
  token?: string;
  body?: unknown;
  rawBody?: BodyInit;
  headers?: Record<string, string>;
}

export async function call(path: string, options: CallOptions = {}): Promise<Response> {
  const headers = new Headers(options.headers);
  if (options.token) headers.set("authorization", `Bearer ${options.token}`);
  let body: BodyInit | undefined = options.rawBody;
  if (options.body !== undefined) {
    headers.set("content-type", "application/json");
    body = JSON.stringify(options.body);
  }
  const request = new Request(`${ORIGIN}${path}`, { method: options.method ?? (body === undefined ? "GET" : "POST"), headers, body });
  return exports.default.fetch(request);
}

/**
 * Runs `fn` with D1's `devices` table out of reach (renamed away, and back after): the table
 * bearer tokens used to be looked up in, and the one a logout updates. Whatever reads or writes it
 * meanwhile fails, the Worker's routes and the objects alike.
 */
export function withoutDevicesTable<T>(fn: () => Promise<T>): Promise<T> {
  return withoutTables(["devices"], fn);
}

/** Runs `fn` with these D1 tables out of reach (renamed), putting them back after. */
export async function withoutTables<T>(tables: string[], fn: () => Promise<T>): Promise<T> {
  const shards = d1Shards(env).all;
  for (const database of shards) for (const t of tables) await database.prepare(`ALTER TABLE ${t} RENAME TO ${t}_out_of_reach`).run();
  try {
    return await fn();
  } finally {
    for (const database of shards) for (const t of tables) await database.prepare(`ALTER TABLE ${t}_out_of_reach RENAME TO ${t}`).run();
  }
}

/** The D1 shard holding the rows keyed by `key`: a user, device, media or conversation id (kernel/d1/shards.ts). */
export const d1Of = (key: string): D1Database => d1Shards(env).of(key);

/** A count of rows over every D1 shard: `SELECT count(*) AS n FROM ${from}`. */
export async function countOnAllShards(from: string, ...bindings: unknown[]): Promise<number> {
  let n = 0;
  for (const database of d1Shards(env).all) {
    n += (await database.prepare(`SELECT count(*) AS n FROM ${from}`).bind(...bindings).first<number>("n")) ?? 0;
  }
  return n;
}

/** Calls and parses JSON, failing the test with the body when the status is not `expected`. */
export async function json<T>(path: string, options: CallOptions = {}, expected = 200): Promise<T> {
  const res = await call(path, options);
  const text = await res.text();
  if (res.status !== expected) throw new Error(`${options.method ?? (options.body === undefined ? "GET" : "POST")} ${path}: ${res.status} ${text}`);
  return (text ? JSON.parse(text) : null) as T;
}

/** Asserts the API's error shape and returns it. */
export async function expectError(res: Response, status: number, code: string) {
  const text = await res.text();
  if (res.status !== status) throw new Error(`expected ${status} ${code}, got ${res.status} ${text}`);
  const body = JSON.parse(text) as { error: { code: string; message: string } };
  if (body.error?.code !== code || typeof body.error.message !== "string") {
    throw new Error(`expected error code ${code}, got ${text}`);
  }
  return body;
}

let counter = 0;
export const unique = (prefix: string) => `${prefix}_${Date.now().toString(36)}${(counter++).toString(36)}`;

export async function register(name = unique("u"), deviceName?: string): Promise<Session> {
  return json<Session>("/auth/register", { body: { username: name, password: "correct horse", deviceName } }, 201);
}

export async function login(username: string, deviceName?: string): Promise<Session> {
  return json<Session>("/auth/login", { body: { username, password: "correct horse", deviceName } });
}

/**
 * A new device of an existing user signed in as a login would sign it in, without the password
 * hash: its session in the user's object, its row in D1. Returns the device id and its token.
 */
export async function signInDevice(userId: string, name = "device"): Promise<{ deviceId: string; token: string }> {
  const deviceId = d1Shards(env).idBeside(userId);
  const now = Date.now();
  const { token, claims } = await mintSessionToken({ userId, deviceId }, now + 86_400_000, sessionKeys(env.SESSION_SECRET));
  await userStub(env, userId).startSession(userId, deviceId, claims.sessionId, claims.expiresAt);
  await d1Of(userId).prepare("INSERT INTO devices (id, user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?)")
    .bind(deviceId, userId, name, SIGNED_IN_MARK + (await sha256(token)), now)
    .run();
  return { deviceId, token };
}

export async function direct(a: Session, b: Session): Promise<Conversation> {
  const res = await call("/conversations", { token: a.token, body: { type: "direct", userId: b.user.id } });
  if (res.status !== 201 && res.status !== 200) throw new Error(`direct: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { conversation: Conversation }).conversation;
}

export async function group(admin: Session, others: Session[], title = "group"): Promise<Conversation> {
  const body = { title, memberIds: others.map((o) => o.user.id) };
  return (await json<{ conversation: Conversation }>("/group/create", { token: admin.token, body }, 201)).conversation;
}

export async function sendRest(s: Session, conversationId: string, body: string, clientMsgId = unique("m")) {
  return json<{ message: Message }>("/send", { token: s.token, body: { conversationId, clientMsgId, body } }, 201);
}

/**
 * A valid `ciphertext` for an E2EE conversation still at epoch 0: a PrivateMessage of its group,
 * as the creator's device would encrypt it (test/e2ee.test.ts runs whole groups of devices).
 */
export async function ciphertextFor(conversationId: string, text = "opaque"): Promise<string> {
  const device = await MlsDevice.create("creator", "device");
  await device.createGroup(conversationId);
  return device.encrypt(conversationId, text);
}

// ---------------------------------------------------------------------------------------------
// WebSockets

export type Frame = {
  type: string;
  message?: Message;
  clientMsgId?: string;
  lastSeq?: number;
  code?: string;
  userId?: string;
  on?: boolean;
  deliveredSeq?: number;
  readSeq?: number;
  [key: string]: unknown;
};

export class TestSocket {
  readonly frames: Frame[] = [];
  closed: { code: number; reason: string } | null = null;
  private waiters: Array<() => void> = [];

  private keepAlive: ReturnType<typeof setInterval> | null = null;

  constructor(
    readonly ws: WebSocket,
    keepAliveMs: number | null = null,
  ) {
    // Like a real client, send the keep-alive `ping`; tests of silent sockets pass null.
    if (keepAliveMs !== null) {
      this.keepAlive = setInterval(() => {
        try {
          ws.send("ping");
        } catch {
          this.stopKeepAlive();
        }
      }, keepAliveMs);
    }
    ws.addEventListener("message", (e) => {
      this.frames.push(typeof e.data === "string" && e.data !== "pong" ? (JSON.parse(e.data) as Frame) : { type: "raw", data: e.data });
      this.wake();
    });
    ws.addEventListener("close", (e) => {
      this.stopKeepAlive();
      this.closed = { code: e.code, reason: e.reason };
      this.wake();
    });
  }

  private stopKeepAlive() {
    if (this.keepAlive !== null) clearInterval(this.keepAlive);
    this.keepAlive = null;
  }

  private wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  send(frame: unknown) {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Waits until `predicate` holds over the frames received so far. */
  async until(predicate: (frames: Frame[]) => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this.frames)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.frames.slice(-5))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async next(type: string, match: (f: Frame) => boolean = () => true, timeoutMs = 10_000): Promise<Frame> {
    let found: Frame | undefined;
    await this.until(
      (frames) => (found = frames.find((f) => f.type === type && match(f))) !== undefined,
      `a ${type} frame`,
      timeoutMs,
    );
    return found!;
  }

  async waitClosed(timeoutMs = 10_000): Promise<{ code: number; reason: string }> {
    await this.until(() => this.closed !== null, "close", timeoutMs);
    return this.closed!;
  }

  messages(): Message[] {
    return this.frames.filter((f) => f.type === "message" || f.type === "ack").map((f) => f.message as Message);
  }

  close() {
    this.stopKeepAlive();
    try {
      this.ws.close(1000, "done");
    } catch {
      // already closed
    }
  }
}

/**
 * Opens a socket through the Worker with a bearer header (or a ticket in the URL). It pings every
 * second like a real client unless `keepAliveMs` is null.
 */
export async function connect(
  path: string,
  token: string | null,
  headers: Record<string, string> = {},
  keepAliveMs: number | null = 1000,
): Promise<TestSocket> {
  const res = await call(path, { headers: { upgrade: "websocket", ...headers }, ...(token ? { token } : {}) });
  if (res.status !== 101 || !res.webSocket) throw new Error(`socket ${path}: ${res.status} ${await res.text()}`);
  res.webSocket.accept();
  return new TestSocket(res.webSocket, keepAliveMs);
}

export async function openConversation(s: Session, conversationId: string, after?: number): Promise<TestSocket> {
  const socket = await connect(`/conversations/${conversationId}/ws${after === undefined ? "" : `?after=${after}`}`, s.token);
  await socket.next("ready");
  return socket;
}

export async function waitFor<T>(fn: () => Promise<T | undefined | null | false>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Changes an object's settings for the rest of its wake-up. No clock can be injected into a live
 * object, so tests that depend on timing set the object's own settings.
 */
export async function setObjectSettings(stub: DurableObjectStub<ConversationDO> | DurableObjectStub<UserDO>, settings: Partial<Settings>): Promise<void> {
  await runInDurableObject(stub as DurableObjectStub<ConversationDO>, (instance: object) => {
    Object.assign((instance as { settings: Settings }).settings, settings);
  });
}

/**
 * Holds a conversation's deferred pass (D1, fan-out) back for a minute, so that writes wait for it
 * and only the alarm, its backstop, runs it (`runDurableObjectAlarm`).
 */
export function holdDeferredPass(stub: DurableObjectStub<ConversationDO>): Promise<void> {
  return setObjectSettings(stub, { batchDelayMs: 60_000 });
}

/**
 * Waits until the conversation's outbox has written everything to D1 and its fan-out has told
 * every member's object (whose inbox index `GET /messages?since=` pages through).
 */
export async function inD1(conversationId: string): Promise<void> {
  const stub = conversationStub(env, conversationId);
  await waitFor(async () => (await stub.pendingOutbox()) === 0 && (await stub.pendingFanout()) === 0, "the outbox written to D1 and the fan-out done");
}

/** Every page of `GET /messages?since=` from the start. */
export async function syncAll(s: Session): Promise<Message[]> {
  const out: Message[] = [];
  let cursor = "0";
  for (let more = true; more; ) {
    const page = await json<{ messages: Message[]; cursor: string; hasMore: boolean }>(`/messages?since=${cursor}&limit=100`, { token: s.token });
    out.push(...page.messages);
    cursor = page.cursor;
    more = page.hasMore;
  }
  return out;
}

/** The bytes of a small PNG: its signature and header, enough for the upload's sniffing. */
export const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, ...new Array(200).fill(7)]);

/** Uploads bytes as one media item of the caller's; its id. */
export async function upload(s: Session, bytes: Uint8Array, type: string, name: string): Promise<string> {
  const res = await call(`/upload?name=${encodeURIComponent(name)}`, { token: s.token, rawBody: bytes, headers: { "content-type": type } });
  if (res.status !== 201) throw new Error(`upload: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { media: { id: string } }).media.id;
}

/**
 * The users' objects as an object reaches them, with some of their calls replaced (a fault, a
 * spy): for `useConnections({ users })`.
 */
export function userPeersWith(overrides: (userId: string, real: PresencePeer) => Partial<PresencePeer>) {
  const reach = peersOf(env).user;
  return (userId: string): PresencePeer => {
    const real = reach(userId);
    return {
      presenceIfMember: (...args) => real.presenceIfMember(...args),
      watch: (...args) => real.watch(...args),
      unwatch: (...args) => real.unwatch(...args),
      presenceEvent: (...args) => real.presenceEvent(...args),
      ...overrides(userId, real),
    };
  };
}

/**
 * The conversation objects as a user object reaches them, with some of their calls replaced (a
 * fault, a spy): for `useConnections({ conversations })`.
 */
export function conversationPeersWith(overrides: (conversationId: string, real: ConversationPeer) => Partial<ConversationPeer>) {
  const reach = peersOf(env).conversation;
  return (conversationId: string): ConversationPeer => {
    const real = reach(conversationId);
    return {
      viewForNotification: (...args) => real.viewForNotification(...args),
      closeDevice: (...args) => real.closeDevice(...args),
      memberOnline: (...args) => real.memberOnline(...args),
      membersAnswered: (...args) => real.membersAnswered(...args),
      syncHead: (...args) => real.syncHead(...args),
      syncSlice: (...args) => real.syncSlice(...args),
      wasMemberAt: (...args) => real.wasMemberAt(...args),
      ...overrides(conversationId, real),
    };
  };
}

/** A Web Push subscription's keys as a browser makes them: a P-256 public key and a 16-byte secret. */
export async function pushKeys(): Promise<{ p256dh: string; auth: string }> {
  const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
  if (!("publicKey" in pair)) throw new Error("expected a key pair");
  const raw = await crypto.subtle.exportKey("raw", pair.publicKey);
  if (!(raw instanceof ArrayBuffer)) throw new Error("expected the raw key's bytes");
  return { p256dh: base64url(new Uint8Array(raw)), auth: base64url(crypto.getRandomValues(new Uint8Array(16))) };
}
