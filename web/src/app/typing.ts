// Typing indicators: ours (`typing on` at most every 3 s while keys are pressed, `off` after 4 s
// of quiet or on send) and others' (shown until their indicator lapses).
import type { Clock } from "./browser";
import type { StoreCore } from "./storeCore";
import type { ChatsPort, ConnectionPort, PeoplePort } from "./ports";

const TYPING_REFRESH_MS = 3000;
const TYPING_IDLE_MS = 4000;
/** How long another member's `typing on` shows without a refresh. */
const TYPING_SHOWN_MS = 6500;

export class Typing {
  private readonly sent = new Map<string, { at: number; timer: unknown }>();

  constructor(
    private readonly core: StoreCore,
    private readonly clock: Clock,
    private readonly deps: {
      connection: Pick<ConnectionPort, "transmit">;
      chats: Pick<ChatsPort, "view">;
      people: Pick<PeoplePort, "name">;
    },
  ) {}

  /** Called on each keystroke. */
  keystroke(conversationId: string): void {
    const now = this.clock.now();
    const sent = this.sent.get(conversationId);
    if (sent) this.clock.clearTimeout(sent.timer);
    const timer = this.clock.setTimeout(() => this.stop(conversationId), TYPING_IDLE_MS);
    if (!sent || now - sent.at > TYPING_REFRESH_MS) {
      this.deps.connection.transmit(conversationId, { type: "typing", on: true });
      this.sent.set(conversationId, { at: now, timer });
    } else {
      this.sent.set(conversationId, { at: sent.at, timer });
    }
  }

  stop(conversationId: string): void {
    const sent = this.sent.get(conversationId);
    if (!sent) return;
    this.clock.clearTimeout(sent.timer);
    this.sent.delete(conversationId);
    this.deps.connection.transmit(conversationId, { type: "typing", on: false });
  }

  /** A typing frame from the conversation socket. */
  received(conversationId: string, userId: string, on: boolean): void {
    const view = this.deps.chats.view(conversationId);
    if (on) {
      view.typing.set(userId, this.clock.now() + TYPING_SHOWN_MS);
      // Re-render when it lapses, so the indicator goes away without a new frame.
      this.clock.setTimeout(() => this.core.emit(), TYPING_SHOWN_MS + 100);
    } else {
      view.typing.delete(userId);
    }
    this.core.emit();
  }

  /** Who is typing in a conversation now, names first. */
  names(conversationId: string): string[] {
    const view = this.core.state.views.get(conversationId);
    if (!view) return [];
    const now = this.clock.now();
    return [...view.typing].filter(([uid, until]) => until > now && uid !== this.core.me).map(([uid]) => this.deps.people.name(uid));
  }
}
