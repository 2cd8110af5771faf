// End-to-end encrypted conversations, for the rest of the store: which conversations this device
// can read and from where (`state.crypto`), what each message says (`shown`), sealing what goes
// out (`seal`, called by the send queue at send time), and the group changes that follow the
// member list (created, members added or removed). The MLS work itself is web/src/e2ee/client.ts,
// loaded (with the engine) by dynamic import once a conversation here is E2EE: a client without
// one never downloads either.
import type { Conversation, Message } from "../../../protocol";
import { NetworkError, isTransient, type Api } from "../lib/api";
import type { OutboxItem } from "../state/offlineOutbox";
import type { ConversationCrypto, E2eeClient, Sealed } from "../e2ee/client";
import { E2eeUnavailable } from "../e2ee/errors";
import { SealedMedia, type Content, type Shown } from "../e2ee/content";
import { isAction } from "../e2ee/entries";
import type { SearchIndex, SearchResults } from "../state/localSearch";
import type { Exclusive } from "../e2ee/lock";
import type { StoreCore } from "./storeCore";

const NO_STORE = "This browser keeps no local data for this site, and encrypted chats need it.";

export class E2ee {
  private client: Promise<E2eeClient> | null = null;
  /** The device is registered and its key packages stocked (set up again after a failure, e.g. offline). */
  private setUp: Promise<void> | null = null;
  /** What this page sealed, by clientMsgId: shown at once when its message comes back. */
  private readonly sealedHere = new Map<string, Sealed>();
  /** One catch-up per conversation at a time; what arrives meanwhile waits for the next. */
  private readonly running = new Map<string, Promise<void>>();
  private readonly waiting = new Map<string, Message[]>();
  /** Per copy of a conversation (the list replaces them), the encrypted actions already taken out of its `unread`. */
  private readonly discounted = new WeakMap<Conversation, Set<number>>();

  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly browser: { exclusive: Exclusive },
  ) {}

  private get state() {
    return this.core.state;
  }

  private isE2ee(conversationId: string): boolean {
    return this.state.conversations.get(conversationId)?.e2ee === true;
  }

  /** The client, made on first need: its module and the engine are loaded then, and the device set up. */
  private device(): Promise<E2eeClient> | null {
    const session = this.state.session;
    const db = this.core.db;
    if (!session || !db) return null;
    this.client ??= import("../e2ee/client").then(({ E2eeClient }) => {
      const lockName = `edge-chat-mls:${session.user.id}`;
      const client = new E2eeClient({
        userId: session.user.id,
        deviceId: session.deviceId,
        api: this.api,
        store: db,
        exclusive: (fn) => this.browser.exclusive(lockName, fn),
        engine: () => import("../e2ee/engine"),
        adminsOf: (id) => (this.state.conversations.get(id)?.members ?? []).filter((m) => m.role === "admin").map((m) => m.userId),
        membersOf: (id) => (this.state.conversations.get(id)?.members ?? []).map((m) => m.userId),
      });
      return client;
    });
    this.setUp ??= this.client
      .then((c) => c.ready())
      .catch((err: unknown) => {
        // Offline or the server busy: the next use tries again.
        if (isTransient(err)) this.setUp = null;
        this.report(null, err);
      });
    return this.client;
  }

  /** Signed out: what belonged to the account goes. */
  stop(): void {
    this.client = null;
    this.setUp = null;
    this.sealedHere.clear();
    this.waiting.clear();
  }

  /** Conversations in the list: each E2EE one this page has not looked at is brought up to date. */
  conversations(convs: Conversation[]): void {
    for (const conv of convs) {
      if (!conv.e2ee) continue;
      if (!this.state.crypto.has(conv.id)) this.refresh(conv.id);
      // The list keeps its own copy (with local progress): that is the one shown.
      else this.adjust(this.state.conversations.get(conv.id) ?? conv);
    }
  }

  /**
   * The server counts and previews an encrypted action like every other message (it cannot tell): once this
   * device knows it is one, it takes it out of `unread` (others' actions after the read mark,
   * each once per copy of the conversation) and out of the preview.
   */
  private adjust(conv: Conversation): void {
    const c = this.state.crypto.get(conv.id);
    if (!c) return;
    const last = conv.lastMessage;
    if (last && last.kind === "encrypted" && isAction(c.plain.get(last.seq)) && c.lastShown && c.lastShown.seq < last.seq) conv.lastMessage = c.lastShown;
    let done = this.discounted.get(conv);
    if (!done) this.discounted.set(conv, (done = new Set()));
    for (const [seq, entry] of c.plain) {
      if (!isAction(entry) || entry.from === this.core.me || seq <= conv.readSeq || seq > conv.lastSeq || done.has(seq)) continue;
      done.add(seq);
      if (conv.unread > 0) conv.unread -= 1;
    }
  }

  /**
   * Messages from any path: commits, ciphertexts and delete events of E2EE conversations get
   * processed (a delete takes the decrypted text and its index entry off this device at once).
   */
  received(messages: Message[]): void {
    const byConv = new Map<string, Message[]>();
    for (const m of messages) {
      if ((m.kind !== "encrypted" && m.kind !== "mls.commit" && m.kind !== "action") || !this.isE2ee(m.conversationId)) continue;
      const c = this.state.crypto.get(m.conversationId);
      if (c && m.seq <= c.processedSeq) continue;
      byConv.set(m.conversationId, [...(byConv.get(m.conversationId) ?? []), m]);
    }
    for (const [id, list] of byConv) this.refresh(id, list);
  }

  /** Catches the conversation up (joining it first if this device is new to it). */
  refresh(conversationId: string, known: Message[] = []): void {
    if (this.running.has(conversationId)) {
      this.waiting.set(conversationId, [...(this.waiting.get(conversationId) ?? []), ...known]);
      return;
    }
    const run = (async () => {
      const pending = this.device();
      if (!pending) {
        this.setCrypto(conversationId, { status: "problem", problem: NO_STORE, processedSeq: 0, joinedSeq: 0, plain: new Map() });
        return;
      }
      let device: E2eeClient;
      try {
        device = await pending;
      } catch (err) {
        // The module could not be loaded (offline before the service worker cached it).
        this.report(conversationId, err);
        return;
      }
      try {
        this.setCrypto(conversationId, await device.catchUp(conversationId, known));
      } catch (err) {
        // Offline: show what this device decrypted before.
        if (!this.state.crypto.has(conversationId)) this.setCrypto(conversationId, await device.stored(conversationId).catch(() => this.blank()));
        this.report(conversationId, err);
      }
    })().finally(() => {
      this.running.delete(conversationId);
      const next = this.waiting.get(conversationId);
      if (next) {
        this.waiting.delete(conversationId);
        this.refresh(conversationId, next);
      }
    });
    this.running.set(conversationId, run);
  }

  /** Resolves once the conversation's current catch-up (if any) is done. */
  async settled(conversationId: string): Promise<void> {
    while (this.running.has(conversationId)) await this.running.get(conversationId);
  }

  private blank(): ConversationCrypto {
    return { status: "waiting", problem: null, processedSeq: 0, joinedSeq: 0, plain: new Map() };
  }

  private setCrypto(conversationId: string, c: ConversationCrypto): void {
    this.state.crypto.set(conversationId, c);
    const conv = this.state.conversations.get(conversationId);
    if (conv) this.adjust(conv);
    this.core.emit();
  }

  private report(conversationId: string | null, err: unknown): void {
    if (err instanceof NetworkError || isTransient(err)) return;
    const text = err instanceof Error ? err.message : String(err);
    if (conversationId) {
      const c = this.state.crypto.get(conversationId) ?? this.blank();
      this.setCrypto(conversationId, { ...c, status: "problem", problem: text });
    } else if (err instanceof E2eeUnavailable) {
      this.core.notify(text);
    }
  }

  /** What a message of an E2EE conversation says on this device, or why it says nothing. */
  shown(m: Message): Shown {
    const c = this.state.crypto.get(m.conversationId);
    const entry = c?.plain.get(m.seq);
    if (entry) return "failed" in entry ? { kind: "failed", reason: entry.failed } : isAction(entry) ? { kind: "action", action: entry.action } : { kind: "content", content: entry };
    if (m.senderDeviceId === this.state.session?.deviceId) {
      const mine = this.sealedHere.get(m.clientMsgId);
      if (mine) return "action" in mine ? { kind: "action", action: mine.action } : { kind: "content", content: { v: 1, ...mine } };
    }
    if (!c || m.seq > c.processedSeq) return { kind: "pending" };
    if (m.seq <= c.joinedSeq) return { kind: "before-join" };
    return { kind: "failed", reason: "cannot decrypt" };
  }

  /**
   * A message of an E2EE conversation as the views read it: what this device decrypted (text,
   * reply, mentions, forward mark) and what the encrypted actions applied to it (edited, deleted,
   * reactions, pin), on the server's message (place, sender, time, thread). Other messages as
   * they are. Built when drawn, never stored: the offline cache keeps the server's copy.
   */
  decrypted(m: Message): Message {
    if (m.kind !== "encrypted" || m.deletedAt !== undefined) return m;
    const shown = this.shown(m);
    if (shown.kind !== "content") return m;
    const c = shown.content;
    const { mentions: _m, reactions: _r, pinned: _p, editedAt: _e, ...server } = m;
    const out: Message = { ...server, body: c.body ?? null };
    if (c.replyToSeq !== undefined) out.replyToSeq = c.replyToSeq;
    if (c.mentions !== undefined) out.mentions = c.mentions;
    if (c.forwarded) out.forwarded = true;
    if (c.editedAt !== undefined) out.editedAt = c.editedAt;
    if (c.deletedAt !== undefined) out.deletedAt = c.deletedAt;
    if (c.reactions !== undefined) out.reactions = c.reactions;
    if (c.pinned !== undefined) out.pinned = c.pinned;
    return out;
  }

  /** Whether a message is an encrypted action (shown on its target, not as a message). */
  isAction(m: Message): boolean {
    return m.kind === "encrypted" && this.shown(m).kind === "action";
  }

  /**
   * Searches the text this device decrypted in its E2EE conversations (or in one), newest first,
   * in the shape of `GET /search`'s answer: the server has no text to search there.
   */
  async localSearch(query: string, conversationId?: string, options: { limit?: number; before?: string } = {}): Promise<SearchResults> {
    const db = this.core.db;
    if (!db) return { results: [], cursor: null, hasMore: false };
    // Loaded when first searched: only accounts with E2EE conversations search this way.
    const { searchIndexes, searchKey } = await import("../state/localSearch");
    const ids = conversationId !== undefined ? [conversationId] : [...this.state.conversations.values()].filter((c) => c.e2ee).map((c) => c.id);
    const indexes: SearchIndex[] = [];
    for (const id of ids) {
      const index = (await db.get(searchKey(id))) as SearchIndex | undefined;
      if (index) indexes.push(index);
    }
    return searchIndexes(indexes, query, options);
  }

  /** The ciphertext of an outbox item, made now, at the group's current epoch. */
  async seal(item: OutboxItem): Promise<string> {
    const pending = this.device();
    if (!pending) throw new E2eeUnavailable(NO_STORE);
    const device = await pending;
    const media = (item.media ?? []).flatMap((m) => {
      const sealed = SealedMedia.safeParse(m);
      return sealed.success ? [sealed.data] : [];
    });
    const content: Sealed = item.action
      ? { action: item.action }
      : {
          ...(item.body !== undefined ? { body: item.body } : {}),
          ...(media.length > 0 ? { media } : {}),
          ...(item.replyToSeq !== undefined ? { replyToSeq: item.replyToSeq } : {}),
          ...(item.mentions !== undefined && item.mentions.length > 0 ? { mentions: item.mentions } : {}),
          ...(item.forwarded ? { forwarded: item.forwarded } : {}),
        };
    const ciphertext = await device.seal(item.conversationId, item.clientMsgId, content);
    this.sealedHere.set(item.clientMsgId, content);
    return ciphertext;
  }

  /** This user created an E2EE conversation: set up its group with the members' devices. */
  async created(conv: Conversation): Promise<void> {
    const pending = this.device();
    if (!pending) return;
    try {
      const device = await pending;
      const others = conv.members.map((m) => m.userId).filter((id) => id !== this.core.me);
      this.setCrypto(conv.id, await device.create(conv.id, others));
    } catch (err) {
      this.report(conv.id, err);
    }
  }

  membersAdded(conversationId: string, userIds: string[]): void {
    if (!this.isE2ee(conversationId)) return;
    this.device()
      ?.then((d) => d.addUsers(conversationId, userIds))
      .then((c) => this.setCrypto(conversationId, c), (err: unknown) => this.report(conversationId, err));
  }

  membersRemoved(conversationId: string, userIds: string[]): void {
    if (!this.isE2ee(conversationId)) return;
    this.device()
      ?.then((d) => d.removeUsers(conversationId, userIds))
      .then((c) => this.setCrypto(conversationId, c), (err: unknown) => this.report(conversationId, err));
  }

  /** Deleted for me (here or on another device): the decrypted text goes from this device too. */
  hidden(conversationId: string, seqs: number[]): void {
    if (!this.isE2ee(conversationId)) return;
    this.device()
      ?.then((d) => d.forget(conversationId, seqs))
      .then((c) => c && this.setCrypto(conversationId, c), (err: unknown) => this.report(conversationId, err));
  }

  /** A Welcome for this device (`mls.welcome`): join, then read the conversation. */
  welcome(conversationId: string): void {
    this.device()
      ?.then((d) => d.welcomed())
      .then(() => this.refresh(conversationId), (err: unknown) => this.report(conversationId, err));
  }

  /** The server handed out this device's key packages (`mls.keyPackagesLow`): upload more. */
  keyPackagesLow(): void {
    this.device()
      ?.then((d) => d.replenish())
      .catch((err: unknown) => this.report(null, err));
  }
}
