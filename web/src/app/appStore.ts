// The composition root: builds the slices from one Browser (the real one in main.tsx, fakes in
// web/test) and wires them together. Views read `store.state` and call the methods below, each
// of which hands over to the slice that owns it:
//   session (session.ts), routes (navigation.ts), sockets and sync (connection.ts), sending and
//   the outbox (sendQueue.ts), conversations, timelines and receipts (chats.ts), users
//   (people.ts), typing (typing.ts), threads (threads.ts), presence (presenceWatch.ts), the
//   server's optional parts (serverProbe.ts), push (pushNotifications.ts), uploads (uploads.ts),
//   the theme (preferences.ts), the offline cache (localCache.ts), end-to-end encrypted
//   conversations (e2ee.ts), safety numbers and verified contacts (safetyNumbers.ts), replies,
//   mentions, forwards and pins (compose.ts), search (search.ts).
import type { Action, Conversation, ConversationSettingsBody, MediaRef, Message, OwnDevice, Presence, User } from "../../../protocol";
import type { Shown } from "../e2ee/content";
import { Api, Schemas } from "../lib/api";
import { MemoryOutboxStorage } from "../state/offlineOutbox";
import type { Browser, Theme } from "./browser";
import type { LocalSearchPort } from "./ports";
import type { Candidate } from "../state/compose";
import { Chats } from "./chats";
import { Compose } from "./compose";
import { Connection } from "./connection";
import { E2ee } from "./e2ee";
import type { OutboxItem } from "../state/offlineOutbox";
import { LocalCache } from "./localCache";
import { Navigation } from "./navigation";
import { People } from "./people";
import { Preferences, readTheme } from "./preferences";
import { Profile, type ProfileChange } from "./profile";
import { PresenceWatch } from "./presenceWatch";
import { PushNotifications } from "./pushNotifications";
import { SafetyNumbers } from "./safetyNumbers";
import { parseRoute, type Route } from "./route";
import { Search } from "./search";
import { SendQueue, type SendExtras } from "./sendQueue";
import { ServerProbe } from "./serverProbe";
import { SessionSlice, readSession } from "./session";
import { StoreCore, initialState, type AppState, type ConvView, type Upload } from "./storeCore";
import { Threads } from "./threads";
import { Typing } from "./typing";
import { Uploads } from "./uploads";
import type { SafetyNumberView, SafetyStatus } from "../state/safetyNumbers";

export type { AppState, Capabilities, ConvView, SearchView, Session, ThreadView, Upload } from "./storeCore";
export type { Theme } from "./browser";

export interface AppStoreOptions {
  /** New clientMsgIds (crypto.randomUUID by default). */
  newId?: () => string;
  /** Results for E2EE conversations from this device's own index (none by default). */
  localSearch?: LocalSearchPort;
}

export class AppStore {
  readonly core: StoreCore;
  readonly api: Api;
  readonly cache: LocalCache;
  readonly session: SessionSlice;
  readonly navigation: Navigation;
  readonly connection: Connection;
  readonly sendQueue: SendQueue;
  readonly chats: Chats;
  readonly people: People;
  readonly typing: Typing;
  readonly threads: Threads;
  readonly presence: PresenceWatch;
  readonly probe: ServerProbe;
  readonly push: PushNotifications;
  readonly uploads: Uploads;
  readonly preferences: Preferences;
  readonly safety: SafetyNumbers;
  readonly e2ee: E2ee;
  readonly profile: Profile;
  readonly compose: Compose;
  readonly search: Search;

  constructor(
    private readonly browser: Browser,
    options: AppStoreOptions = {},
  ) {
    const { address } = browser;
    const route = parseRoute(address.pathname(), address.search());
    const core = new StoreCore(initialState(readSession(browser.storage), route, browser.online(), readTheme(browser.storage)), browser.clock);
    this.core = core;
    this.api = new Api(
      () => core.state.session?.token ?? null,
      () => void this.session.end("Your session ended. Please sign in again."),
      browser.fetch,
    );
    // Each slice is handed `this` for the others it calls: they are all in place before any runs.
    this.cache = new LocalCache(core, browser.clock);
    this.navigation = new Navigation(core, address, {
      openConversation: (id) => void this.chats.open(id),
      chatConnected: () => this.connection.chatConnected,
      leaveConversation: () => this.connection.closeChat(),
      openThread: (id, rootSeq) => void this.threads.open(id, rootSeq),
    });
    this.session = new SessionSlice(core, this.api, browser, {
      start: () => this.startAccount(),
      stop: (userId) => this.stopAccount(userId),
      beforeLogout: () => this.push.unsubscribe(),
    }, this);
    this.connection = new Connection(core, this.api, browser, this);
    this.sendQueue = new SendQueue(core, this.api, browser, this, options.newId);
    this.chats = new Chats(core, this.api, browser, this);
    this.people = new People(core, this.api, this);
    this.typing = new Typing(core, browser.clock, this);
    this.threads = new Threads(core, this.api, this);
    this.presence = new PresenceWatch(core, this.api, this);
    this.probe = new ServerProbe(core, browser, this);
    this.push = new PushNotifications(core, this.api, browser, this);
    this.uploads = new Uploads(core, browser);
    this.preferences = new Preferences(core, browser);
    this.safety = new SafetyNumbers(core, this.api, browser.clock);
    this.e2ee = new E2ee(core, this.api, browser);
    this.profile = new Profile(this.api, this);
    this.compose = new Compose(core, this.api);
    // E2EE conversations are searched on the device (their text never reaches the server).
    const onDevice: LocalSearchPort = { localSearch: async (query, conversationId) => (await this.e2ee.localSearch(query, conversationId)).results };
    this.search = new Search(core, this.api, browser.clock, options.localSearch ?? onDevice);
  }

  get state(): AppState {
    return this.core.state;
  }

  get me(): string {
    return this.core.me;
  }

  subscribe(listener: () => void): () => void {
    return this.core.subscribe(listener);
  }

  notify(text: string): void {
    this.core.notify(text);
  }

  // --- start, and what starts and stops with an account -----------------------------------------

  async start(): Promise<void> {
    const b = this.browser;
    b.on("popstate", () => this.navigation.apply(this.navigation.current()));
    b.on("online", () => {
      void this.session.revokePending();
      this.connection.wentOnline();
    });
    b.on("offline", () => this.connection.wentOffline());
    b.on("visible", () => {
      this.chats.markReadIfViewing();
      void this.connection.sync();
      this.checkOpenChat();
    });
    // Hidden may be the last moment this page runs (a phone kills background tabs).
    b.on("hidden", () => this.cache.saveNow());
    // A reload or a closed tab should not lose what arrived in the last half second: the next
    // start opens from this cache, offline too. Best effort: a browser may drop writes started
    // as the page unloads, and then the next start's sync fetches what the cache missed.
    b.on("pagehide", () => this.cache.saveNow());
    b.notifications.onOpen((id) => this.navigate({ name: "chat", id, thread: null, info: false }));
    void this.session.revokePending();
    if (this.state.session) {
      await this.startAccount();
    } else if (this.state.route.name !== "register") {
      this.state.route = { name: "login" };
      b.address.replace("/login");
    }
    this.navigation.apply(this.state.route);
    this.core.emit();
  }

  /** Local first: render the cached list at once, then connect, sync and flush the outbox. */
  private async startAccount(): Promise<void> {
    const session = this.state.session;
    if (!session) return;
    this.state.users.set(session.user.id, session.user);
    try {
      this.core.db = await this.browser.localStores.open(session.user.id);
    } catch {
      this.core.db = null; // private mode without IndexedDB: everything works, nothing survives a reload
    }
    await Promise.all([this.cache.load(), this.push.restore(), this.safety.load()]);
    await this.sendQueue.attach(this.core.db ?? new MemoryOutboxStorage());
    this.connection.openUserSocket();
    void this.chats.refreshList();
    void this.probe.run();
    void this.sendQueue.flush();
  }

  private async stopAccount(userId: string): Promise<void> {
    this.connection.closeAll();
    this.e2ee.stop();
    this.core.db?.close();
    this.core.db = null;
    this.sendQueue.detach();
    await this.browser.localStores.destroy(userId);
  }

  // --- what the views call ------------------------------------------------------------------------

  register(username: string, password: string, displayName: string): Promise<void> {
    return this.session.register(username, password, displayName);
  }
  login(username: string, password: string): Promise<void> {
    return this.session.login(username, password);
  }
  logout(): Promise<void> {
    return this.session.logout();
  }
  /** This account's signed-in devices, this one marked `current` (Settings, Devices). */
  async devices(): Promise<OwnDevice[]> {
    return (await this.api.call("GET", "/devices", Schemas.devices)).devices;
  }
  /** Signs another device of this account out: its token stops working and its sockets close. */
  async renameDevice(deviceId: string, name: string): Promise<OwnDevice> {
    return (await this.api.call("PATCH", `/devices/${encodeURIComponent(deviceId)}`, Schemas.device, { name })).device;
  }

  async signOutDevice(deviceId: string): Promise<void> {
    await this.api.call("DELETE", `/devices/${encodeURIComponent(deviceId)}`, Schemas.none);
  }
  /** Sign-outs made offline that the server has not heard of yet. */
  pendingRevocations(): number {
    return this.session.pendingRevocations();
  }
  navigate(route: Route, replace = false): void {
    this.navigation.navigate(route, replace);
  }

  sortedConversations(): Conversation[] {
    return this.chats.sorted();
  }
  title(conv: Conversation): string {
    return this.chats.title(conv);
  }
  otherMember(conv: Conversation): string | null {
    return this.chats.otherMember(conv);
  }
  view(id: string): ConvView {
    return this.chats.view(id);
  }
  loadOlder(id: string): Promise<void> {
    return this.chats.loadOlder(id);
  }
  setAtBottom(atBottom: boolean): void {
    this.chats.setAtBottom(atBottom);
  }
  startDirect(userId: string, e2ee = false): Promise<void> {
    return this.chats.startDirect(userId, e2ee);
  }
  createGroup(title: string, memberIds: string[], e2ee = false): Promise<void> {
    return this.chats.createGroup(title, memberIds, e2ee);
  }
  /** What a message of an E2EE conversation says on this device, or why it says nothing. */
  shown(message: Message): Shown {
    return this.e2ee.shown(message);
  }
  /** A message as the views show it: in an E2EE conversation, what this device decrypted and folded in. */
  decrypted(message: Message): Message {
    return this.e2ee.decrypted(message);
  }
  /** Whether a message of an E2EE conversation is an encrypted action (shown on its target). */
  isEncryptedAction(message: Message): boolean {
    return this.e2ee.isAction(message);
  }
  addMembers(conversationId: string, userIds: string[]): Promise<void> {
    return this.chats.addMembers(conversationId, userIds);
  }
  removeMember(conversationId: string, userId: string): Promise<void> {
    return this.chats.removeMember(conversationId, userId);
  }
  /** A group's title and description (admins; docs/api.md, Group settings). */
  updateGroupInfo(conversationId: string, change: { title?: string; description?: string | null }): Promise<void> {
    return this.chats.updateGroupInfo(conversationId, change);
  }
  setRole(conversationId: string, userId: string, role: "admin" | "member"): Promise<void> {
    return this.chats.setRole(conversationId, userId, role);
  }
  /** The signed-in user's display name and photo (a media id they uploaded, or null). */
  async updateProfile(change: ProfileChange): Promise<void> {
    await this.profile.update(change);
  }
  /** A user's photo (a media id), if they set one. */
  photoOf(userId: string): string | undefined {
    return this.state.users.get(userId)?.photoId;
  }

  userName(id: string): string {
    return this.people.name(id);
  }
  ensureUsers(ids: string[]): void {
    this.people.ensure(ids);
  }
  searchUsers(q: string): Promise<User[]> {
    return this.people.search(q);
  }

  sendText(conversationId: string, body: string, threadRootSeq: number | null, extras: SendExtras = {}): Promise<void> {
    return this.sendQueue.sendText(conversationId, body, threadRootSeq, extras);
  }
  /** Sends the message into each conversation, marked forwarded, its media by id. */
  forward(message: Message, conversationIds: readonly string[]): Promise<void> {
    if (!this.state.conversations.get(message.conversationId)?.e2ee) return this.sendQueue.forward(message, conversationIds);
    // From an E2EE conversation, as this device decrypted it: the text, and the sealed media with
    // the keys that open them (the same blobs), sealed again for each E2EE conversation it goes to.
    const shown = this.e2ee.shown(message);
    if (shown.kind !== "content") return Promise.reject(new Error("This message cannot be forwarded."));
    return this.sendQueue.forward({ ...message, body: shown.content.body ?? null, media: shown.content.media ?? [] }, conversationIds);
  }
  /**
   * Whether a message can be forwarded, and where: what it shows, from a plaintext conversation to
   * plaintext ones, from an E2EE one to E2EE ones (its text and keys never reach the server). The
   * server shares another member's upload only with a forward's mark, which an E2EE send keeps
   * inside its ciphertext: from an E2EE conversation, only text or this user's own uploads.
   */
  forwardable(message: Message): { e2ee: boolean } | null {
    const conv = this.state.conversations.get(message.conversationId);
    if (!conv || message.hidden || message.deletedAt !== undefined) return null;
    if (!conv.e2ee) return message.body !== null || message.media.length > 0 ? { e2ee: false } : null;
    const shown = this.e2ee.shown(message);
    if (shown.kind !== "content") return null;
    const media = shown.content.media ?? [];
    if (media.length > 0 && message.senderId !== this.me) return null;
    return shown.content.body !== undefined || media.length > 0 ? { e2ee: true } : null;
  }
  startReply(conversationId: string, seq: number): void {
    this.compose.startReply(conversationId, seq);
  }
  cancelReply(conversationId: string): void {
    this.compose.cancelReply(conversationId);
  }
  /** The reply the composer holds for this send, taken off it (a thread's composer has none). */
  takeReply(conversationId: string, threadRootSeq: number | null): SendExtras {
    const replyToSeq = threadRootSeq === null ? this.compose.replyTo(conversationId) : undefined;
    if (replyToSeq === undefined) return {};
    this.compose.cancelReply(conversationId);
    return { replyToSeq };
  }
  replyTo(conversationId: string): number | undefined {
    return this.compose.replyTo(conversationId);
  }
  mentionCandidates(conv: Conversation, query: string): Candidate[] {
    return this.compose.mentionCandidates(conv, query);
  }
  loadPins(conversationId: string): Promise<void> {
    return this.compose.loadPins(conversationId);
  }
  /**
   * A conversation's pinned messages, the latest pin first. An E2EE conversation's pins are
   * encrypted actions the server cannot list: there, the pinned ones among the messages this
   * device holds.
   */
  pins(conversationId: string): Message[] {
    if (!this.state.conversations.get(conversationId)?.e2ee) return this.compose.pins(conversationId);
    return this.view(conversationId)
      .messages.map((m) => this.e2ee.decrypted(m))
      .filter((m) => m.pinned !== undefined)
      .sort((a, b) => (b.pinned?.at ?? 0) - (a.pinned?.at ?? 0));
  }
  /** Scrolls the conversation to the message and highlights it, loading older history down to it. */
  jumpTo(conversationId: string, seq: number): Promise<void> {
    return this.chats.jumpTo(conversationId, seq);
  }
  jumped(): void {
    this.chats.jumped();
  }
  /** Opens a message's conversation at that message (a thread reply: at its root, the thread open). */
  openMessage(message: Message): Promise<void> {
    const root = message.threadRootSeq;
    this.navigate({ name: "chat", id: message.conversationId, thread: root, info: false });
    return this.chats.jumpTo(message.conversationId, root ?? message.seq);
  }
  openSearch(conversationId: string | null): void {
    this.search.open(conversationId);
  }
  closeSearch(): void {
    this.search.close();
  }
  typeSearch(query: string): void {
    this.search.type(query);
  }
  runSearch(): Promise<void> {
    return this.search.run();
  }
  moreResults(): Promise<void> {
    return this.search.more();
  }
  sendMedia(conversationId: string, media: MediaRef[], caption: string, threadRootSeq: number | null, extras: SendExtras = {}): Promise<void> {
    return this.sendQueue.sendMedia(conversationId, media, caption, threadRootSeq, extras);
  }
  /**
   * An action on a message. In an E2EE conversation an edit, reaction or pin is an encrypted
   * message (through the outbox, sealed at send time); a delete for everyone goes to the server
   * there too, which must erase the ciphertext (docs/api.md, Message actions).
   */
  act(conversationId: string, action: Action): Promise<void> {
    if (this.state.conversations.get(conversationId)?.e2ee && action.type !== "delete") return this.sendQueue.sendAction(conversationId, action);
    return this.chats.act(conversationId, action);
  }
  /** Mute, archive or pin a conversation for this user, on all their devices. */
  changeConversationSettings(conversationId: string, change: ConversationSettingsBody): Promise<void> {
    return this.chats.changeSettings(conversationId, change);
  }

  hideForMe(conversationId: string, seq: number): Promise<void> {
    return this.chats.hideForMe(conversationId, seq);
  }
  retry(clientMsgId: string): Promise<void> {
    return this.sendQueue.retry(clientMsgId);
  }
  discard(clientMsgId: string): Promise<void> {
    return this.sendQueue.discard(clientMsgId);
  }

  stopTyping(conversationId: string): void {
    this.typing.stop(conversationId);
  }
  typingNames(conversationId: string): string[] {
    return this.typing.names(conversationId);
  }

  presenceOf(userId: string): Presence | undefined {
    return this.presence.of(userId);
  }

  enablePush(): Promise<void> {
    return this.push.enable();
  }
  disablePush(): Promise<void> {
    return this.push.disable();
  }

  addUpload(upload: Upload): void {
    this.uploads.add(upload);
  }
  updateUpload(id: string, patch: Partial<Upload>): void {
    this.uploads.update(id, patch);
  }
  removeUpload(id: string): void {
    this.uploads.remove(id);
  }
  disableUploads(): void {
    this.uploads.disable();
  }

  setTheme(theme: Theme): void {
    this.preferences.setTheme(theme);
  }

  /** The safety number with `userId` as last computed here (see showSafetyNumber). */
  safetyNumber(userId: string): SafetyNumberView | undefined {
    return this.safety.view(userId);
  }
  safetyStatus(userId: string): SafetyStatus {
    return this.safety.status(userId);
  }
  showSafetyNumber(userId: string): Promise<void> {
    return this.safety.refresh(userId);
  }
  /** Re-checks the verified members of a conversation (as it opens). */
  checkSafetyNumbers(userIds: readonly string[]): Promise<void> {
    return this.safety.check(userIds);
  }
  markVerified(userId: string): Promise<void> {
    return this.safety.verify(userId);
  }
  clearVerified(userId: string): Promise<void> {
    return this.safety.clear(userId);
  }

  /** The page is shown again: a verified member of the open chat may have changed devices meanwhile. */
  private checkOpenChat(): void {
    const route = this.state.route;
    const conv = route.name === "chat" ? this.state.conversations.get(route.id) : undefined;
    if (conv) void this.safety.check(conv.members.map((m) => m.userId));
  }
}
