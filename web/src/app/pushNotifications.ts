// Notifications: the push subscription (switched on and off in Settings, dropped at logout), and
// a notification for a message that arrives while the app is open but hidden, like a push would show.
import { isMuted, type Conversation, type Message } from "../../../protocol";
import { ApiRequestError, NetworkError, Schemas, qs, type Api } from "../lib/api";
import type { Browser } from "./browser";
import type { StoreCore } from "./storeCore";
import type { ChatsPort } from "./ports";

const PUSH_KEY = "push";

export function base64urlToBytes(s: string): Uint8Array<ArrayBuffer> {
  const b = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(new ArrayBuffer(b.length));
  for (let i = 0; i < b.length; i++) out[i] = b.charCodeAt(i);
  return out;
}

/** What to tell the person when our server could not be asked, or said no. */
function problem(err: unknown): string {
  if (err instanceof NetworkError) return "Could not reach the server. Try again when online.";
  if (err instanceof ApiRequestError) return `The server did not accept the subscription: ${err.message}`;
  return "Could not turn on notifications.";
}

export class PushNotifications {
  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly browser: Pick<Browser, "notifications" | "visible" | "clock">,
    private readonly deps: { chats: Pick<ChatsPort, "title"> },
  ) {}

  /** Whether push was on for this account on this device (from its local store). */
  async restore(): Promise<void> {
    this.core.state.pushEnabled = (await this.core.db?.get(PUSH_KEY)) === true;
  }

  async enable(): Promise<void> {
    const n = this.browser.notifications;
    const permission = await n.requestPermission();
    if (permission !== "granted") {
      this.core.notify("Notifications are blocked for this site.");
      return;
    }
    let subscription: unknown;
    try {
      const { publicKey } = await this.api.call("GET", "/push/vapid-public-key", Schemas.vapid);
      try {
        subscription = await n.subscribe(base64urlToBytes(publicKey));
      } catch (err) {
        // The browser's push service refused or is unreachable (no vendor push service, a
        // private window): nothing the network or the server can fix by trying again.
        const why = err instanceof Error ? err.message || err.name : "";
        this.core.notify(`This browser could not subscribe to notifications${why ? ` (${why})` : ""}.`);
        return;
      }
      await this.api.call("POST", "/push/subscriptions", Schemas.none, subscription);
    } catch (err) {
      this.core.notify(problem(err));
      return;
    }
    this.core.state.pushEnabled = true;
    await this.core.db?.set(PUSH_KEY, true);
    this.core.notify("Notifications are on.");
  }

  async disable(): Promise<void> {
    await this.unsubscribe();
    this.core.state.pushEnabled = false;
    await this.core.db?.set(PUSH_KEY, false);
    this.core.emit();
  }

  /** Drops this browser's subscription here and on the server. */
  async unsubscribe(): Promise<void> {
    const subscription = await this.browser.notifications.subscription();
    if (!subscription) return;
    await this.api.call("DELETE", `/push/subscriptions${qs({ endpoint: subscription.endpoint })}`, Schemas.none).catch(() => undefined);
    await subscription.unsubscribe();
  }

  /**
   * While the app is open but hidden, a new message shows a notification like a push would: none
   * in a conversation this user muted, but for a message that mentions them (as the server pushes).
   */
  incoming(conv: Conversation, message: Message): void {
    if (this.browser.visible() || this.browser.notifications.permission() !== "granted") return;
    if (message.kind === "system") return;
    if (isMuted(conv.settings, this.browser.clock.now()) && !message.mentions?.includes(this.core.me)) return;
    this.browser.notifications.show(this.deps.chats.title(conv), {
      // An E2EE message says nothing in a notification, as its push does not.
      body: conv.e2ee ? "New message" : message.body ?? (message.media.length > 0 ? "Attachment" : "New message"),
      tag: conv.id,
      data: { conversationId: conv.id },
      icon: "/icons/icon-192.png",
      badge: "/icons/badge-96.png",
    });
  }
}
