// The offline cache in the account's local store: the conversation list, users and each loaded
// conversation's latest messages and receipts, so the app opens (offline too) with what it showed last.
// Writes are gathered for half a second; `saveNow` starts a pending write at once (page hidden or gone).
import * as z from "zod";
import { Conversation as ConversationSchema, Message as MessageSchema, Receipt as ReceiptSchema, User as UserSchema, type Message, type Receipt } from "../../../protocol";
import type { Clock } from "./browser";
import type { StoreCore } from "./storeCore";

const CACHE_MESSAGES = 100;
const SAVE_DELAY_MS = 500;

const CachedConversations = z.array(ConversationSchema);
const CachedMessages = z.array(MessageSchema);
const CachedUsers = z.array(UserSchema);
const CachedReceipts = z.array(ReceiptSchema);

export class LocalCache {
  private saveTimer: unknown = null;

  constructor(
    private readonly core: StoreCore,
    private readonly clock: Clock,
  ) {}

  /** Fills the list and the users from the cache. */
  async load(): Promise<void> {
    const db = this.core.db;
    if (!db) return;
    const [convs, users] = await Promise.all([db.get("conversations"), db.get("users")]);
    const c = CachedConversations.safeParse(convs);
    if (c.success) for (const conv of c.data) this.core.state.conversations.set(conv.id, conv);
    const u = CachedUsers.safeParse(users);
    if (u.success) for (const user of u.data) this.core.state.users.set(user.id, user);
    this.core.emit();
  }

  /** Writes one conversation's latest messages now and resolves once the write is stored. */
  async writeMessages(conversationId: string, messages: readonly Message[]): Promise<void> {
    await this.core.db?.set(`messages:${conversationId}`, messages.slice(-CACHE_MESSAGES));
  }

  async messages(conversationId: string): Promise<Message[]> {
    const r = CachedMessages.safeParse(await this.core.db?.get(`messages:${conversationId}`));
    return r.success ? r.data : [];
  }

  /** The members' receipts as last seen, so ticks keep their colour offline. */
  async receipts(conversationId: string): Promise<Receipt[]> {
    const r = CachedReceipts.safeParse(await this.core.db?.get(`receipts:${conversationId}`));
    return r.success ? r.data : [];
  }

  forget(conversationId: string): void {
    void this.core.db?.remove(`messages:${conversationId}`);
    void this.core.db?.remove(`receipts:${conversationId}`);
  }

  /** Writes the list, users and each loaded conversation's latest messages, at most twice a second. */
  scheduleSave(): void {
    if (this.saveTimer !== null || !this.core.db) return;
    this.saveTimer = this.clock.setTimeout(() => this.saveNow(), SAVE_DELAY_MS);
  }

  /** Writes what a save has pending, now: when its timer ends, or as the page is hidden or goes away. */
  saveNow(): void {
    if (this.saveTimer === null) return;
    this.clock.clearTimeout(this.saveTimer);
    this.saveTimer = null;
    const db = this.core.db;
    if (!db) return;
    void db.set("conversations", [...this.core.state.conversations.values()]);
    void db.set("users", [...this.core.state.users.values()]);
    for (const [id, view] of this.core.state.views) {
      if (!view.loaded) continue;
      void this.writeMessages(id, view.messages);
      if (view.receipts.size > 0) void db.set(`receipts:${id}`, [...view.receipts.values()]);
    }
  }
}
