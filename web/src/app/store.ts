// The app's state and everything that changes it: session, the conversation list, open
// conversations, the two sockets, sync, the outbox, uploads, presence and push. Views read
// `store.state` and call methods; every change calls `emit()`, which re-renders on the next frame.
import * as z from "zod";
import {
  Conversation as ConversationSchema,
  ConversationServerFrame,
  LIMITS,
  Message as MessageSchema,
  PROTOCOL_VERSION,
  USER_LOOKUP_MAX,
  User as UserSchema,
  UserServerFrame,
  type ConversationClientFrame,
  type Conversation,
  type MediaRef,
  type Message,
  type Presence,
  type Receipt,
  type User,
  type UserClientFrame,
} from "../../../protocol";
import { Api, ApiError, NetworkError, Schemas, isTransient, qs } from "../lib/api";
import { LocalDb } from "../lib/idb";
import { LiveSocket, type SocketStatus } from "../lib/socket";
import { Outbox, MemoryOutboxStorage, type OutboxItem, type SendOutcome } from "../state/outbox";
import { applyReceipt } from "../state/receipts";
import { byConversation, syncSince } from "../state/sync";
import { findGaps, mergeMessages, opensGap, resumePoint } from "../state/timeline";
import { parseRoute, routePath, type Route } from "./route";

export interface Session {
  token: string;
  user: User;
  deviceId: string;
}

export interface ConvView {
  messages: Message[];
  hasMoreBefore: boolean;
  /** History fetched from the server in this page's life (a cached copy may be shown before). */
  loaded: boolean;
  loadingOlder: boolean;
  receipts: Map<string, Receipt>;
  /** userId to the time their indicator lapses. */
  typing: Map<string, number>;
  /** Fixed when the conversation is opened, so the divider does not move while reading. */
  firstUnreadSeq: number | null;
  error: string | null;
}

export interface ThreadView {
  conversationId: string;
  rootSeq: number;
  messages: Message[];
  loading: boolean;
}

export interface Upload {
  id: string;
  conversationId: string;
  threadRootSeq: number | null;
  name: string;
  size: number;
  contentType: string;
  loaded: number;
  previewUrl: string | null;
  status: "uploading" | "failed";
  error: string | null;
  createdAt: number;
  abort: () => void;
}

/** Server parts that land separately (issues 3, 4, 5); their controls stay hidden until seen. */
export interface Capabilities {
  presence: boolean;
  upload: boolean;
  push: boolean;
}

export type Theme = "system" | "light" | "dark";

export interface AppState {
  session: Session | null;
  route: Route;
  conversations: Map<string, Conversation>;
  users: Map<string, User>;
  views: Map<string, ConvView>;
  thread: ThreadView | null;
  presence: Map<string, Presence>;
  outbox: OutboxItem[];
  uploads: Upload[];
  /** The user socket's state, or offline when the browser says so. */
  connection: "online" | "connecting" | "offline";
  /** Set once the conversation list came from the server in this page's life. */
  listLoaded: boolean;
  caps: Capabilities;
  pushEnabled: boolean;
  notice: { text: string; id: number } | null;
  theme: Theme;
  /** The open conversation's socket has said ready. */
  chatLive: boolean;
  atBottom: boolean;
  /** Which conversation a removal (close 4003) just closed. */
  removedFrom: string | null;
}

const SESSION_KEY = "edge-chat:session";
const THEME_KEY = "edge-chat:theme";
const CACHE_MESSAGES = 100;
const TYPING_REFRESH_MS = 3000;
const TYPING_IDLE_MS = 4000;
const ACK_TIMEOUT_MS = 10_000;

const SessionSchema = z.object({ token: z.string(), user: UserSchema, deviceId: z.string() });
const CachedConversations = z.array(ConversationSchema);
const CachedMessages = z.array(MessageSchema);
const CachedUsers = z.array(UserSchema);

type Listener = () => void;

export class AppStore {
  state: AppState;
  readonly api: Api;
  private listeners = new Set<Listener>();
  private db: LocalDb | null = null;
  private outbox: Outbox | null = null;
  private userSocket: LiveSocket<UserServerFrame, UserClientFrame> | null = null;
  private chatSocket: LiveSocket<ConversationServerFrame, ConversationClientFrame> | null = null;
  private chatSocketId: string | null = null;
  private acks = new Map<string, (outcome: SendOutcome) => void>();
  private emitScheduled = false;
  private saveTimer: ReturnType<typeof setTimeout> | null = null;
  private outboxTimer: ReturnType<typeof setTimeout> | null = null;
  private typingSent = new Map<string, { at: number; timer: ReturnType<typeof setTimeout> }>();
  private deliveredSent = new Map<string, number>();
  private readSent = new Map<string, number>();
  private fetchingUsers = new Set<string>();
  private syncing: Promise<void> | null = null;
  private noticeId = 0;

  constructor() {
    this.state = {
      session: readSession(),
      route: parseRoute(location.pathname, location.search),
      conversations: new Map(),
      users: new Map(),
      views: new Map(),
      thread: null,
      presence: new Map(),
      outbox: [],
      uploads: [],
      connection: navigator.onLine ? "connecting" : "offline",
      listLoaded: false,
      caps: { presence: false, upload: false, push: false },
      pushEnabled: false,
      notice: null,
      theme: readTheme(),
      chatLive: false,
      atBottom: true,
      removedFrom: null,
    };
    this.api = new Api(
      () => this.state.session?.token ?? null,
      () => void this.endSession("Your session ended. Please sign in again."),
    );
  }

  // --- plumbing ---------------------------------------------------------------------------------

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Batches many changes into one render per frame. */
  emit(): void {
    if (this.emitScheduled) return;
    this.emitScheduled = true;
    queueMicrotask(() => {
      this.emitScheduled = false;
      for (const l of this.listeners) l();
    });
  }

  notify(text: string): void {
    this.state.notice = { text, id: ++this.noticeId };
    const id = this.noticeId;
    setTimeout(() => {
      if (this.state.notice?.id === id) {
        this.state.notice = null;
        this.emit();
      }
    }, 5000);
    this.emit();
  }

  get me(): string {
    return this.state.session?.user.id ?? "";
  }

  // --- start, session ---------------------------------------------------------------------------

  async start(): Promise<void> {
    window.addEventListener("popstate", () => this.applyRoute(parseRoute(location.pathname, location.search)));
    window.addEventListener("online", () => this.wentOnline());
    window.addEventListener("offline", () => {
      this.state.connection = "offline";
      this.emit();
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") {
        this.markReadIfViewing();
        void this.sync();
      } else {
        // Hidden may be the last moment this page runs (a phone kills background tabs).
        this.saveNow();
      }
    });
    // A reload or a closed tab should not lose what arrived in the last half second: the next
    // start opens from this cache, offline too. Best effort: a browser may drop writes started
    // as the page unloads, and then the next start's sync fetches what the cache missed.
    window.addEventListener("pagehide", () => this.saveNow());
    navigator.serviceWorker?.addEventListener("message", (event: MessageEvent<unknown>) => {
      const data = event.data;
      if (typeof data === "object" && data !== null && "type" in data && data.type === "open" && "conversationId" in data && typeof data.conversationId === "string") {
        this.navigate({ name: "chat", id: data.conversationId, thread: null, info: false });
      }
    });
    if (this.state.session) {
      await this.boot();
    } else if (this.state.route.name !== "register") {
      this.state.route = { name: "login" };
      history.replaceState(null, "", "/login");
    }
    this.applyRoute(this.state.route);
    this.emit();
  }

  async register(username: string, password: string, displayName: string): Promise<void> {
    const res = await this.api.call("POST", "/auth/register", Schemas.session, {
      username,
      password,
      ...(displayName.trim() ? { displayName: displayName.trim() } : {}),
      deviceName: deviceName(),
    });
    await this.beginSession({ token: res.token, user: res.user, deviceId: res.device.id });
  }

  async login(username: string, password: string): Promise<void> {
    const res = await this.api.call("POST", "/auth/login", Schemas.session, { username, password, deviceName: deviceName() });
    await this.beginSession({ token: res.token, user: res.user, deviceId: res.device.id });
  }

  private async beginSession(session: Session): Promise<void> {
    localStorage.setItem(SESSION_KEY, JSON.stringify(session));
    this.state.session = session;
    this.state.users.set(session.user.id, session.user);
    await this.boot();
    this.navigate({ name: "list" }, true);
  }

  async logout(): Promise<void> {
    await this.unsubscribePush().catch(() => undefined);
    await this.api.call("POST", "/auth/logout", Schemas.none).catch(() => undefined);
    await this.endSession(null);
  }

  private async endSession(message: string | null): Promise<void> {
    const userId = this.state.session?.user.id;
    if (!userId) return;
    localStorage.removeItem(SESSION_KEY);
    this.state.session = null;
    this.userSocket?.close();
    this.userSocket = null;
    this.closeChatSocket();
    this.db?.close();
    this.db = null;
    this.outbox = null;
    await LocalDb.destroy(userId);
    Object.assign(this.state, {
      conversations: new Map(),
      users: new Map(),
      views: new Map(),
      thread: null,
      presence: new Map(),
      outbox: [],
      uploads: [],
      listLoaded: false,
    });
    this.navigate({ name: "login" }, true);
    if (message) this.notify(message);
    this.emit();
  }

  /** Local first: render the cached list at once, then connect, sync and flush the outbox. */
  private async boot(): Promise<void> {
    const session = this.state.session;
    if (!session) return;
    this.state.users.set(session.user.id, session.user);
    try {
      this.db = await LocalDb.open(session.user.id);
    } catch {
      this.db = null; // private mode without IndexedDB: everything works, nothing survives a reload
    }
    await this.loadCache();
    this.outbox = new Outbox(this.db ?? new MemoryOutboxStorage(), { send: (item) => this.transport(item) }, {
      onChange: () => {
        this.state.outbox = this.outbox?.list() ?? [];
        this.emit();
      },
      onSent: (_item, message) => this.receive([message], "ack"),
    });
    await this.outbox.load();
    this.userSocket = new LiveSocket<UserServerFrame, UserClientFrame>({
      path: () => `/ws${qs({ v: PROTOCOL_VERSION })}`,
      ticket: () => this.ticket(),
      parse: (json) => {
        const r = UserServerFrame.safeParse(json);
        return r.success ? r.data : null;
      },
      onFrame: (frame) => this.onUserFrame(frame),
      onStatus: (status) => this.onUserSocketStatus(status),
      onFinalClose: (code) => {
        if (code === 4001) void this.endSession("You were signed out.");
        if (code === 4010) this.notify("A new version of the app is available. Reload to update.");
      },
    });
    void this.refreshConversations();
    void this.probeCapabilities();
    void this.flushOutbox();
  }

  private async ticket(): Promise<string> {
    return (await this.api.call("POST", "/auth/ticket", Schemas.ticket)).ticket;
  }

  private wentOnline(): void {
    this.state.connection = "connecting";
    this.userSocket?.reconnectNow();
    this.chatSocket?.reconnectNow();
    void this.outbox?.resetBackoff().then(() => this.flushOutbox());
    void this.refreshConversations();
    this.emit();
  }

  // --- local cache --------------------------------------------------------------------------------

  private async loadCache(): Promise<void> {
    const db = this.db;
    if (!db) return;
    const [convs, users, prefs] = await Promise.all([db.get("conversations"), db.get("users"), db.get("push")]);
    const c = CachedConversations.safeParse(convs);
    if (c.success) for (const conv of c.data) this.state.conversations.set(conv.id, conv);
    const u = CachedUsers.safeParse(users);
    if (u.success) for (const user of u.data) this.state.users.set(user.id, user);
    this.state.pushEnabled = prefs === true;
    this.emit();
  }

  private async cachedMessages(conversationId: string): Promise<Message[]> {
    const r = CachedMessages.safeParse(await this.db?.get(`messages:${conversationId}`));
    return r.success ? r.data : [];
  }

  /** Writes the list, users and each loaded conversation's latest messages, at most twice a second. */
  private scheduleSave(): void {
    if (this.saveTimer || !this.db) return;
    this.saveTimer = setTimeout(() => this.saveNow(), 500);
  }

  /** Writes what a save has pending, now: when its timer ends, or as the page is hidden or goes away. */
  private saveNow(): void {
    if (!this.saveTimer) return;
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    const db = this.db;
    if (!db) return;
    void db.set("conversations", [...this.state.conversations.values()]);
    void db.set("users", [...this.state.users.values()]);
    for (const [id, view] of this.state.views) {
      if (view.loaded) void db.set(`messages:${id}`, view.messages.slice(-CACHE_MESSAGES));
    }
  }

  // --- navigation -----------------------------------------------------------------------------------

  navigate(route: Route, replace = false): void {
    const path = routePath(route);
    if (path !== location.pathname + location.search) {
      if (replace) history.replaceState(null, "", path);
      else history.pushState(null, "", path);
    }
    this.applyRoute(route);
  }

  private applyRoute(route: Route): void {
    if (!this.state.session && route.name !== "login" && route.name !== "register") route = { name: "login" };
    if (this.state.session && (route.name === "login" || route.name === "register")) route = { name: "list" };
    const prev = this.state.route;
    this.state.route = route;
    if (route.name === "chat") {
      if (prev.name !== "chat" || prev.id !== route.id || !this.chatSocket) void this.openConversation(route.id);
      if (route.thread !== null) void this.openThread(route.id, route.thread);
      else this.state.thread = null;
    } else {
      this.closeChatSocket();
      this.state.thread = null;
    }
    this.emit();
  }

  // --- conversations ------------------------------------------------------------------------------

  /** The list, newest activity first. */
  sortedConversations(): Conversation[] {
    return [...this.state.conversations.values()].sort(
      (a, b) => (b.lastMessageAt ?? b.createdAt) - (a.lastMessageAt ?? a.createdAt),
    );
  }

  async refreshConversations(): Promise<void> {
    if (!this.state.session) return;
    try {
      const { conversations } = await this.api.call("GET", "/conversations", Schemas.conversations);
      const next = new Map<string, Conversation>();
      for (const conv of conversations) next.set(conv.id, this.keepLocalProgress(conv));
      this.state.conversations = next;
      this.state.listLoaded = true;
      this.ensureUsers(conversations.flatMap((c) => c.members.slice(0, 50).map((m) => m.userId)));
      for (const conv of conversations) {
        if (conv.lastMessage && conv.lastMessage.senderId !== this.me) this.sendDelivered(conv.id, conv.lastSeq);
      }
      this.watchPresence();
      if (!this.db || (await this.db.get("cursor")) === undefined) {
        // A new device starts its sync cursor now; the list and history cover what came before.
        await this.db?.set("cursor", String(Date.now() - 60_000));
      }
      this.scheduleSave();
      this.emit();
    } catch (err) {
      if (!isTransient(err)) throw err;
    }
  }

  /** The D1 list can lag the conversation object by a moment; never step back from what we saw. */
  private keepLocalProgress(conv: Conversation): Conversation {
    const local = this.state.conversations.get(conv.id);
    if (!local) return conv;
    let out = conv;
    if (local.lastSeq > out.lastSeq) out = { ...out, lastSeq: local.lastSeq, lastMessage: local.lastMessage, lastMessageAt: local.lastMessageAt };
    if (local.readSeq > out.readSeq) out = { ...out, readSeq: local.readSeq, unread: local.readSeq >= out.lastSeq ? 0 : out.unread };
    return out;
  }

  private upsertConversation(conv: Conversation): void {
    this.state.conversations.set(conv.id, this.keepLocalProgress(conv));
    this.ensureUsers(conv.members.slice(0, 50).map((m) => m.userId));
    this.scheduleSave();
    this.emit();
  }

  title(conv: Conversation): string {
    if (conv.type === "group") return conv.title ?? "Group";
    const other = this.otherMember(conv);
    if (!other) return "Saved messages";
    return this.state.users.get(other)?.displayName ?? "…";
  }

  /** The other person in a direct conversation. */
  otherMember(conv: Conversation): string | null {
    return conv.members.find((m) => m.userId !== this.me)?.userId ?? null;
  }

  /** Fetches the users not known yet, up to USER_LOOKUP_MAX per request (`GET /users?ids=`). */
  ensureUsers(ids: string[]): void {
    const missing = [...new Set(ids)].filter((id) => !this.state.users.has(id) && !this.fetchingUsers.has(id));
    for (let i = 0; i < missing.length; i += USER_LOOKUP_MAX) {
      const chunk = missing.slice(i, i + USER_LOOKUP_MAX);
      for (const id of chunk) this.fetchingUsers.add(id);
      void this.api
        .call("GET", `/users${qs({ ids: chunk.join(",") })}`, Schemas.users)
        .then(({ users }) => {
          for (const user of users) this.state.users.set(user.id, user);
          this.scheduleSave();
          this.emit();
        })
        .catch(() => undefined)
        .finally(() => {
          for (const id of chunk) this.fetchingUsers.delete(id);
        });
    }
  }

  userName(id: string): string {
    if (id === this.me) return "You";
    return this.state.users.get(id)?.displayName ?? "…";
  }

  async searchUsers(q: string): Promise<User[]> {
    const query = q.trim().toLowerCase();
    if (!/^[a-z0-9_]{1,32}$/.test(query)) return [];
    const { users } = await this.api.call("GET", `/users${qs({ q: query })}`, Schemas.users);
    for (const u of users) this.state.users.set(u.id, u);
    return users.filter((u) => u.id !== this.me);
  }

  async startDirect(userId: string): Promise<void> {
    const { conversation } = await this.api.call("POST", "/conversations", Schemas.conversation, { type: "direct", userId });
    this.upsertConversation(conversation);
    this.navigate({ name: "chat", id: conversation.id, thread: null, info: false }, true);
  }

  async createGroup(title: string, memberIds: string[]): Promise<void> {
    const { conversation } = await this.api.call("POST", "/group/create", Schemas.conversation, { title, memberIds });
    this.upsertConversation(conversation);
    this.navigate({ name: "chat", id: conversation.id, thread: null, info: false }, true);
  }

  async addMembers(conversationId: string, userIds: string[]): Promise<void> {
    const { conversation } = await this.api.call("POST", `/conversations/${encodeURIComponent(conversationId)}/members`, Schemas.conversation, { userIds });
    this.upsertConversation(conversation);
    this.watchPresence();
  }

  async removeMember(conversationId: string, userId: string): Promise<void> {
    await this.api.call("DELETE", `/conversations/${encodeURIComponent(conversationId)}/members/${encodeURIComponent(userId)}`, Schemas.none);
    if (userId === this.me) {
      this.forgetConversation(conversationId);
      this.navigate({ name: "list" }, true);
      return;
    }
    const conv = this.state.conversations.get(conversationId);
    if (conv) this.upsertConversation({ ...conv, members: conv.members.filter((m) => m.userId !== userId) });
  }

  private forgetConversation(id: string): void {
    this.state.conversations.delete(id);
    this.state.views.delete(id);
    void this.db?.remove(`messages:${id}`);
    this.scheduleSave();
    this.emit();
  }

  // --- one conversation ---------------------------------------------------------------------------

  view(id: string): ConvView {
    let view = this.state.views.get(id);
    if (!view) {
      view = { messages: [], hasMoreBefore: true, loaded: false, loadingOlder: false, receipts: new Map(), typing: new Map(), firstUnreadSeq: null, error: null };
      this.state.views.set(id, view);
    }
    return view;
  }

  private async openConversation(id: string): Promise<void> {
    this.closeChatSocket();
    this.state.removedFrom = null;
    this.state.atBottom = true;
    const view = this.view(id);
    let conv = this.state.conversations.get(id);
    if (view.messages.length === 0) {
      const cached = await this.cachedMessages(id);
      if (cached.length > 0 && view.messages.length === 0) view.messages = cached;
    }
    if (!conv) {
      try {
        conv = (await this.api.call("GET", `/conversations/${encodeURIComponent(id)}`, Schemas.conversation)).conversation;
        this.upsertConversation(conv);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          view.error = "This conversation does not exist or you are not a member.";
          this.emit();
          return;
        }
      }
    }
    view.firstUnreadSeq = conv && conv.unread > 0 ? conv.readSeq + 1 : null;
    this.emit();
    if (!view.loaded) await this.loadHistory(id, conv ?? null);
    if (this.state.route.name !== "chat" || this.state.route.id !== id) return;
    void this.loadReceipts(id);
    this.connectChat(id);
    if (conv) this.fetchPresence(conv.members.map((m) => m.userId));
    this.watchPresence();
  }

  private async loadHistory(id: string, conv: Conversation | null): Promise<void> {
    const view = this.view(id);
    const path = `/conversations/${encodeURIComponent(id)}/messages`;
    try {
      // With unread messages, start a little before the first one so "jump to first unread" has
      // context; otherwise the latest page. The socket replays anything after what we hold.
      const query =
        conv && conv.unread > 0 && conv.unread <= 200
          ? qs({ after: Math.max(0, conv.readSeq - 20), limit: 250 })
          : qs({ limit: 50 });
      const page = await this.api.call("GET", path + query, Schemas.history);
      let messages = mergeMessages(view.messages, page.messages);
      const gaps = findGaps(messages);
      if (gaps.length > 0) {
        // The cached copy and the fresh page do not meet: keep the fresh, contiguous part.
        const lastGapEnd = gaps[gaps.length - 1]![1];
        messages = messages.filter((m) => m.seq > lastGapEnd);
      }
      view.messages = messages;
      view.hasMoreBefore = (messages[0]?.seq ?? 1) > 1;
      view.loaded = true;
      view.error = null;
      this.scheduleSave();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) view.error = "This conversation does not exist or you are not a member.";
      else if (view.messages.length === 0) view.error = navigator.onLine ? "Could not load messages." : "You are offline.";
    }
    this.emit();
  }

  async loadOlder(id: string): Promise<void> {
    const view = this.view(id);
    const first = view.messages[0];
    if (!first || !view.hasMoreBefore || view.loadingOlder) return;
    view.loadingOlder = true;
    this.emit();
    try {
      const page = await this.api.call("GET", `/conversations/${encodeURIComponent(id)}/messages${qs({ before: first.seq, limit: 50 })}`, Schemas.history);
      view.messages = mergeMessages(view.messages, page.messages);
      view.hasMoreBefore = page.hasMore && (view.messages[0]?.seq ?? 1) > 1;
    } catch {
      // Offline: the sentinel asks again when it scrolls into view.
    } finally {
      view.loadingOlder = false;
      this.emit();
    }
  }

  private async loadReceipts(id: string): Promise<void> {
    try {
      const { receipts } = await this.api.call("GET", `/conversations/${encodeURIComponent(id)}/receipts`, Schemas.receipts);
      const view = this.view(id);
      for (const r of receipts) view.receipts = applyReceipt(view.receipts, r);
      this.emit();
    } catch {
      // Receipts come again with the socket's receipt frames.
    }
  }

  private connectChat(id: string): void {
    if (this.chatSocketId === id && this.chatSocket) return;
    this.closeChatSocket();
    this.chatSocketId = id;
    this.chatSocket = new LiveSocket<ConversationServerFrame, ConversationClientFrame>({
      // dedupe: this socket is our copy of the conversation; the user socket need not repeat it.
      path: () => `/conversations/${encodeURIComponent(id)}/ws${qs({ after: resumePoint(this.view(id).messages), dedupe: 1, v: PROTOCOL_VERSION })}`,
      ticket: () => this.ticket(),
      parse: (json) => {
        const r = ConversationServerFrame.safeParse(json);
        return r.success ? r.data : null;
      },
      onFrame: (frame) => this.onChatFrame(id, frame),
      onStatus: (status) => {
        if (status !== "open") this.setChatLive(false);
      },
      onFinalClose: (code) => {
        if (code === 4003) {
          this.state.removedFrom = id;
          this.notify("You are no longer a member of this conversation.");
          void this.refreshConversations();
        }
        if (code === 4001) void this.endSession("You were signed out.");
      },
    });
  }

  private closeChatSocket(): void {
    this.chatSocket?.close();
    this.chatSocket = null;
    this.chatSocketId = null;
    this.setChatLive(false);
    for (const resolve of this.acks.values()) resolve({ ok: false, retry: true, error: "socket closed", retryAfterMs: 0 });
    this.acks.clear();
  }

  private setChatLive(live: boolean): void {
    if (this.state.chatLive === live) return;
    this.state.chatLive = live;
    this.emit();
  }

  private onChatFrame(id: string, frame: ConversationServerFrame): void {
    const view = this.view(id);
    switch (frame.type) {
      case "ready":
        // The replay before `ready` filled everything after what we held: the view is current
        // even if the history fetch failed (opened offline, from the cache).
        if (!view.loaded) {
          view.loaded = true;
          view.hasMoreBefore = (view.messages[0]?.seq ?? 1) > 1;
          view.error = null;
        }
        this.setChatLive(true);
        // A read or delivered frame may have died with the last socket; watermarks are idempotent.
        this.readSent.delete(id);
        this.deliveredSent.delete(id);
        // Receipts that moved while the socket was down are not replayed: fetch them.
        void this.loadReceipts(id);
        void this.flushOutbox();
        this.markReadIfViewing();
        return;
      case "message":
        this.receive([frame.message], "chat");
        return;
      case "ack": {
        this.receive([frame.message], "ack");
        this.acks.get(frame.clientMsgId)?.({ ok: true, message: frame.message });
        return;
      }
      case "typing":
        if (frame.on) view.typing.set(frame.userId, Date.now() + 6500);
        else view.typing.delete(frame.userId);
        if (frame.on) setTimeout(() => this.emit(), 6600);
        this.emit();
        return;
      case "receipt":
        view.receipts = applyReceipt(view.receipts, frame);
        this.emit();
        return;
      case "error":
        if (frame.ref) {
          const transient = frame.code === "internal" || frame.code === "rate_limited" || frame.code === "unavailable";
          this.acks.get(frame.ref)?.(transient ? { ok: false, retry: true, error: frame.message } : { ok: false, retry: false, error: frame.message });
        }
        return;
    }
  }

  /** Who is typing in a conversation now, names first. */
  typingNames(id: string): string[] {
    const view = this.state.views.get(id);
    if (!view) return [];
    const now = Date.now();
    return [...view.typing].filter(([uid, until]) => until > now && uid !== this.me).map(([uid]) => this.userName(uid));
  }

  // --- incoming messages ----------------------------------------------------------------------------

  /**
   * Every message from every path (conversation socket, ack, user socket, sync) comes through
   * here: merged by seq, so a message seen twice is shown once, in order.
   */
  private receive(messages: Message[], via: "chat" | "ack" | "user" | "sync"): void {
    for (const [conversationId, list] of byConversation(messages)) {
      const conv = this.state.conversations.get(conversationId);
      const view = this.state.views.get(conversationId);
      // Sync pages can reach far back: what is older than the window on screen stays for
      // scrolling up (before=), or the window would grow holes at its start.
      const windowStart = view?.messages[0]?.seq ?? Number.MAX_SAFE_INTEGER;
      const fresh = via === "chat" || via === "ack" ? list : list.filter((m) => m.seq >= windowStart);
      if (view && fresh.length > 0) {
        // The conversation socket replays from our resume point, so its frames never leave a hole.
        if (via !== "chat" && opensGap(view.messages, fresh[0]!.seq)) {
          // Something is missing between what we hold and this message: the socket's replay or
          // the next open fills it in order; until then the view is not shown as up to date.
          if (this.chatSocketId === conversationId) void this.fillGap(conversationId);
          else view.loaded = false;
        } else {
          view.messages = mergeMessages(view.messages, fresh);
        }
      }
      const thread = this.state.thread;
      if (thread && thread.conversationId === conversationId) {
        const replies = list.filter((m) => m.threadRootSeq === thread.rootSeq || m.seq === thread.rootSeq);
        if (replies.length > 0) thread.messages = mergeMessages(thread.messages, replies);
      }
      const last = list[list.length - 1]!;
      if (conv) {
        // Counted like the server's `unread` (docs/api.md): others' messages, thread replies included, system messages not.
        const fromOthers = list.filter((m) => m.senderId !== this.me && m.seq > conv.lastSeq && m.kind !== "system");
        if (last.seq >= conv.lastSeq) {
          conv.lastSeq = last.seq;
          conv.lastMessage = last;
          conv.lastMessageAt = last.createdAt;
        }
        if (fromOthers.length > 0 && !this.isViewing(conversationId)) conv.unread += fromOthers.length;
        if (fromOthers.length > 0 && via !== "ack") this.notifyIncoming(conv, fromOthers[fromOthers.length - 1]!);
      } else if (via === "user" || via === "sync") {
        // A conversation we have not seen yet (someone started it with us).
        void this.refreshConversations();
      }
      if (list.some((m) => m.senderId !== this.me)) {
        if (this.isViewing(conversationId)) this.markReadIfViewing();
        else this.sendDelivered(conversationId, last.seq);
      }
    }
    this.scheduleSave();
    this.emit();
  }

  private async fillGap(id: string): Promise<void> {
    const view = this.view(id);
    try {
      for (let i = 0; i < 20; i++) {
        const after = resumePoint(view.messages);
        const page = await this.api.call("GET", `/conversations/${encodeURIComponent(id)}/messages${qs({ after, limit: 500 })}`, Schemas.history);
        view.messages = mergeMessages(view.messages, page.messages);
        if (!page.hasMore) break;
      }
      // The save that receive() scheduled may have run before this fill came back.
      this.scheduleSave();
      this.emit();
    } catch {
      view.loaded = false;
    }
  }

  private onUserFrame(frame: UserServerFrame): void {
    switch (frame.type) {
      case "ready":
        this.state.connection = "online";
        this.emit();
        this.watchPresence();
        void this.sync();
        void this.flushOutbox();
        return;
      case "message":
        this.receive([frame.message], "user");
        return;
      case "presence":
        this.state.caps.presence = true;
        this.state.presence.set(frame.userId, { userId: frame.userId, status: frame.status, lastSeen: frame.lastSeen });
        this.emit();
        return;
      case "receipt": {
        const view = this.state.views.get(frame.conversationId);
        if (view) {
          const { type: _t, conversationId: _c, ...receipt } = frame;
          view.receipts = applyReceipt(view.receipts, receipt);
          this.emit();
        }
        if (frame.userId === this.me) {
          const conv = this.state.conversations.get(frame.conversationId);
          if (conv && frame.readSeq > conv.readSeq) {
            // Read on another device of mine.
            conv.readSeq = frame.readSeq;
            conv.unread = frame.readSeq >= conv.lastSeq ? 0 : conv.unread;
            this.emit();
          }
        }
        return;
      }
      case "conversation": {
        const isMember = frame.conversation.members.some((m) => m.userId === this.me);
        if (isMember) this.upsertConversation(frame.conversation);
        else this.forgetConversation(frame.conversation.id);
        return;
      }
      case "error":
        return;
    }
  }

  private onUserSocketStatus(status: SocketStatus): void {
    if (status !== "open") this.state.connection = navigator.onLine ? "connecting" : "offline";
    this.emit();
  }

  /** Catches up with GET /messages?since= from the stored cursor: after a reconnect or a long absence. */
  sync(): Promise<void> {
    if (this.syncing || !this.state.session) return this.syncing ?? Promise.resolve();
    this.syncing = (async () => {
      try {
        const stored = await this.db?.get("cursor");
        const cursor = typeof stored === "string" ? stored : String(Date.now() - 60_000);
        let sawUnknown = false;
        const { cursor: next } = await syncSince(
          cursor,
          (since) => this.api.call("GET", `/messages${qs({ since, limit: 200 })}`, Schemas.since),
          (messages) => {
            if (messages.some((m) => !this.state.conversations.has(m.conversationId))) sawUnknown = true;
            this.receive(messages, "sync");
          },
        );
        await this.db?.set("cursor", next);
        if (sawUnknown) await this.refreshConversations();
      } catch {
        // Offline or the server is restarting: the next reconnect or tick tries again.
      } finally {
        this.syncing = null;
      }
    })();
    return this.syncing;
  }

  // --- reading --------------------------------------------------------------------------------------

  isViewing(id: string): boolean {
    const r = this.state.route;
    return r.name === "chat" && r.id === id && document.visibilityState === "visible" && this.state.atBottom;
  }

  setAtBottom(atBottom: boolean): void {
    if (this.state.atBottom === atBottom) return;
    this.state.atBottom = atBottom;
    if (atBottom) this.markReadIfViewing();
    this.emit();
  }

  /** Sends `read` up to the newest message once it is on screen. */
  markReadIfViewing(): void {
    const r = this.state.route;
    if (r.name !== "chat" || !this.isViewing(r.id)) return;
    const view = this.state.views.get(r.id);
    const conv = this.state.conversations.get(r.id);
    const last = view?.messages[view.messages.length - 1];
    if (!view || !conv || !last) return;
    if (conv.unread > 0 || conv.readSeq < last.seq) {
      conv.unread = 0;
      conv.readSeq = Math.max(conv.readSeq, last.seq);
      this.emit();
    }
    if ((this.readSent.get(r.id) ?? 0) >= last.seq) return;
    this.readSent.set(r.id, last.seq);
    if (this.chatSocketId === r.id && this.state.chatLive && this.chatSocket?.send({ type: "read", seq: last.seq })) return;
    void this.api
      .call("POST", `/conversations/${encodeURIComponent(r.id)}/receipts`, Schemas.receipt, { type: "read", seq: last.seq })
      .catch(() => this.readSent.delete(r.id));
  }

  private sendDelivered(id: string, seq: number): void {
    if ((this.deliveredSent.get(id) ?? 0) >= seq) return;
    this.deliveredSent.set(id, seq);
    if (this.chatSocketId === id && this.state.chatLive && this.chatSocket?.send({ type: "delivered", seq })) return;
    void this.api
      .call("POST", `/conversations/${encodeURIComponent(id)}/receipts`, Schemas.receipt, { type: "delivered", seq })
      .catch(() => this.deliveredSent.delete(id));
  }

  // --- sending --------------------------------------------------------------------------------------

  async sendText(conversationId: string, body: string, threadRootSeq: number | null): Promise<void> {
    const text = body.trim();
    if (!text || !this.outbox) return;
    this.stopTyping(conversationId);
    await this.outbox.enqueue({ conversationId, body: text, ...(threadRootSeq ? { threadRootSeq } : {}) });
    void this.flushOutbox();
  }

  async sendMedia(conversationId: string, media: MediaRef[], caption: string, threadRootSeq: number | null): Promise<void> {
    if (!this.outbox) return;
    await this.outbox.enqueue({
      conversationId,
      mediaIds: media.map((m) => m.id),
      media,
      ...(caption.trim() ? { body: caption.trim() } : {}),
      ...(threadRootSeq ? { threadRootSeq } : {}),
    });
    void this.flushOutbox();
  }

  async retry(clientMsgId: string): Promise<void> {
    await this.outbox?.retry(clientMsgId);
    void this.flushOutbox();
  }

  async discard(clientMsgId: string): Promise<void> {
    await this.outbox?.discard(clientMsgId);
  }

  private async flushOutbox(): Promise<void> {
    const outbox = this.outbox;
    if (!outbox || !navigator.onLine) return;
    await outbox.flush();
    if (this.outboxTimer) clearTimeout(this.outboxTimer);
    this.outboxTimer = null;
    const next = outbox.nextAttemptAt();
    if (next !== null) this.outboxTimer = setTimeout(() => void this.flushOutbox(), Math.max(0, next - Date.now()));
  }

  /**
   * Sends one outbox item: over the open conversation's socket when it is live (an ack names the
   * stored message), else by POST /send. Both are idempotent by clientMsgId, so switching path
   * between attempts cannot duplicate a message.
   */
  private async transport(item: OutboxItem): Promise<SendOutcome> {
    if (!navigator.onLine) return { ok: false, retry: true, error: "offline", retryAfterMs: 30_000 };
    const content = {
      clientMsgId: item.clientMsgId,
      ...(item.body !== undefined ? { body: item.body } : {}),
      ...(item.mediaIds !== undefined ? { mediaIds: item.mediaIds } : {}),
      ...(item.threadRootSeq !== undefined ? { threadRootSeq: item.threadRootSeq } : {}),
    };
    if (this.chatSocketId === item.conversationId && this.state.chatLive && this.chatSocket) {
      const socket = this.chatSocket;
      return new Promise<SendOutcome>((resolve) => {
        const timer = setTimeout(() => done({ ok: false, retry: true, error: "no answer", retryAfterMs: 0 }), ACK_TIMEOUT_MS);
        const done = (outcome: SendOutcome) => {
          clearTimeout(timer);
          this.acks.delete(item.clientMsgId);
          resolve(outcome);
        };
        this.acks.set(item.clientMsgId, done);
        if (!socket.send({ type: "send", ...content })) done({ ok: false, retry: true, error: "socket closed", retryAfterMs: 0 });
      });
    }
    try {
      const { message } = await this.api.call("POST", "/send", Schemas.message, { conversationId: item.conversationId, ...content });
      return { ok: true, message };
    } catch (err) {
      if (err instanceof NetworkError) return { ok: false, retry: true, error: "offline" };
      if (err instanceof ApiError && (err.status === 429 || err.status >= 500)) {
        return { ok: false, retry: true, error: err.message, ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}) };
      }
      return { ok: false, retry: false, error: err instanceof Error ? err.message : "not sent" };
    }
  }

  // --- typing ---------------------------------------------------------------------------------------

  /** Called on each keystroke: `typing on` at most every 3 s, `off` after 4 s of quiet. */
  typing(conversationId: string): void {
    const now = Date.now();
    const sent = this.typingSent.get(conversationId);
    if (sent) clearTimeout(sent.timer);
    const timer = setTimeout(() => this.stopTyping(conversationId), TYPING_IDLE_MS);
    if (!sent || now - sent.at > TYPING_REFRESH_MS) {
      if (this.chatSocketId === conversationId) this.chatSocket?.send({ type: "typing", on: true });
      this.typingSent.set(conversationId, { at: now, timer });
    } else {
      this.typingSent.set(conversationId, { at: sent.at, timer });
    }
  }

  stopTyping(conversationId: string): void {
    const sent = this.typingSent.get(conversationId);
    if (!sent) return;
    clearTimeout(sent.timer);
    this.typingSent.delete(conversationId);
    if (this.chatSocketId === conversationId) this.chatSocket?.send({ type: "typing", on: false });
  }

  // --- threads --------------------------------------------------------------------------------------

  private async openThread(conversationId: string, rootSeq: number): Promise<void> {
    if (this.state.thread?.conversationId === conversationId && this.state.thread.rootSeq === rootSeq) return;
    const fromView = this.view(conversationId).messages.filter((m) => m.seq === rootSeq || m.threadRootSeq === rootSeq);
    this.state.thread = { conversationId, rootSeq, messages: fromView, loading: true };
    this.emit();
    try {
      const page = await this.api.call("GET", `/conversations/${encodeURIComponent(conversationId)}/messages${qs({ thread: rootSeq, after: rootSeq - 1, limit: 500 })}`, Schemas.history);
      const thread = this.state.thread;
      if (thread?.conversationId === conversationId && thread.rootSeq === rootSeq) {
        thread.messages = mergeMessages(thread.messages, page.messages);
      }
    } catch {
      // Offline: the thread shows what the conversation view holds.
    }
    if (this.state.thread) this.state.thread.loading = false;
    this.emit();
  }

  // --- presence -------------------------------------------------------------------------------------

  /** The people whose status is on screen: direct partners in the list, and the open chat's members. */
  private watchPresence(): void {
    const ids = new Set<string>();
    for (const conv of this.sortedConversations()) {
      if (conv.type === "direct") {
        const other = this.otherMember(conv);
        if (other) ids.add(other);
      }
      if (ids.size >= 150) break;
    }
    const r = this.state.route;
    if (r.name === "chat") for (const m of this.state.conversations.get(r.id)?.members.slice(0, 50) ?? []) if (m.userId !== this.me) ids.add(m.userId);
    this.userSocket?.send({ type: "presence.watch", userIds: [...ids].slice(0, 200) });
    if (this.state.caps.presence) this.fetchPresence([...ids]);
  }

  /** What we know of someone's presence; nothing while we are offline ourselves (it would be stale). */
  presenceOf(userId: string): Presence | undefined {
    if (!this.state.caps.presence || this.state.connection !== "online") return undefined;
    return this.state.presence.get(userId);
  }

  private fetchPresence(ids: string[]): void {
    const others = ids.filter((id) => id !== this.me).slice(0, LIMITS.presenceQueryMax);
    if (others.length === 0 || !this.state.caps.presence) return;
    void this.api
      .call("GET", `/presence${qs({ userIds: others.join(",") })}`, Schemas.presence)
      .then(({ presence }) => {
        for (const p of presence) this.state.presence.set(p.userId, p);
        this.emit();
      })
      .catch(() => undefined);
  }

  // --- capabilities, push ---------------------------------------------------------------------------

  /**
   * Asks whether the presence, media and push endpoints exist (a JSON answer from the API rather
   * than the app's HTML). Only what exists gets a control.
   */
  private async probeCapabilities(): Promise<void> {
    const answers = async (path: string): Promise<boolean> => {
      try {
        const res = await fetch(path, { headers: { authorization: `Bearer ${this.state.session?.token ?? ""}` }, cache: "no-store" });
        if (!(res.headers.get("content-type") ?? "").includes("application/json")) return false;
        const body: unknown = await res.json();
        const missing = res.status === 404 && JSON.stringify(body).includes("no such route");
        return !missing;
      } catch {
        return false;
      }
    };
    const [presence, upload, push] = await Promise.all([
      answers(`/presence${qs({ userIds: this.me })}`),
      answers("/media/capability-probe"),
      answers("/push/vapid-public-key"),
    ]);
    this.state.caps = {
      presence: presence || this.state.caps.presence,
      upload,
      push: push && "PushManager" in window && "serviceWorker" in navigator && "Notification" in window,
    };
    if (presence) this.watchPresence();
    this.emit();
  }

  async enablePush(): Promise<void> {
    const permission = await Notification.requestPermission();
    if (permission !== "granted") {
      this.notify("Notifications are blocked for this site.");
      return;
    }
    const { publicKey } = await this.api.call("GET", "/push/vapid-public-key", Schemas.vapid);
    const registration = await navigator.serviceWorker.ready;
    const subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: base64urlToBytes(publicKey) });
    await this.api.call("POST", "/push/subscriptions", Schemas.none, subscription.toJSON());
    this.state.pushEnabled = true;
    await this.db?.set("push", true);
    this.notify("Notifications are on.");
  }

  private async unsubscribePush(): Promise<void> {
    if (!("serviceWorker" in navigator)) return;
    const registration = await navigator.serviceWorker.getRegistration();
    const subscription = await registration?.pushManager.getSubscription();
    if (!subscription) return;
    await this.api.call("DELETE", `/push/subscriptions${qs({ endpoint: subscription.endpoint })}`, Schemas.none).catch(() => undefined);
    await subscription.unsubscribe();
  }

  async disablePush(): Promise<void> {
    await this.unsubscribePush();
    this.state.pushEnabled = false;
    await this.db?.set("push", false);
    this.emit();
  }

  /** While the app is open but hidden, a new message shows a notification like a push would. */
  private notifyIncoming(conv: Conversation, message: Message): void {
    if (document.visibilityState === "visible" || !("Notification" in window) || Notification.permission !== "granted") return;
    if (message.kind === "system") return;
    void navigator.serviceWorker?.ready.then((registration) =>
      registration.showNotification(this.title(conv), {
        body: message.body ?? (message.media.length > 0 ? "Attachment" : "New message"),
        tag: conv.id,
        data: { conversationId: conv.id },
        icon: "/icons/icon-192.png",
        badge: "/icons/badge-96.png",
      }),
    );
  }

  // --- uploads --------------------------------------------------------------------------------------

  addUpload(upload: Upload): void {
    this.state.uploads = [...this.state.uploads, upload];
    this.emit();
  }

  updateUpload(id: string, patch: Partial<Upload>): void {
    this.state.uploads = this.state.uploads.map((u) => (u.id === id ? { ...u, ...patch } : u));
    this.emit();
  }

  removeUpload(id: string): void {
    const upload = this.state.uploads.find((u) => u.id === id);
    if (upload?.previewUrl) URL.revokeObjectURL(upload.previewUrl);
    this.state.uploads = this.state.uploads.filter((u) => u.id !== id);
    this.emit();
  }

  disableUploads(): void {
    this.state.caps.upload = false;
    this.notify("Attachments are not available on this server yet.");
  }

  // --- theme ----------------------------------------------------------------------------------------

  setTheme(theme: Theme): void {
    this.state.theme = theme;
    localStorage.setItem(THEME_KEY, theme);
    applyTheme(theme);
    this.emit();
  }
}

function readSession(): Session | null {
  try {
    const raw = localStorage.getItem(SESSION_KEY);
    if (!raw) return null;
    const parsed = SessionSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

function readTheme(): Theme {
  const t = localStorage.getItem(THEME_KEY);
  return t === "light" || t === "dark" ? t : "system";
}

export function applyTheme(theme: Theme): void {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

function deviceName(): string {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS X/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return `${browser}${os ? ` on ${os}` : ""}`;
}

function base64urlToBytes(s: string): Uint8Array<ArrayBuffer> {
  const b = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(new ArrayBuffer(b.length));
  for (let i = 0; i < b.length; i++) out[i] = b.charCodeAt(i);
  return out;
}
