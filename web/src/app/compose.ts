// Composing beyond text: the message the composer replies to, the members a mention can name,
// forwarding, and each conversation's pinned messages, kept current as pins and deletes arrive.
import type { Conversation, Message } from "../../../protocol";
import { Schemas, type Api } from "../lib/api";
import { filterCandidates, type Candidate } from "../state/compose";
import { parseActionEvent } from "../state/timeline";
import type { StoreCore } from "./storeCore";

export class Compose {
  /** Pins fetches in flight, so a burst of pin events asks once more, not once each. */
  private readonly loading = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();

  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
  ) {}

  private get state() {
    return this.core.state;
  }

  // --- reply ------------------------------------------------------------------------------------

  startReply(conversationId: string, seq: number): void {
    this.state.replyTo.set(conversationId, seq);
    this.core.emit();
  }

  cancelReply(conversationId: string): void {
    if (!this.state.replyTo.delete(conversationId)) return;
    this.core.emit();
  }

  /** The seq the composer of this conversation replies to, if any. */
  replyTo(conversationId: string): number | undefined {
    return this.state.replyTo.get(conversationId);
  }

  // --- mentions ---------------------------------------------------------------------------------

  /** The members a mention in this conversation can name (not me), filtered by what follows `@`. */
  mentionCandidates(conv: Conversation, query: string): Candidate[] {
    const members = conv.members
      .filter((m) => m.userId !== this.core.me)
      .flatMap((m) => {
        const user = this.state.users.get(m.userId);
        return user ? [{ userId: m.userId, name: user.displayName, username: user.username }] : [];
      });
    return filterCandidates(members, query);
  }

  // --- pins -------------------------------------------------------------------------------------

  /** Fetches a conversation's pinned messages (`GET /conversations/:id/pins`). */
  loadPins(conversationId: string): Promise<void> {
    const running = this.loading.get(conversationId);
    if (running) {
      this.again.add(conversationId);
      return running;
    }
    const run = (async () => {
      try {
        do {
          this.again.delete(conversationId);
          const { messages } = await this.api.call("GET", `/conversations/${encodeURIComponent(conversationId)}/pins`, Schemas.pins);
          this.state.pins.set(conversationId, messages);
          this.core.emit();
        } while (this.again.has(conversationId));
      } catch {
        // The list stays as it was; the next pin event or opening asks again.
      } finally {
        this.loading.delete(conversationId);
      }
    })();
    this.loading.set(conversationId, run);
    return run;
  }

  /** A pin, an unpin or a delete for everyone changes the list: fetched again where it is shown. */
  received(conversationId: string, messages: Message[]): void {
    if (!this.state.pins.has(conversationId)) return;
    const pins = this.state.pins.get(conversationId) ?? [];
    const changes = messages.some((m) => {
      if (m.kind !== "action") return false;
      const event = parseActionEvent(m.body);
      return event !== null && (event.type === "pin" || (event.type === "delete" && pins.some((p) => p.seq === event.targetSeq)));
    });
    if (changes) void this.loadPins(conversationId);
  }

  pins(conversationId: string): Message[] {
    return this.state.pins.get(conversationId) ?? [];
  }
}
