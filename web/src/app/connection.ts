// The two sockets and catching up. The user socket (`/ws`) is open while signed in: it brings
// messages of every conversation, receipts, presence and list changes, and each `ready` starts a
// sync (`GET /messages?since=` from the cursor in the local store). The open conversation's
// socket brings its messages, acks, typing and receipts; `transmit` sends on it.
import {
  CLOSE,
  ConversationServerFrame,
  PROTOCOL_VERSION,
  UserServerFrame,
  type ConversationClientFrame,
  type UserClientFrame,
} from "../../../protocol";
import { ApiRequestError, Schemas, qs, type Api } from "../lib/api";
import type { LiveChannel } from "../lib/socket";
import { syncSince } from "../state/sync";
import { resumePoint } from "../state/timeline";
import type { Browser } from "./browser";
import type { StoreCore } from "./storeCore";
import type { ChatsPort, E2eePort, PresenceWatchPort, SendQueuePort, SessionPort, TypingPort } from "./ports";

const CURSOR_KEY = "cursor";
/** A new device's cursor: the list and history cover what came before. */
const NEW_CURSOR_LAG_MS = 60_000;
const SYNC_PAGE = 200;

export interface ConnectionDeps {
  chats: Pick<ChatsPort, "receive" | "refreshList" | "chatReady" | "chatReceipt" | "userReceipt" | "hidden" | "conversationChanged" | "settingsChanged" | "view">;
  presence: Pick<PresenceWatchPort, "watch" | "received">;
  sendQueue: Pick<SendQueuePort, "flush" | "settle" | "socketClosed" | "wentOnline">;
  typing: Pick<TypingPort, "received">;
  session: Pick<SessionPort, "end">;
  e2ee: Pick<E2eePort, "welcome" | "keyPackagesLow">;
}

export class Connection {
  private userSocket: LiveChannel<UserClientFrame> | null = null;
  private chatSocket: LiveChannel<ConversationClientFrame> | null = null;
  private chatSocketId: string | null = null;
  private syncing: Promise<void> | null = null;

  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly browser: Pick<Browser, "openSocket" | "online" | "clock">,
    private readonly deps: ConnectionDeps,
  ) {}

  private async ticket(): Promise<string> {
    return (await this.api.call("POST", "/auth/ticket", Schemas.ticket)).ticket;
  }

  // --- the user socket ----------------------------------------------------------------------------

  openUserSocket(): void {
    this.userSocket = this.browser.openSocket<UserServerFrame, UserClientFrame>({
      path: () => `/ws${qs({ v: PROTOCOL_VERSION })}`,
      ticket: () => this.ticket(),
      parse: (json) => {
        const r = UserServerFrame.safeParse(json);
        return r.success ? r.data : null;
      },
      onFrame: (frame) => this.onUserFrame(frame),
      onStatus: (status) => {
        if (status !== "open") this.core.state.connection = this.browser.online() ? "connecting" : "offline";
        this.core.emit();
      },
      onFinalClose: (code) => {
        if (code === CLOSE.unauthorized) void this.deps.session.end("You were signed out.");
        if (code === CLOSE.protocolVersion) this.core.notify("A new version of the app is available. Reload to update.");
      },
    });
  }

  /** Both sockets closed: signed out. */
  closeAll(): void {
    this.userSocket?.close();
    this.userSocket = null;
    this.closeChat();
  }

  private onUserFrame(frame: UserServerFrame): void {
    switch (frame.type) {
      case "ready":
        this.userReady();
        return;
      case "message":
        this.deps.chats.receive([frame.message], "user");
        return;
      case "presence":
        this.deps.presence.received({ userId: frame.userId, status: frame.status, lastSeen: frame.lastSeen });
        return;
      case "receipt": {
        const { type: _t, conversationId, ...receipt } = frame;
        this.deps.chats.userReceipt(conversationId, receipt);
        return;
      }
      case "conversation":
        this.deps.chats.conversationChanged(frame.conversation);
        return;
      case "mls.welcome":
        this.deps.e2ee.welcome(frame.conversationId);
        return;
      case "mls.keyPackagesLow":
        this.deps.e2ee.keyPackagesLow();
        return;
      case "hidden":
        void this.deps.chats.hidden(frame.conversationId, frame.seqs);
        return;
      case "devices":
        this.core.state.devicesChanged += 1;
        this.core.emit();
        return;
      case "conversationSettings":
        this.deps.chats.settingsChanged(frame.conversationId, frame.settings);
        return;
      case "error":
        return;
    }
  }

  /** Online: send the watch list, catch up, and send what waits in the outbox. */
  private userReady(): void {
    this.core.state.connection = "online";
    this.core.emit();
    this.deps.presence.watch();
    void this.sync();
    void this.deps.sendQueue.flush();
  }

  watchPresence(userIds: string[]): void {
    this.userSocket?.transmit({ type: "presence.watch", userIds });
  }

  /** The browser came back online: connect now rather than at the end of the backoff. */
  wentOnline(): void {
    this.core.state.connection = "connecting";
    this.userSocket?.reconnectNow();
    this.chatSocket?.reconnectNow();
    this.deps.sendQueue.wentOnline();
    void this.deps.chats.refreshList();
    this.core.emit();
  }

  wentOffline(): void {
    this.core.state.connection = "offline";
    this.core.emit();
  }

  // --- the open conversation's socket -------------------------------------------------------------

  /** Opens the conversation's socket, resuming after the contiguous window the view holds. */
  connectChat(id: string): void {
    if (this.chatSocketId === id && this.chatSocket) return;
    this.closeChat();
    this.chatSocketId = id;
    this.chatSocket = this.browser.openSocket<ConversationServerFrame, ConversationClientFrame>({
      // dedupe: this socket is our copy of the conversation; the user socket need not repeat it.
      path: () => `/conversations/${encodeURIComponent(id)}/ws${qs({ after: resumePoint(this.deps.chats.view(id).messages), dedupe: 1, v: PROTOCOL_VERSION })}`,
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
        if (code === CLOSE.removed) {
          this.core.state.removedFrom = id;
          this.core.notify("You are no longer a member of this conversation.");
          void this.deps.chats.refreshList();
        }
        if (code === CLOSE.unauthorized) void this.deps.session.end("You were signed out.");
      },
    });
  }

  closeChat(): void {
    this.chatSocket?.close();
    this.chatSocket = null;
    this.chatSocketId = null;
    this.setChatLive(false);
    this.deps.sendQueue.socketClosed();
  }

  get chatConnected(): boolean {
    return this.chatSocket !== null;
  }

  /** Whether this conversation's socket is open and has said ready. */
  liveFor(conversationId: string): boolean {
    return this.chatSocketId === conversationId && this.core.state.chatLive && this.chatSocket !== null;
  }

  /** Whether the conversation socket belongs to this conversation (live or reconnecting). */
  chatFor(conversationId: string): boolean {
    return this.chatSocketId === conversationId;
  }

  /** Sends on this conversation's socket if it is the open one and connected; false if not sent. */
  transmit(conversationId: string, frame: ConversationClientFrame): boolean {
    if (this.chatSocketId !== conversationId) return false;
    return this.chatSocket?.transmit(frame) ?? false;
  }

  /** Sends only once the socket has said ready (its replay is done). */
  transmitLive(conversationId: string, frame: ConversationClientFrame): boolean {
    return this.liveFor(conversationId) && this.transmit(conversationId, frame);
  }

  private setChatLive(live: boolean): void {
    if (this.core.state.chatLive === live) return;
    this.core.state.chatLive = live;
    this.core.emit();
  }

  private onChatFrame(id: string, frame: ConversationServerFrame): void {
    switch (frame.type) {
      case "ready":
        this.setChatLive(true);
        this.deps.chats.chatReady(id);
        void this.deps.sendQueue.flush();
        return;
      case "message":
        this.deps.chats.receive([frame.message], "chat");
        return;
      case "ack":
        this.deps.chats.receive([frame.message], "ack");
        this.deps.sendQueue.settle(frame.clientMsgId, { ok: true, message: frame.message });
        return;
      case "typing":
        this.deps.typing.received(id, frame.userId, frame.on);
        return;
      case "receipt":
        this.deps.chats.chatReceipt(id, frame);
        return;
      case "hidden":
        void this.deps.chats.hidden(frame.conversationId, frame.seqs);
        return;
      case "error":
        if (frame.ref) {
          const transient = frame.code === "internal" || frame.code === "rate_limited" || frame.code === "unavailable";
          this.deps.sendQueue.settle(frame.ref, transient ? { ok: false, retry: true, error: frame.message } : { ok: false, retry: false, error: frame.message });
        }
        return;
    }
  }

  // --- sync ---------------------------------------------------------------------------------------

  /** A new device starts its sync cursor now; the list and history cover what came before. */
  async ensureCursor(): Promise<void> {
    const db = this.core.db;
    if (!db || (await db.get(CURSOR_KEY)) === undefined) await db?.set(CURSOR_KEY, String(this.browser.clock.now() - NEW_CURSOR_LAG_MS));
  }

  /** Catches up with GET /messages?since= from the stored cursor: after a reconnect or a long absence. */
  sync(): Promise<void> {
    if (this.syncing || !this.core.state.session) return this.syncing ?? Promise.resolve();
    this.syncing = (async () => {
      try {
        const stored = await this.core.db?.get(CURSOR_KEY);
        const cursor = typeof stored === "string" ? stored : String(this.browser.clock.now() - NEW_CURSOR_LAG_MS);
        let sawUnknown = false;
        const { cursor: next } = await syncSince(
          cursor,
          (since) => this.api.call("GET", `/messages${qs({ since, limit: SYNC_PAGE })}`, Schemas.since),
          (messages) => {
            if (messages.some((m) => !this.core.state.conversations.has(m.conversationId))) sawUnknown = true;
            this.deps.chats.receive(messages, "sync");
          },
        );
        await this.core.db?.set(CURSOR_KEY, next);
        if (sawUnknown) await this.deps.chats.refreshList();
      } catch (err) {
        // Away longer than the server's sync window (409): the list and each conversation's
        // history have what sync no longer holds, so the cursor starts again as a new device's.
        // Anything else (offline, the server restarting): the next reconnect or tick tries again.
        if (err instanceof ApiRequestError && err.status === 409) {
          await this.core.db?.set(CURSOR_KEY, String(this.browser.clock.now() - NEW_CURSOR_LAG_MS));
          await this.deps.chats.refreshList().catch(() => undefined);
        }
      } finally {
        this.syncing = null;
      }
    })();
    return this.syncing;
  }
}
