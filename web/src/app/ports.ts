// What each slice of the store offers the others. A slice is given its neighbours as these
// interfaces, never as each other's classes, so the slices import this module and not one another
// (no import cycle), and a unit test hands a slice fakes of just the methods it calls.
import type { Conversation, ConversationClientFrame, ConversationSettings, Message, Presence, Receipt, User } from "../../../protocol";
import type { SearchResult } from "../lib/api";
import type { OutboxItem, SendOutcome } from "../state/offlineOutbox";
import type { Route } from "./route";
import type { ConvView } from "./storeCore";

/** How a message reached this page: its conversation's socket, an ack, the user socket, or sync. */
export type ReceivedVia = "chat" | "ack" | "user" | "sync";

export interface ChatsPort {
  receive(messages: Message[], via: ReceivedVia): void;
  refreshList(): Promise<void>;
  chatReady(id: string): void;
  chatReceipt(conversationId: string, receipt: Receipt): void;
  userReceipt(conversationId: string, receipt: Receipt): void;
  /** Messages this user deleted for themself (on any of their devices). */
  hidden(conversationId: string, seqs: number[]): Promise<void>;
  conversationChanged(conv: Conversation): void;
  /** This user's settings of a conversation, changed on one of their devices. */
  settingsChanged(conversationId: string, settings: ConversationSettings): void;
  view(id: string): ConvView;
  sorted(): Conversation[];
  otherMember(conv: Conversation): string | null;
  title(conv: Conversation): string;
}

export interface ConnectionPort {
  connectChat(id: string): void;
  closeChat(): void;
  chatFor(conversationId: string): boolean;
  liveFor(conversationId: string): boolean;
  transmit(conversationId: string, frame: ConversationClientFrame): boolean;
  transmitLive(conversationId: string, frame: ConversationClientFrame): boolean;
  ensureCursor(): Promise<void>;
  watchPresence(userIds: string[]): void;
}

export interface LocalCachePort {
  scheduleSave(): void;
  saveNow(): void;
  messages(conversationId: string): Promise<Message[]>;
  writeMessages(conversationId: string, messages: readonly Message[]): Promise<void>;
  receipts(conversationId: string): Promise<Receipt[]>;
  forget(conversationId: string): void;
}

export interface NavigationPort {
  navigate(route: Route, replace?: boolean): void;
}

export interface PeoplePort {
  /** `again`: fetch them even if known (a name or photo may have changed). */
  ensure(ids: string[], again?: boolean): void;
  name(id: string): string;
}

export interface PresenceWatchPort {
  watch(): void;
  fetch(ids: string[]): void;
  received(p: Presence): void;
}

export interface PushNotificationsPort {
  incoming(conv: Conversation, message: Message): void;
}

export interface SendQueuePort {
  flush(): Promise<void>;
  settle(clientMsgId: string, outcome: SendOutcome): void;
  socketClosed(): void;
  wentOnline(): void;
}

export interface SessionPort {
  end(message: string | null): Promise<void>;
  /** The signed-in user's profile changed (here or as the server answered). */
  userChanged(user: User): void;
}

export interface ThreadsPort {
  received(conversationId: string, messages: Message[]): void;
}

export interface TypingPort {
  received(conversationId: string, userId: string, on: boolean): void;
  stop(conversationId: string): void;
}

export interface E2eePort {
  conversations(convs: Conversation[]): void;
  received(messages: Message[]): void;
  created(conv: Conversation): Promise<void>;
  membersAdded(conversationId: string, userIds: string[]): void;
  membersRemoved(conversationId: string, userIds: string[]): void;
  welcome(conversationId: string): void;
  keyPackagesLow(): void;
  seal(item: OutboxItem): Promise<string>;
  hidden(conversationId: string, seqs: number[]): void;
}

export interface ComposePort {
  /** Messages of a conversation arrived (any path): a pin or delete changes its pins list. */
  received(conversationId: string, messages: Message[]): void;
}

/**
 * Search in E2EE conversations, whose text only the devices hold: the results this device finds,
 * in the server's result shape (`GET /search`), newest first; every conversation, or one.
 */
export interface LocalSearchPort {
  localSearch(query: string, conversationId?: string): Promise<SearchResult[]>;
}
