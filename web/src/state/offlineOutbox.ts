// The offline outbox: messages written while offline (or while a send is in flight) are stored,
// shown as pending, and sent in order, each with the clientMsgId it got when it was written.
// Because the server deduplicates by (sender, clientMsgId), sending an item again after a crash,
// a timeout or a reload can never create a second message: "sent once" holds end to end.
// Storage and transport are interfaces: IndexedDB and the network in the app, memory in tests.
import type { Action, MediaRef, Message } from "../../../protocol";

export type OutboxStatus = "pending" | "sending" | "failed";

export interface OutboxItem {
  clientMsgId: string;
  conversationId: string;
  body?: string;
  threadRootSeq?: number;
  mediaIds?: string[];
  /** What the attachments look like, to show while pending; never sent (the server has them). */
  media?: MediaRef[];
  /** A message of the conversation this one replies to (docs/api.md, Message actions). */
  replyToSeq?: number;
  /** Members mentioned. */
  mentions?: string[];
  /** The body and media are another message's. */
  forwarded?: true;
  /** An edit, reaction or pin sent as an encrypted message of an E2EE conversation (not shown as one). */
  action?: Action;
  createdAt: number;
  status: OutboxStatus;
  attempts: number;
  error?: string;
  /** No attempt before this time (backoff after a transient failure). */
  notBefore: number;
}

export interface OutboxStorage {
  list(): Promise<OutboxItem[]>;
  put(item: OutboxItem): Promise<void>;
  delete(clientMsgId: string): Promise<void>;
}

export type SendOutcome =
  | { ok: true; message: Message }
  /** Offline, a timeout, 429 or 5xx: try again later with the same clientMsgId. */
  | { ok: false; retry: true; error: string; retryAfterMs?: number }
  /** The server refused the message (4xx): shown as failed until the user retries or discards it. */
  | { ok: false; retry: false; error: string };

export interface OutboxTransport {
  deliver(item: OutboxItem): Promise<SendOutcome>;
}

export interface OutboxOptions {
  now?: () => number;
  newId?: () => string;
  /** Delay before attempt n + 1 after n transient failures. */
  backoff?: (attempts: number) => number;
  onSent?: (item: OutboxItem, message: Message) => void;
  onChange?: () => void;
}

export interface NewOutboxItem {
  conversationId: string;
  body?: string;
  threadRootSeq?: number;
  mediaIds?: string[];
  media?: MediaRef[];
  replyToSeq?: number;
  mentions?: string[];
  forwarded?: true;
  action?: Action;
}

/** 1 s, 2 s, 4 s ... capped at 60 s, with jitter so many clients do not retry in step. */
export const defaultBackoff = (attempts: number): number =>
  Math.min(60_000, 1000 * 2 ** Math.max(0, attempts - 1)) * (0.75 + Math.random() * 0.5);

export class Outbox {
  private readonly items = new Map<string, OutboxItem>();
  private running: Promise<void> | null = null;
  private rerun = false;
  private readonly now: () => number;
  private readonly newId: () => string;
  private readonly backoff: (attempts: number) => number;

  constructor(
    private readonly storage: OutboxStorage,
    private readonly transport: OutboxTransport,
    private readonly options: OutboxOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.newId = options.newId ?? (() => crypto.randomUUID());
    this.backoff = options.backoff ?? defaultBackoff;
  }

  /**
   * Loads what a previous page left. An item that was "sending" may or may not have reached the
   * server; it goes back to pending, and its resend is answered with the stored message.
   */
  async load(): Promise<void> {
    for (const item of await this.storage.list()) {
      const restored = item.status === "sending" ? { ...item, status: "pending" as const } : item;
      this.items.set(item.clientMsgId, restored);
      if (restored !== item) await this.storage.put(restored);
    }
    this.changed();
  }

  /** Items in the order they were written, optionally for one conversation. */
  list(conversationId?: string): OutboxItem[] {
    return [...this.items.values()]
      .filter((i) => conversationId === undefined || i.conversationId === conversationId)
      .sort((a, b) => a.createdAt - b.createdAt || (a.clientMsgId < b.clientMsgId ? -1 : 1));
  }

  get(clientMsgId: string): OutboxItem | undefined {
    return this.items.get(clientMsgId);
  }

  /** Stores a new message before any attempt to send it: once this resolves it survives a reload. */
  async add(input: NewOutboxItem): Promise<OutboxItem> {
    const item: OutboxItem = {
      clientMsgId: this.newId(),
      conversationId: input.conversationId,
      ...(input.body !== undefined ? { body: input.body } : {}),
      ...(input.threadRootSeq !== undefined ? { threadRootSeq: input.threadRootSeq } : {}),
      ...(input.mediaIds !== undefined ? { mediaIds: input.mediaIds } : {}),
      ...(input.media !== undefined ? { media: input.media } : {}),
      ...(input.replyToSeq !== undefined ? { replyToSeq: input.replyToSeq } : {}),
      ...(input.mentions !== undefined && input.mentions.length > 0 ? { mentions: input.mentions } : {}),
      ...(input.forwarded ? { forwarded: input.forwarded } : {}),
      ...(input.action !== undefined ? { action: input.action } : {}),
      createdAt: this.now(),
      status: "pending",
      attempts: 0,
      notBefore: 0,
    };
    await this.save(item);
    return item;
  }

  /** A failed item goes back to pending with its original clientMsgId. */
  async retry(clientMsgId: string): Promise<void> {
    const item = this.items.get(clientMsgId);
    if (!item || item.status !== "failed") return;
    const { error: _error, ...rest } = item;
    await this.save({ ...rest, status: "pending", attempts: 0, notBefore: 0 });
  }

  async discard(clientMsgId: string): Promise<void> {
    const item = this.items.get(clientMsgId);
    if (!item || item.status === "sending") return;
    this.items.delete(clientMsgId);
    await this.storage.delete(clientMsgId);
    this.changed();
  }

  /** The earliest time a pending item waits for, or null: the caller sets a timer to flush then. */
  nextAttemptAt(): number | null {
    let next: number | null = null;
    for (const item of this.items.values()) {
      if (item.status === "pending" && item.notBefore > this.now()) {
        next = next === null ? item.notBefore : Math.min(next, item.notBefore);
      }
    }
    return next;
  }

  /** The connection is back: waiting items are due now, not at the end of their backoff. */
  async resetBackoff(): Promise<void> {
    for (const item of this.list()) {
      if (item.status === "pending" && item.notBefore > 0) await this.save({ ...item, notBefore: 0 });
    }
  }

  /**
   * Sends what is due, one item at a time per call, in write order. Calls while a flush runs
   * do not start a second sender (which could reorder messages); they make it run once more.
   */
  flush(): Promise<void> {
    if (this.running) {
      this.rerun = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.rerun = false;
          await this.flushOnce();
        } while (this.rerun);
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }

  private async flushOnce(): Promise<void> {
    // A conversation whose earlier message must wait holds back its later ones, so the other
    // side never sees them out of order. Failed items do not block: they need the user.
    const blocked = new Set<string>();
    for (const item of this.list()) {
      if (item.status !== "pending") continue;
      if (blocked.has(item.conversationId)) continue;
      if (item.notBefore > this.now()) {
        blocked.add(item.conversationId);
        continue;
      }
      const sending: OutboxItem = { ...item, status: "sending", attempts: item.attempts + 1 };
      await this.save(sending);
      let outcome: SendOutcome;
      try {
        outcome = await this.transport.deliver(sending);
      } catch (err) {
        outcome = { ok: false, retry: true, error: err instanceof Error ? err.message : String(err) };
      }
      if (!this.items.has(item.clientMsgId)) continue;
      if (outcome.ok) {
        this.items.delete(item.clientMsgId);
        await this.storage.delete(item.clientMsgId);
        this.changed();
        this.options.onSent?.(sending, outcome.message);
      } else if (outcome.retry) {
        blocked.add(item.conversationId);
        await this.save({
          ...sending,
          status: "pending",
          error: outcome.error,
          notBefore: this.now() + (outcome.retryAfterMs ?? this.backoff(sending.attempts)),
        });
      } else {
        await this.save({ ...sending, status: "failed", error: outcome.error });
      }
    }
  }

  private async save(item: OutboxItem): Promise<void> {
    this.items.set(item.clientMsgId, item);
    this.changed();
    await this.storage.put(item);
  }

  private changed(): void {
    this.options.onChange?.();
  }
}

/** An OutboxStorage in memory: for tests, and as the fallback when IndexedDB is unavailable. */
export class MemoryOutboxStorage implements OutboxStorage {
  readonly rows = new Map<string, OutboxItem>();
  async list(): Promise<OutboxItem[]> {
    return [...this.rows.values()].map((r) => ({ ...r }));
  }
  async put(item: OutboxItem): Promise<void> {
    this.rows.set(item.clientMsgId, { ...item });
  }
  async delete(clientMsgId: string): Promise<void> {
    this.rows.delete(clientMsgId);
  }
}
