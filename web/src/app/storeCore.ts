// The state every slice shares and the plumbing around it: views read `state` and subscribe;
// every change calls `emit()`, which re-renders once per batch. `db` is the signed-in account's
// local store (IndexedDB in the app), null while signed out or where IndexedDB is unavailable.
import type { Conversation, Message, Presence, Receipt, User } from "../../../protocol";
import type { ConversationCrypto } from "../e2ee/client";
import type { SearchResult } from "../lib/api";
import type { LocalStore } from "../lib/idb";
import type { OutboxItem } from "../state/offlineOutbox";
import type { SafetyNumberView, VerifiedMark } from "../state/safetyNumbers";
import type { Clock, Theme } from "./browser";
import type { Route } from "./route";

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

/** A search's state (search.ts): the query as typed, the results of the last one run, its paging. */
export interface SearchView {
  query: string;
  /** Null: every conversation. */
  conversationId: string | null;
  /** The query the results are for. */
  ran: string;
  results: SearchResult[];
  cursor: string | null;
  hasMore: boolean;
  loading: boolean;
  error: string | null;
}

/** Server parts that land separately (issues 3, 4, 5); their controls stay hidden until seen. */
export interface Capabilities {
  presence: boolean;
  upload: boolean;
  push: boolean;
}


export interface AppState {
  session: Session | null;
  route: Route;
  conversations: Map<string, Conversation>;
  users: Map<string, User>;
  views: Map<string, ConvView>;
  /** E2EE conversations: what this device holds of each (web/src/app/e2ee.ts). */
  crypto: Map<string, ConversationCrypto>;
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
  /** The message each conversation's composer replies to, by seq (compose.ts). */
  replyTo: Map<string, number>;
  /** A message to scroll to and highlight once its conversation shows it (chats.ts, jumpTo). */
  jump: { conversationId: string; seq: number } | null;
  /** Each conversation's pinned messages, once fetched, the latest pin first (compose.ts). */
  pins: Map<string, Message[]>;
  /** The search screen or a conversation's search panel (search.ts); null while neither is open. */
  search: SearchView | null;
  /** Safety numbers (safetyNumbers.ts): the contacts verified on this device, and each number as last computed. */
  safety: { marks: Map<string, VerifiedMark>; numbers: Map<string, SafetyNumberView> };
  /** How many times the server said this account's device list changed: a list on screen fetches it again. */
  devicesChanged: number;
}

/** What belongs to the signed-in account: emptied at sign-out. */
export function accountState(): Pick<AppState, "conversations" | "users" | "views" | "crypto" | "thread" | "presence" | "outbox" | "uploads" | "listLoaded" | "safety" | "replyTo" | "jump" | "pins" | "search"> {
  return {
    conversations: new Map(), users: new Map(), views: new Map(), crypto: new Map(), thread: null, presence: new Map(), outbox: [], uploads: [], listLoaded: false, safety: { marks: new Map(), numbers: new Map() },
    replyTo: new Map(), jump: null, pins: new Map(), search: null,
  };
}

export function initialState(session: Session | null, route: Route, online: boolean, theme: Theme): AppState {
  return {
    session,
    route,
    ...accountState(),
    connection: online ? "connecting" : "offline",
    caps: { presence: false, upload: false, push: false },
    pushEnabled: false,
    notice: null,
    theme,
    chatLive: false,
    atBottom: true,
    removedFrom: null,
    devicesChanged: 0,
  };
}

const NOTICE_MS = 5000;

export class StoreCore {
  db: LocalStore | null = null;
  private readonly listeners = new Set<() => void>();
  private emitScheduled = false;
  private noticeId = 0;

  constructor(
    public state: AppState,
    private readonly clock: Clock,
  ) {}

  subscribe(listener: () => void): () => void {
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

  /** A short notice for a few seconds. */
  notify(text: string): void {
    this.state.notice = { text, id: ++this.noticeId };
    const id = this.noticeId;
    this.clock.setTimeout(() => {
      if (this.state.notice?.id === id) {
        this.state.notice = null;
        this.emit();
      }
    }, NOTICE_MS);
    this.emit();
  }

  /** The signed-in user's id, "" while signed out. */
  get me(): string {
    return this.state.session?.user.id ?? "";
  }
}
