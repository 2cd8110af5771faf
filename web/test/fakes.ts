// In-memory stand-ins for what the store takes from the browser (web/src/app/browser.ts): storage,
// a clock the test moves, the address bar, page events, a scripted server behind fetch, sockets
// that record what the client sends and let the test deliver server frames, local stores that
// outlive a "reload", and notifications. `fakeBrowser()` puts them together.
import type { Conversation, ConversationServerFrame, Message, User, UserServerFrame } from "../../protocol";
import type { AddressBar, Browser, Clock, KeyValueStorage, LocalStores, Notifications, PageEvent, PushSubscriptionHandle } from "../src/app/browser";
import type { Theme } from "../src/app/browser";
import { inPageLock } from "../src/e2ee/lock";
import type { LocalStore } from "../src/lib/idb";
import type { LiveChannel, LiveSocketOptions } from "../src/lib/socket";
import { MemoryOutboxStorage } from "../src/state/offlineOutbox";

// Node's, which the DOM libs this folder is checked with do not declare.
declare function setImmediate(callback: () => void): unknown;

/** Lets pending promise callbacks (and what they start) run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export class MemoryStorage implements KeyValueStorage {
  readonly items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}

/** Time moves only when the test says so; due timers run in order. */
export class FakeClock implements Clock {
  private timers: Array<{ id: number; at: number; fn: () => void }> = [];
  private nextId = 1;
  constructor(public time = 1_700_000_000_000) {}
  now(): number {
    return this.time;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ id, at: this.time + ms, fn });
    return id;
  }
  clearTimeout(timer: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== timer);
  }
  get pending(): number {
    return this.timers.length;
  }
  /** Moves time forward by `ms`, running each timer due on the way (and what it starts). */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.time = Math.max(this.time, due.at);
      due.fn();
      await settle();
    }
    this.time = end;
  }
}

export class FakeAddressBar implements AddressBar {
  readonly entries: string[] = [];
  constructor(private path = "/") {
    this.entries.push(path);
  }
  get current(): string {
    return this.path;
  }
  pathname(): string {
    return new URL(this.path, "http://app").pathname;
  }
  search(): string {
    return new URL(this.path, "http://app").search;
  }
  push(path: string): void {
    this.path = path;
    this.entries.push(path);
  }
  replace(path: string): void {
    this.path = path;
    this.entries[this.entries.length - 1] = path;
  }
}

// --- the server -----------------------------------------------------------------------------------

export interface FakeRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
  authorization: string | null;
}

export type FakeAnswer = { status?: number; json?: unknown; headers?: Record<string, string> } | "network error";
type Handler = (req: FakeRequest) => FakeAnswer | Promise<FakeAnswer>;

/** A fetch answered by handlers per "METHOD /path" (no query); anything else is the API's 404. */
export class FakeServer {
  readonly requests: FakeRequest[] = [];
  private readonly handlers = new Map<string, Handler>();

  on(route: string, handler: Handler): this {
    this.handlers.set(route, handler);
    return this;
  }

  /** The requests made to one route. */
  calls(route: string): FakeRequest[] {
    return this.requests.filter((r) => `${r.method} ${r.path}` === route);
  }

  readonly fetch = async (input: string, init: RequestInit): Promise<Response> => {
    const url = new URL(input, "http://app");
    const headers = new Headers(init.headers);
    const req: FakeRequest = {
      method: init.method ?? "GET",
      path: url.pathname,
      query: url.searchParams,
      body: typeof init.body === "string" ? JSON.parse(init.body) : undefined,
      authorization: headers.get("authorization"),
    };
    this.requests.push(req);
    const handler = this.handlers.get(`${req.method} ${req.path}`);
    const answer: FakeAnswer = handler ? await handler(req) : { status: 404, json: { error: { code: "not_found", message: "no such route" } } };
    if (answer === "network error") throw new TypeError("Failed to fetch");
    const status = answer.status ?? 200;
    if (status === 204) return new Response(null, { status });
    return new Response(JSON.stringify(answer.json ?? {}), { status, headers: { "content-type": "application/json", ...answer.headers } });
  };
}

// --- sockets --------------------------------------------------------------------------------------

/** One socket the client opened: what it sent, and the server's side to drive it. */
export class FakeSocket<Out = unknown> implements LiveChannel<Out> {
  readonly sent: Out[] = [];
  isOpen = false;
  closed = false;
  reconnects = 0;
  constructor(readonly options: LiveSocketOptions<unknown>) {}

  transmit(frame: Out): boolean {
    if (!this.isOpen) return false;
    this.sent.push(frame);
    return true;
  }
  reconnectNow(): void {
    this.reconnects++;
  }
  close(): void {
    this.closed = true;
    this.isOpen = false;
  }

  get path(): string {
    return this.options.path();
  }
  open(): void {
    this.isOpen = true;
    this.options.onStatus?.("open");
  }
  /** The connection dropped; the socket reconnects on its own. */
  drop(): void {
    this.isOpen = false;
    this.options.onStatus?.("closed");
  }
  /** A frame from the server, parsed by the client's own schema like a real one. */
  deliver(frame: ConversationServerFrame | UserServerFrame): void {
    const parsed = this.options.parse(JSON.parse(JSON.stringify(frame)));
    if (parsed === null) throw new Error(`the client rejected the frame ${JSON.stringify(frame)}`);
    this.options.onFrame(parsed);
  }
  finalClose(code: number): void {
    this.isOpen = false;
    this.options.onFinalClose?.(code, "");
    this.options.onStatus?.("closed");
  }
}

export class FakeSockets {
  readonly all: FakeSocket[] = [];
  readonly open = <In, Out>(options: LiveSocketOptions<In>): LiveChannel<Out> => {
    const socket = new FakeSocket<Out>(options as LiveSocketOptions<unknown>);
    this.all.push(socket as FakeSocket);
    return socket;
  };
  /** The latest socket whose path starts with `prefix` ("/ws" or "/conversations/<id>/ws"). */
  latest<Out>(prefix: string): FakeSocket<Out> {
    const found = this.all.filter((s) => s.path.startsWith(prefix)).at(-1);
    if (!found) throw new Error(`no socket to ${prefix}`);
    return found as FakeSocket<Out>;
  }
}

// --- local stores -----------------------------------------------------------------------------------

export class MemoryLocalStore extends MemoryOutboxStorage implements LocalStore {
  readonly kv = new Map<string, unknown>();
  closed = false;
  async get(key: string): Promise<unknown> {
    return structuredClone(this.kv.get(key));
  }
  async set(key: string, value: unknown): Promise<void> {
    const copy = structuredClone(value);
    // Stored a moment later, as IndexedDB commits after the call returns.
    await Promise.resolve();
    this.kv.set(key, copy);
  }
  async remove(key: string): Promise<void> {
    this.kv.delete(key);
  }
  close(): void {
    this.closed = true;
  }
}

/** One store per account that survives a new AppStore on the same fake browser (a reload). */
export class MemoryLocalStores implements LocalStores {
  readonly stores = new Map<string, MemoryLocalStore>();
  async open(userId: string): Promise<MemoryLocalStore> {
    let store = this.stores.get(userId);
    if (!store) this.stores.set(userId, (store = new MemoryLocalStore()));
    return store;
  }
  async destroy(userId: string): Promise<void> {
    this.stores.delete(userId);
  }
}

// --- notifications ----------------------------------------------------------------------------------

export class FakeNotifications implements Notifications {
  pushSupported = true;
  granted: NotificationPermission = "default";
  answer: NotificationPermission = "granted";
  readonly shown: Array<{ title: string; options: NotificationOptions }> = [];
  subscribed: { endpoint: string; key: Uint8Array } | null = null;
  private openListeners: Array<(id: string) => void> = [];

  permission(): NotificationPermission {
    return this.granted;
  }
  async requestPermission(): Promise<NotificationPermission> {
    this.granted = this.answer;
    return this.answer;
  }
  async subscribe(key: Uint8Array<ArrayBuffer>): Promise<unknown> {
    this.subscribed = { endpoint: "https://push.example/1", key };
    return { endpoint: this.subscribed.endpoint, keys: { p256dh: "p", auth: "a" } };
  }
  async subscription(): Promise<PushSubscriptionHandle | null> {
    const current = this.subscribed;
    if (!current) return null;
    return { endpoint: current.endpoint, unsubscribe: async () => (this.subscribed = null) };
  }
  show(title: string, options: NotificationOptions): void {
    this.shown.push({ title, options });
  }
  onOpen(listener: (conversationId: string) => void): void {
    this.openListeners.push(listener);
  }
  /** A click on a notification, as the service worker reports it. */
  click(conversationId: string): void {
    for (const l of this.openListeners) l(conversationId);
  }
}

// --- the whole browser ------------------------------------------------------------------------------

export interface FakeBrowser extends Browser {
  storage: MemoryStorage;
  clock: FakeClock;
  address: FakeAddressBar;
  server: FakeServer;
  sockets: FakeSockets;
  localStores: MemoryLocalStores;
  notifications: FakeNotifications;
  isOnline: boolean;
  isVisible: boolean;
  themes: Theme[];
  revoked: string[];
  fire(event: PageEvent): void;
}

export function fakeBrowser(path = "/"): FakeBrowser {
  const listeners = new Map<PageEvent, Array<() => void>>();
  const server = new FakeServer();
  const sockets = new FakeSockets();
  const browser: FakeBrowser = {
    storage: new MemoryStorage(),
    clock: new FakeClock(),
    address: new FakeAddressBar(path),
    server,
    sockets,
    localStores: new MemoryLocalStores(),
    notifications: new FakeNotifications(),
    isOnline: true,
    isVisible: true,
    themes: [],
    revoked: [],
    online: () => browser.isOnline,
    visible: () => browser.isVisible,
    on: (event, listener) => listeners.set(event, [...(listeners.get(event) ?? []), listener]),
    fire: (event) => {
      if (event === "online") browser.isOnline = true;
      if (event === "offline") browser.isOnline = false;
      if (event === "visible" || event === "hidden") browser.isVisible = event === "visible";
      for (const l of listeners.get(event) ?? []) l();
    },
    fetch: server.fetch,
    openSocket: sockets.open,
    userAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Safari/537.36",
    applyTheme: (theme) => browser.themes.push(theme),
    revokeObjectURL: (url) => browser.revoked.push(url),
    exclusive: inPageLock(),
  };
  return browser;
}

// --- protocol objects ---------------------------------------------------------------------------------

export const user = (id: string, displayName = id.toUpperCase()): User => ({ id, username: id, displayName, createdAt: 1 });

export function message(conversationId: string, seq: number, senderId: string, extra: Partial<Message> = {}): Message {
  return {
    id: `${conversationId}-m${seq}`,
    conversationId,
    seq,
    senderId,
    senderDeviceId: `${senderId}-d`,
    clientMsgId: `${senderId}-c${seq}`,
    kind: "text",
    body: `message ${seq}`,
    media: [],
    threadRootSeq: null,
    createdAt: 1_000 + seq,
    ...extra,
  };
}

export function conversation(id: string, memberIds: string[], extra: Partial<Conversation> = {}): Conversation {
  return {
    id,
    type: memberIds.length === 2 ? "direct" : "group",
    title: memberIds.length === 2 ? null : `Group ${id}`,
    e2ee: false,
    createdAt: 1,
    members: memberIds.map((userId) => ({ userId, role: "member" as const, joinedAt: 1 })),
    lastSeq: 0,
    lastMessageAt: null,
    readSeq: 0,
    unread: 0,
    threadUnread: 0,
    lastMessage: null,
    joinedSeq: 1,
    ...extra,
  };
}
