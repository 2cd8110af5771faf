// Conversations: the list, each conversation's timeline (history, older pages, gaps), receipts
// (ours sent as delivered/read, others' applied forward only), and `receive`, the one entry for
// messages from every path (conversation socket, ack, user socket, sync).
import type { Action, Conversation, ConversationSettings, ConversationSettingsBody, Message, Receipt } from "../../../protocol";
import { ApiRequestError, Schemas, isTransient, qs, type Api } from "../lib/api";
import { shownUserName } from "../state/format";
import { applyReceipt } from "../state/receipts";
import { groupChanges } from "../state/groupEvents";
import { byConversation } from "../state/sync";
import { findGaps, isPreviewable, mergeMessages, opensGap, resumePoint, withoutContent } from "../state/timeline";
import type { Browser } from "./browser";
import type { ConvView, StoreCore } from "./storeCore";
import type { ComposePort, ConnectionPort, E2eePort, LocalCachePort, NavigationPort, PeoplePort, PresenceWatchPort, PushNotificationsPort, ReceivedVia, ThreadsPort } from "./ports";

const MEMBERS_LOOKED_UP = 50;
const PAGE = 50;
/** Conversations per page of the list. */
const LIST_PAGE = 50;
const NOT_A_MEMBER = "This conversation does not exist or you are not a member.";

export interface ChatsDeps {
  cache: Pick<LocalCachePort, "scheduleSave" | "messages" | "writeMessages" | "receipts" | "forget">;
  connection: Pick<ConnectionPort, "connectChat" | "closeChat" | "chatFor" | "transmitLive" | "ensureCursor">;
  people: Pick<PeoplePort, "ensure" | "name">;
  presence: Pick<PresenceWatchPort, "watch" | "fetch">;
  push: Pick<PushNotificationsPort, "incoming">;
  navigation: Pick<NavigationPort, "navigate">;
  threads: Pick<ThreadsPort, "received">;
  e2ee: Pick<E2eePort, "conversations" | "received" | "created" | "membersAdded" | "membersRemoved" | "hidden">;
  compose: Pick<ComposePort, "received">;
}

/** Older pages a jump loads at most (of up to 500 messages each) before it gives up. */
const JUMP_PAGES = 20;

/** A member now: not a former one, and listed among the members. */
function isMember(conv: Conversation, me: string): boolean {
  return conv.leftSeq === undefined && conv.members.some((m) => m.userId === me);
}

export class Chats {
  /** The receipts this page sent, per conversation: never the same watermark twice. */
  private readonly deliveredSent = new Map<string, number>();
  private readonly readSent = new Map<string, number>();
  /** The latest list refresh: an older one still paging stops. */
  private listRun = 0;

  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly browser: Pick<Browser, "visible" | "online">,
    private readonly deps: ChatsDeps,
  ) {}

  private get state() {
    return this.core.state;
  }

  // --- the list -----------------------------------------------------------------------------------

  /** The list: the pinned first, in the order pinned, then the rest by newest activity. */
  sorted(): Conversation[] {
    const pinned = (c: Conversation) => c.settings?.pinnedAt ?? null;
    return [...this.state.conversations.values()].sort((a, b) => {
      const [pa, pb] = [pinned(a), pinned(b)];
      if (pa !== null || pb !== null) return pa === null ? 1 : pb === null ? -1 : pa - pb;
      return (b.lastMessageAt ?? b.createdAt) - (a.lastMessageAt ?? a.createdAt);
    });
  }

  /**
   * The list, in pages of LIST_PAGE: the first (the newest activity) is shown as it arrives, over
   * what the cache or the last load left below it; the rest follow in the background, and the
   * last page's arrival replaces the list with what the pages held (a conversation no longer
   * listed goes). A newer refresh (a reconnect) supersedes one still paging.
   */
  async refreshList(): Promise<void> {
    if (!this.state.session) return;
    const run = ++this.listRun;
    try {
      const next = new Map<string, Conversation>();
      let cursor: string | undefined;
      for (let first = true; ; first = false) {
        const page = await this.api.call("GET", `/conversations${qs({ limit: LIST_PAGE, cursor })}`, Schemas.conversations);
        if (run !== this.listRun) return;
        for (const conv of page.conversations) next.set(conv.id, this.keepLocalProgress(conv));
        const last = !page.hasMore || !page.cursor;
        this.state.conversations = last ? new Map(next) : new Map([...this.state.conversations, ...next]);
        this.listed(page.conversations);
        if (first) {
          this.state.listLoaded = true;
          await this.deps.connection.ensureCursor();
        }
        this.deps.cache.scheduleSave();
        this.core.emit();
        if (last) return;
        cursor = page.cursor ?? undefined;
      }
    } catch (err) {
      if (!isTransient(err)) throw err;
    }
  }

  /** What follows a page of the list: its people, its delivered receipts, presence and E2EE state. */
  private listed(conversations: Conversation[]): void {
    // Again each time: someone's name or photo may have changed since (nothing pushes that).
    this.deps.people.ensure(conversations.flatMap((c) => c.members.slice(0, MEMBERS_LOOKED_UP).map((m) => m.userId)), true);
    for (const conv of conversations) {
      if (conv.lastMessage && conv.lastMessage.senderId !== this.core.me) this.sendDelivered(conv.id, conv.lastSeq);
    }
    this.deps.presence.watch();
    this.deps.e2ee.conversations(conversations);
  }

  /** A page read before a frame we applied may be older than it; never step back from what we saw. */
  private keepLocalProgress(conv: Conversation): Conversation {
    const local = this.state.conversations.get(conv.id);
    if (!local) return conv;
    // A `conversation` frame carries no settings (they are this user's, not the conversation's).
    let out = conv.settings === undefined && local.settings !== undefined ? { ...conv, settings: local.settings } : conv;
    if (local.lastSeq > out.lastSeq) out = { ...out, lastSeq: local.lastSeq, lastMessage: local.lastMessage, lastMessageAt: local.lastMessageAt };
    if (local.readSeq > out.readSeq) {
      const caughtUp = local.readSeq >= out.lastSeq;
      out = { ...out, readSeq: local.readSeq, unread: caughtUp ? 0 : out.unread, threadUnread: caughtUp ? 0 : out.threadUnread };
    }
    return out;
  }

  private upsert(conv: Conversation): void {
    this.state.conversations.set(conv.id, this.keepLocalProgress(conv));
    this.deps.people.ensure(conv.members.slice(0, MEMBERS_LOOKED_UP).map((m) => m.userId));
    this.deps.e2ee.conversations([conv]);
    this.deps.cache.scheduleSave();
    this.core.emit();
  }

  private forget(id: string): void {
    this.state.conversations.delete(id);
    this.state.views.delete(id);
    this.deps.cache.forget(id);
    this.deps.cache.scheduleSave();
    this.core.emit();
  }

  /**
   * A conversation frame on the user socket: changed, joined, or left. A conversation we were
   * removed from (or left) stays, readable up to then (`leftSeq`). Added back while it is open,
   * the chat reopens: its socket closed for good at the removal.
   */
  conversationChanged(conv: Conversation): void {
    const before = this.state.conversations.get(conv.id);
    const member = isMember(conv, this.core.me);
    if (!member && conv.leftSeq === undefined) {
      this.forget(conv.id);
      return;
    }
    const rejoined = member && (before?.leftSeq !== undefined || this.state.removedFrom === conv.id);
    // A membership ending or starting again is no progress to keep: the server's view is the truth.
    // This user's settings are not the conversation's, and the frame does not carry them.
    if (rejoined || !member) this.state.conversations.delete(conv.id);
    this.upsert(conv.settings === undefined && before?.settings !== undefined ? { ...conv, settings: before.settings } : conv);
    if (!rejoined) return;
    this.view(conv.id).loaded = false;
    const r = this.state.route;
    if (r.name === "chat" && r.id === conv.id) void this.open(conv.id);
  }

  title(conv: Conversation): string {
    if (conv.type === "group") return conv.title ?? "Group";
    const other = this.otherMember(conv);
    if (!other) return "Saved messages";
    const user = this.state.users.get(other);
    return user ? shownUserName(user, this.state.users.values()) : "…";
  }

  /** The other person in a direct conversation. */
  otherMember(conv: Conversation): string | null {
    return conv.members.find((m) => m.userId !== this.core.me)?.userId ?? null;
  }

  private opened(conv: Conversation): void {
    this.upsert(conv);
    this.deps.navigation.navigate({ name: "chat", id: conv.id, thread: null, info: false }, true);
  }

  /** `e2ee`: end-to-end encrypted, chosen at creation (a separate conversation from the plaintext one). */
  async startDirect(userId: string, e2ee = false): Promise<void> {
    const { conversation } = await this.api.call("POST", "/conversations", Schemas.conversation, { type: "direct", userId, ...(e2ee ? { e2ee } : {}) });
    if (e2ee) void this.deps.e2ee.created(conversation);
    this.opened(conversation);
  }

  async createGroup(title: string, memberIds: string[], e2ee = false): Promise<void> {
    const { conversation } = await this.api.call("POST", "/group/create", Schemas.conversation, { title, memberIds, ...(e2ee ? { e2ee } : {}) });
    if (e2ee) void this.deps.e2ee.created(conversation);
    this.opened(conversation);
  }

  async addMembers(conversationId: string, userIds: string[]): Promise<void> {
    const { conversation } = await this.api.call("POST", `/conversations/${encodeURIComponent(conversationId)}/members`, Schemas.conversation, { userIds });
    this.upsert(conversation);
    this.deps.e2ee.membersAdded(conversationId, userIds);
    this.deps.presence.watch();
  }

  async removeMember(conversationId: string, userId: string): Promise<void> {
    await this.api.call("DELETE", `/conversations/${encodeURIComponent(conversationId)}/members/${encodeURIComponent(userId)}`, Schemas.none);
    if (userId === this.core.me) {
      // The group stays in the list, readable up to our leaving (docs/api.md, former members).
      // Back to the list from the panel we left by, unless the user went elsewhere meanwhile.
      const r = this.state.route;
      if (r.name === "chat" && r.id === conversationId && r.info) this.deps.navigation.navigate({ name: "list" }, true);
      try {
        const { conversation } = await this.api.call("GET", `/conversations/${encodeURIComponent(conversationId)}`, Schemas.conversation);
        this.conversationChanged(conversation);
      } catch {
        this.forget(conversationId);
      }
      return;
    }
    const conv = this.state.conversations.get(conversationId);
    if (conv) this.upsert({ ...conv, members: conv.members.filter((m) => m.userId !== userId) });
    this.deps.e2ee.membersRemoved(conversationId, [userId]);
  }

  // --- group settings (docs/api.md, Group settings) -----------------------------------------------

  /** A group's title and description (admins); the answer is the conversation as it now is. */
  async updateGroupInfo(conversationId: string, change: { title?: string; description?: string | null }): Promise<void> {
    const { conversation } = await this.api.call("PATCH", `/conversations/${encodeURIComponent(conversationId)}`, Schemas.conversation, change);
    this.upsert(conversation);
  }

  /** Makes a member an admin, or a member again (admins). */
  async setRole(conversationId: string, userId: string, role: "admin" | "member"): Promise<void> {
    const { conversation } = await this.api.call(
      "PUT",
      `/conversations/${encodeURIComponent(conversationId)}/members/${encodeURIComponent(userId)}`,
      Schemas.conversation,
      { role },
    );
    this.upsert(conversation);
  }

  // --- this user's settings of a conversation: mute, archive, pin (docs/api.md) --------------------

  /** Changes them on the server; every device of this user then hears `conversationSettings`. */
  async changeSettings(conversationId: string, change: ConversationSettingsBody): Promise<void> {
    const { settings } = await this.api.call("PUT", `/conversations/${encodeURIComponent(conversationId)}/settings`, Schemas.conversationSettings, change);
    this.settingsChanged(conversationId, settings);
  }

  /** The settings as stored now (the answer to our change, or a frame from another device). */
  settingsChanged(conversationId: string, settings: ConversationSettings): void {
    const conv = this.state.conversations.get(conversationId);
    if (!conv) return;
    this.state.conversations.set(conversationId, { ...conv, settings });
    this.deps.cache.scheduleSave();
    this.core.emit();
  }

  // --- message actions (docs/api.md, Message actions) -----------------------------------------------

  /** An edit, delete for everyone, reaction or pin; the event comes back like a sent message. */
  async act(conversationId: string, action: Action): Promise<void> {
    const { message } = await this.api.call("POST", `/conversations/${encodeURIComponent(conversationId)}/actions`, Schemas.message, {
      clientMsgId: crypto.randomUUID(),
      action,
    });
    this.receive([message], "ack");
  }

  /** Delete for me: this user's devices stop showing the message. */
  async hideForMe(conversationId: string, seq: number): Promise<void> {
    await this.api.call("POST", `/conversations/${encodeURIComponent(conversationId)}/hidden`, Schemas.none, { seqs: [seq] });
    await this.hidden(conversationId, [seq]);
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

  /** Shows the cached copy at once, then the history, receipts and the live socket. */
  async open(id: string): Promise<void> {
    this.deps.connection.closeChat();
    this.state.removedFrom = null;
    this.state.atBottom = true;
    const view = this.view(id);
    let conv = this.state.conversations.get(id);
    if (view.messages.length === 0) {
      const cached = await this.deps.cache.messages(id);
      if (cached.length > 0 && view.messages.length === 0) view.messages = cached;
    }
    if (view.receipts.size === 0) for (const r of await this.deps.cache.receipts(id)) view.receipts = applyReceipt(view.receipts, r);
    if (!conv) {
      try {
        conv = (await this.api.call("GET", `/conversations/${encodeURIComponent(id)}`, Schemas.conversation)).conversation;
        this.upsert(conv);
      } catch (err) {
        if (err instanceof ApiRequestError && err.status === 404) {
          view.error = NOT_A_MEMBER;
          this.core.emit();
          return;
        }
      }
    }
    view.firstUnreadSeq = conv && conv.unread > 0 ? conv.readSeq + 1 : null;
    this.core.emit();
    if (!view.loaded) await this.loadHistory(id, conv ?? null);
    const jump = this.state.jump;
    if (jump?.conversationId === id && view.loaded) await this.reach(id, jump.seq);
    if (this.state.route.name !== "chat" || this.state.route.id !== id) return;
    // A former member reads what the history holds; nothing live comes any more.
    if (conv && !isMember(conv, this.core.me)) return;
    void this.loadReceipts(id);
    this.deps.connection.connectChat(id);
    if (conv) this.deps.presence.fetch(conv.members.map((m) => m.userId));
    this.deps.presence.watch();
  }

  private async loadHistory(id: string, conv: Conversation | null): Promise<void> {
    const view = this.view(id);
    try {
      // With unread messages, start a little before the first one so "jump to first unread" has
      // context; otherwise the latest page. The socket replays anything after what we hold.
      const query = conv && conv.unread > 0 && conv.unread <= 200 ? qs({ after: Math.max(0, conv.readSeq - 20), limit: 250 }) : qs({ limit: PAGE });
      const page = await this.api.call("GET", `/conversations/${encodeURIComponent(id)}/messages${query}`, Schemas.history);
      let messages = mergeMessages(view.messages, page.messages);
      const gaps = findGaps(messages);
      if (gaps.length > 0) {
        // The cached copy and the fresh page do not meet: keep the fresh, contiguous part.
        const lastGapEnd = gaps[gaps.length - 1]![1];
        messages = messages.filter((m) => m.seq > lastGapEnd);
      }
      view.messages = messages;
      view.hasMoreBefore = (messages[0]?.seq ?? 1) > this.firstReadable(id);
      view.loaded = true;
      view.error = null;
      this.deps.cache.scheduleSave();
    } catch (err) {
      if (err instanceof ApiRequestError && err.status === 404) view.error = NOT_A_MEMBER;
      else if (view.messages.length === 0) view.error = this.browser.online() ? "Could not load messages." : "You are offline.";
    }
    this.core.emit();
  }

  async loadOlder(id: string): Promise<void> {
    const view = this.view(id);
    const first = view.messages[0];
    if (!first || !view.hasMoreBefore || view.loadingOlder) return;
    view.loadingOlder = true;
    this.core.emit();
    try {
      const page = await this.api.call("GET", `/conversations/${encodeURIComponent(id)}/messages${qs({ before: first.seq, limit: PAGE })}`, Schemas.history);
      view.messages = mergeMessages(view.messages, page.messages);
      view.hasMoreBefore = page.hasMore && (view.messages[0]?.seq ?? 1) > 1;
    } catch {
      // Offline: the sentinel asks again when it scrolls into view.
    } finally {
      view.loadingOlder = false;
      this.core.emit();
    }
  }

  /**
   * Shows a message in context: the view scrolls to it and highlights it (ChatView) once it holds
   * it, loading older pages down to it first. A view not loaded yet is reached by `open`.
   */
  async jumpTo(id: string, seq: number): Promise<void> {
    this.state.jump = { conversationId: id, seq };
    this.core.emit();
    if (this.view(id).loaded) await this.reach(id, seq);
  }

  /** The view shows the jump (or it was given up): nothing left to do. */
  jumped(): void {
    this.state.jump = null;
    this.core.emit();
  }

  /**
   * Loads older pages (`before=`) until the view holds `seq`, keeping it contiguous, so the
   * message is shown with what came after it. Whether it is held.
   */
  async reach(id: string, seq: number): Promise<boolean> {
    const view = this.view(id);
    const found = () => view.messages.some((m) => m.seq === seq);
    for (let i = 0; i < JUMP_PAGES && !found(); i++) {
      const first = view.messages[0];
      if (!first || first.seq < seq || !view.hasMoreBefore) break;
      view.loadingOlder = true;
      this.core.emit();
      try {
        // Down to the target and a little before it, for context.
        const limit = Math.min(500, first.seq - seq + 10);
        const page = await this.api.call("GET", `/conversations/${encodeURIComponent(id)}/messages${qs({ before: first.seq, limit })}`, Schemas.history);
        view.messages = mergeMessages(view.messages, page.messages);
        view.hasMoreBefore = page.hasMore && (view.messages[0]?.seq ?? 1) > 1;
      } catch {
        break;
      } finally {
        view.loadingOlder = false;
        this.core.emit();
      }
    }
    if (found()) return true;
    if (this.state.jump?.conversationId === id && this.state.jump.seq === seq) {
      this.state.jump = null;
      this.core.notify("That message is no longer available.");
    }
    return false;
  }

  private async loadReceipts(id: string): Promise<void> {
    try {
      const { receipts } = await this.api.call("GET", `/conversations/${encodeURIComponent(id)}/receipts`, Schemas.receipts);
      const view = this.view(id);
      for (const r of receipts) view.receipts = applyReceipt(view.receipts, r);
      this.deps.cache.scheduleSave();
      this.core.emit();
    } catch {
      // Receipts come again with the socket's receipt frames.
    }
  }

  /** The conversation socket said ready: its replay filled everything after what we held. */
  chatReady(id: string): void {
    const view = this.view(id);
    // The view is current even if the history fetch failed (opened offline, from the cache).
    if (!view.loaded) {
      view.loaded = true;
      view.hasMoreBefore = (view.messages[0]?.seq ?? 1) > this.firstReadable(id);
      view.error = null;
    }
    // A read or delivered frame may have died with the last socket; watermarks are idempotent.
    this.readSent.delete(id);
    this.deliveredSent.delete(id);
    // Receipts that moved while the socket was down are not replayed: fetch them.
    void this.loadReceipts(id);
    this.markReadIfViewing();
  }

  // --- incoming messages --------------------------------------------------------------------------

  /**
   * Every message from every path (conversation socket, ack, user socket, sync) comes through
   * here: merged by seq, so a message seen twice is shown once, in order.
   */
  receive(messages: Message[], via: ReceivedVia): void {
    this.deps.e2ee.received(messages);
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
          if (this.deps.connection.chatFor(conversationId)) void this.fillGap(conversationId);
          else view.loaded = false;
        } else {
          view.messages = mergeMessages(view.messages, fresh);
        }
      }
      this.deps.threads.received(conversationId, list);
      this.deps.compose.received(conversationId, list);
      const last = list[list.length - 1]!;
      if (conv) {
        // Counted like the server's `unread` and `threadUnread` (docs/api.md): others' messages,
        // top-level and thread replies apart, system messages, MLS commits and actions in neither.
        const fromOthers = list.filter((m) => m.senderId !== this.core.me && m.seq > conv.lastSeq && m.kind !== "system" && m.kind !== "mls.commit" && m.kind !== "action");
        const replies = fromOthers.filter((m) => m.threadRootSeq !== null).length;
        // A rename or a role change shows with its message (before lastSeq moves past it).
        const changes = groupChanges(conv, list);
        if (changes) Object.assign(conv, changes);
        if (last.seq >= conv.lastSeq) {
          conv.lastSeq = last.seq;
          // A commit or an action moves no list order, as on the server; a thread reply does (it
          // is activity), but only a top-level message is the preview.
          const active = list.filter((m) => m.kind !== "mls.commit" && m.kind !== "action").at(-1);
          if (active) conv.lastMessageAt = active.createdAt;
          const shown = list.filter(isPreviewable).at(-1);
          if (shown) conv.lastMessage = shown;
        }
        if (fromOthers.length > 0 && !this.isViewing(conversationId)) {
          conv.unread += fromOthers.length - replies;
          conv.threadUnread += replies;
        }
        // A message that mentions us is the one to notify: a muted conversation still shows it.
        const notified = fromOthers.findLast((m) => m.mentions?.includes(this.core.me)) ?? fromOthers.at(-1);
        if (notified && via !== "ack") this.deps.push.incoming(conv, notified);
      } else if (via === "user" || via === "sync") {
        // A conversation we have not seen yet (someone started it with us).
        void this.refreshList();
      }
      if (list.some((m) => m.senderId !== this.core.me)) {
        if (this.isViewing(conversationId)) this.markReadIfViewing();
        else this.sendDelivered(conversationId, last.seq);
      }
    }
    this.deps.cache.scheduleSave();
    this.core.emit();
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
      this.deps.cache.scheduleSave();
      this.core.emit();
    } catch {
      view.loaded = false;
    }
  }

  // --- receipts -----------------------------------------------------------------------------------

  /**
   * Messages this user deleted for themself (here or on another device): shown without content.
   * The change is drawn once the offline cache's write is stored, so a reload right after cannot
   * show their text again.
   */
  async hidden(conversationId: string, seqs: number[]): Promise<void> {
    const hide = new Set(seqs);
    this.deps.e2ee.hidden(conversationId, seqs);
    const hideIn = (messages: readonly Message[]): Message[] => messages.map((m) => (hide.has(m.seq) && !m.hidden ? withoutContent(m) : m));
    const view = this.state.views.get(conversationId);
    this.previewWithout(conversationId, hide, view);
    const held = view?.loaded ? view.messages : await this.deps.cache.messages(conversationId);
    if (!held.some((m) => hide.has(m.seq) && !m.hidden)) {
      this.core.emit();
      return;
    }
    await this.deps.cache.writeMessages(conversationId, hideIn(held)).catch(() => undefined);
    if (!view) return;
    // Messages may have arrived during the write, and a cache save may have written the view as
    // it was: hide in what the view holds now, and save again.
    view.messages = hideIn(view.messages);
    this.deps.cache.scheduleSave();
    this.core.emit();
  }

  /**
   * A hidden preview gives way to the latest message before it that the view holds, as the
   * server's list does; with no view to look in, the preview just loses its content.
   */
  private previewWithout(conversationId: string, hide: Set<number>, view: ConvView | undefined): void {
    const conv = this.state.conversations.get(conversationId);
    const last = conv?.lastMessage;
    if (!conv || !last || !hide.has(last.seq)) return;
    const earlier = view?.loaded
      ? view.messages.findLast((m) => m.seq < last.seq && !m.hidden && !hide.has(m.seq) && isPreviewable(m))
      : undefined;
    conv.lastMessage = earlier ?? withoutContent(last);
    this.deps.cache.scheduleSave();
  }

  /** A receipt frame on the conversation socket. */
  chatReceipt(conversationId: string, receipt: Receipt): void {
    const view = this.view(conversationId);
    view.receipts = applyReceipt(view.receipts, receipt);
    this.deps.cache.scheduleSave();
    this.core.emit();
  }

  /** A receipt on the user socket: for a loaded view, and ours from another device moves our read mark. */
  userReceipt(conversationId: string, receipt: Receipt): void {
    const view = this.state.views.get(conversationId);
    if (view) {
      view.receipts = applyReceipt(view.receipts, receipt);
      this.deps.cache.scheduleSave();
      this.core.emit();
    }
    if (receipt.userId !== this.core.me) return;
    const conv = this.state.conversations.get(conversationId);
    if (conv && receipt.readSeq > conv.readSeq) {
      conv.readSeq = receipt.readSeq;
      if (receipt.readSeq >= conv.lastSeq) {
        conv.unread = 0;
        conv.threadUnread = 0;
      }
      this.core.emit();
    }
  }

  /** The chat is open, the page visible and the list scrolled to the bottom. */
  isViewing(id: string): boolean {
    const r = this.state.route;
    return r.name === "chat" && r.id === id && this.browser.visible() && this.state.atBottom;
  }

  setAtBottom(atBottom: boolean): void {
    if (this.state.atBottom === atBottom) return;
    this.state.atBottom = atBottom;
    if (atBottom) this.markReadIfViewing();
    this.core.emit();
  }

  /** Sends `read` up to the newest message once it is on screen. */
  markReadIfViewing(): void {
    const r = this.state.route;
    if (r.name !== "chat" || !this.isViewing(r.id)) return;
    const view = this.state.views.get(r.id);
    const conv = this.state.conversations.get(r.id);
    const last = view?.messages[view.messages.length - 1];
    if (!view || !conv || !last) return;
    if (conv.unread > 0 || conv.threadUnread > 0 || conv.readSeq < last.seq) {
      conv.unread = 0;
      conv.threadUnread = 0;
      conv.readSeq = Math.max(conv.readSeq, last.seq);
      this.core.emit();
    }
    this.sendReceipt(r.id, "read", last.seq, this.readSent);
  }

  private sendDelivered(id: string, seq: number): void {
    this.sendReceipt(id, "delivered", seq, this.deliveredSent);
  }

  /** The first seq the server lets us read there: what came before our joining is not ours. */
  private firstReadable(id: string): number {
    return this.state.conversations.get(id)?.joinedSeq ?? 1;
  }

  /** Over the live conversation socket, else by POST; a failed POST is sent again next time. */
  private sendReceipt(id: string, type: "read" | "delivered", seq: number, sent: Map<string, number>): void {
    if ((sent.get(id) ?? 0) >= seq) return;
    // A former member sends no receipts (the server would refuse them).
    if (this.state.conversations.get(id)?.leftSeq !== undefined) return;
    sent.set(id, seq);
    if (this.deps.connection.transmitLive(id, { type, seq })) return;
    void this.api.call("POST", `/conversations/${encodeURIComponent(id)}/receipts`, Schemas.receipt, { type, seq }).catch(() => sent.delete(id));
  }
}
