// What the store needs from the browser, as one object passed in: storage, the clock, the address
// bar, network and page events, fetch, sockets, IndexedDB, notifications and push. The app gets
// `windowBrowser()` (windowBrowser.ts); unit tests build one from in-memory fakes (web/test/fakes.ts).
import type { Exclusive } from "../e2ee/lock";
import type { Fetch } from "../lib/api";
import type { LocalStore } from "../lib/idb";
import type { SocketFactory } from "../lib/socket";

/** The colour theme the settings choose; "system" follows the device. */
export type Theme = "system" | "light" | "dark";

/** localStorage's shape. */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(timer: unknown): void;
}

/** The address bar: what it shows, and new or replaced history entries. */
export interface AddressBar {
  pathname(): string;
  search(): string;
  push(path: string): void;
  replace(path: string): void;
}

/** online/offline, popstate, the page shown or hidden (visibilitychange), pagehide. */
export type PageEvent = "online" | "offline" | "popstate" | "visible" | "hidden" | "pagehide";

export interface PushSubscriptionHandle {
  endpoint: string;
  unsubscribe(): Promise<unknown>;
}

/** Notification, the service worker's registration and its PushManager. */
export interface Notifications {
  /** PushManager, a service worker and Notification all exist. */
  readonly pushSupported: boolean;
  /** null without a Notification API. */
  permission(): NotificationPermission | null;
  requestPermission(): Promise<NotificationPermission>;
  /** Subscribes through the service worker; returns the subscription's JSON for the server. */
  subscribe(applicationServerKey: Uint8Array<ArrayBuffer>): Promise<unknown>;
  subscription(): Promise<PushSubscriptionHandle | null>;
  show(title: string, options: NotificationOptions): void;
  /** A notification click asked (through the service worker) to open a conversation. */
  onOpen(listener: (conversationId: string) => void): void;
}

export interface LocalStores {
  open(userId: string): Promise<LocalStore>;
  destroy(userId: string): Promise<void>;
}

export interface Browser {
  storage: KeyValueStorage;
  clock: Clock;
  address: AddressBar;
  online(): boolean;
  visible(): boolean;
  on(event: PageEvent, listener: () => void): void;
  fetch: Fetch;
  openSocket: SocketFactory;
  localStores: LocalStores;
  notifications: Notifications;
  userAgent: string;
  applyTheme(theme: Theme): void;
  revokeObjectURL(url: string): void;
  /** Runs `fn` holding the named lock, shared by every tab of the browser profile (Web Locks). */
  exclusive: Exclusive;
}
