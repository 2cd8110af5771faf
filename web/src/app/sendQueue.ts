// Sending, as one story: `sendText`/`sendMedia` add the message to the outbox (stored before any
// attempt), `flush` asks the outbox to deliver what is due, and `deliver` takes one item over the
// open conversation's socket when it is live (`transmit`; its ack or error `settle`s the attempt)
// or by POST /send. Both paths are idempotent by clientMsgId, so switching path between attempts
// cannot duplicate a message. A timer flushes again when the earliest backoff ends.
import type { Action, MediaRef, Message } from "../../../protocol";
import { ApiRequestError, NetworkError, Schemas, type Api } from "../lib/api";
import { E2eeUnavailable } from "../e2ee/errors";
import { Outbox, type OutboxItem, type OutboxStorage, type SendOutcome } from "../state/offlineOutbox";
import type { Browser } from "./browser";
import type { StoreCore } from "./storeCore";
import type { ChatsPort, ConnectionPort, E2eePort, TypingPort } from "./ports";

/** What a send may add to its text (docs/api.md, Message actions). */
export interface SendExtras {
  replyToSeq?: number;
  mentions?: string[];
}

const ACK_TIMEOUT_MS = 10_000;
const OFFLINE_RETRY_MS = 30_000;
/** A conversation whose group this device has not joined yet (its creator has not committed). */
const SEAL_RETRY_MS = 3_000;

export class SendQueue {
  private outbox: Outbox | null = null;
  private timer: unknown = null;
  /** Attempts on the socket waiting for their ack, by clientMsgId. */
  private readonly acks = new Map<string, (outcome: SendOutcome) => void>();

  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly browser: Pick<Browser, "clock" | "online">,
    private readonly deps: {
      connection: Pick<ConnectionPort, "liveFor" | "transmit">;
      chats: Pick<ChatsPort, "receive">;
      typing: Pick<TypingPort, "stop">;
      e2ee: Pick<E2eePort, "seal">;
    },
    private readonly newId?: () => string,
  ) {}

  /** Signed in: loads what a previous page left in the outbox. */
  async attach(storage: OutboxStorage): Promise<void> {
    const outbox = new Outbox(storage, { deliver: (item) => this.deliver(item) }, {
      now: () => this.browser.clock.now(),
      ...(this.newId ? { newId: this.newId } : {}),
      onChange: () => {
        this.core.state.outbox = this.outbox?.list() ?? [];
        this.core.emit();
      },
      onSent: (_item, message) => this.deps.chats.receive([message], "ack"),
    });
    this.outbox = outbox;
    await outbox.load();
  }

  /** Signed out. */
  detach(): void {
    this.outbox = null;
    if (this.timer !== null) this.browser.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  async sendText(conversationId: string, body: string, threadRootSeq: number | null, extras: SendExtras = {}): Promise<void> {
    const text = body.trim();
    if (!text || !this.outbox) return;
    this.deps.typing.stop(conversationId);
    await this.outbox.add({ conversationId, body: text, ...(threadRootSeq ? { threadRootSeq } : {}), ...extras });
    void this.flush();
  }

  /**
   * Another message's body and media into each conversation, marked forwarded: the media go by
   * id, and the server shares them into the conversation without an upload (docs/api.md).
   */
  async forward(message: Message, conversationIds: readonly string[]): Promise<void> {
    if (!this.outbox) return;
    for (const conversationId of conversationIds) {
      await this.outbox.add({
        conversationId,
        ...(message.body ? { body: message.body } : {}),
        ...(message.media.length > 0 ? { mediaIds: message.media.map((m) => m.id), media: message.media } : {}),
        forwarded: true,
      });
    }
    void this.flush();
  }

  async sendMedia(conversationId: string, media: MediaRef[], caption: string, threadRootSeq: number | null, extras: SendExtras = {}): Promise<void> {
    if (!this.outbox) return;
    await this.outbox.add({
      conversationId,
      mediaIds: media.map((m) => m.id),
      media,
      ...(caption.trim() ? { body: caption.trim() } : {}),
      ...(threadRootSeq ? { threadRootSeq } : {}),
      ...extras,
    });
    void this.flush();
  }

  /**
   * An edit, reaction or pin in an E2EE conversation: an encrypted message like any other, so it
   * goes through the outbox (stored first, sent in order after the messages written before it,
   * idempotent by its clientMsgId) and is sealed at send time.
   */
  async sendAction(conversationId: string, action: Action): Promise<void> {
    if (!this.outbox) return;
    await this.outbox.add({ conversationId, action });
    void this.flush();
  }

  async retry(clientMsgId: string): Promise<void> {
    await this.outbox?.retry(clientMsgId);
    void this.flush();
  }

  async discard(clientMsgId: string): Promise<void> {
    await this.outbox?.discard(clientMsgId);
  }

  /** Delivers what is due, then sets a timer for the earliest item still waiting. */
  async flush(): Promise<void> {
    const outbox = this.outbox;
    if (!outbox || !this.browser.online()) return;
    await outbox.flush();
    // A refused action has no bubble to offer Retry on: say so, and drop it.
    for (const item of outbox.list()) {
      if (!item.action || item.status !== "failed") continue;
      await outbox.discard(item.clientMsgId);
      this.core.notify(`That did not work${item.error ? `: ${item.error}` : "."}`);
    }
    if (this.timer !== null) this.browser.clock.clearTimeout(this.timer);
    this.timer = null;
    const next = outbox.nextAttemptAt();
    if (next !== null) this.timer = this.browser.clock.setTimeout(() => void this.flush(), Math.max(0, next - this.browser.clock.now()));
  }

  /** The browser is back online: what waits for its backoff goes now. */
  wentOnline(): void {
    void this.outbox?.resetBackoff().then(() => this.flush());
  }

  /** An ack or an error frame answered an attempt on the socket. */
  settle(clientMsgId: string, outcome: SendOutcome): void {
    this.acks.get(clientMsgId)?.(outcome);
  }

  /** The conversation socket closed: attempts waiting on it are retried. */
  socketClosed(): void {
    for (const resolve of this.acks.values()) resolve({ ok: false, retry: true, error: "socket closed", retryAfterMs: 0 });
    this.acks.clear();
  }

  /** One attempt at one outbox item. */
  private async deliver(item: OutboxItem): Promise<SendOutcome> {
    if (!this.browser.online()) return { ok: false, retry: true, error: "offline", retryAfterMs: OFFLINE_RETRY_MS };
    // An E2EE conversation's message is sealed now, at the group's current epoch: the outbox
    // keeps the plaintext (on this device only), so a message written offline is never sealed
    // for an epoch the group has left by the time it goes.
    let ciphertext: string | undefined;
    if (this.core.state.conversations.get(item.conversationId)?.e2ee) {
      try {
        ciphertext = await this.deps.e2ee.seal(item);
      } catch (err) {
        if (err instanceof E2eeUnavailable) return { ok: false, retry: false, error: err.message };
        return { ok: false, retry: true, error: err instanceof Error ? err.message : "not sealed", retryAfterMs: SEAL_RETRY_MS };
      }
    }
    const content = {
      clientMsgId: item.clientMsgId,
      ...(ciphertext !== undefined ? { ciphertext } : item.body !== undefined ? { body: item.body } : {}),
      ...(item.mediaIds !== undefined ? { mediaIds: item.mediaIds } : {}),
      ...(item.threadRootSeq !== undefined ? { threadRootSeq: item.threadRootSeq } : {}),
      // Beside a ciphertext too, so that a mentioned member can be notified (the sealed copy is
      // what members show); a reply's reference and a forward's mark travel sealed there.
      ...(item.mentions !== undefined && item.mentions.length > 0 ? { mentions: item.mentions } : {}),
      ...(ciphertext === undefined && item.replyToSeq !== undefined ? { replyToSeq: item.replyToSeq } : {}),
      ...(ciphertext === undefined && item.forwarded ? { forwarded: item.forwarded } : {}),
    };
    if (this.deps.connection.liveFor(item.conversationId)) {
      return new Promise<SendOutcome>((resolve) => {
        const clock = this.browser.clock;
        const timer = clock.setTimeout(() => done({ ok: false, retry: true, error: "no answer", retryAfterMs: 0 }), ACK_TIMEOUT_MS);
        const done = (outcome: SendOutcome) => {
          clock.clearTimeout(timer);
          this.acks.delete(item.clientMsgId);
          resolve(outcome);
        };
        this.acks.set(item.clientMsgId, done);
        if (!this.deps.connection.transmit(item.conversationId, { type: "send", ...content })) done({ ok: false, retry: true, error: "socket closed", retryAfterMs: 0 });
      });
    }
    try {
      const { message } = await this.api.call("POST", "/send", Schemas.message, { conversationId: item.conversationId, ...content });
      return { ok: true, message };
    } catch (err) {
      if (err instanceof NetworkError) return { ok: false, retry: true, error: "offline" };
      if (err instanceof ApiRequestError && (err.status === 429 || err.status >= 500)) {
        return { ok: false, retry: true, error: err.message, ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}) };
      }
      return { ok: false, retry: false, error: err instanceof Error ? err.message : "not sent" };
    }
  }
}
