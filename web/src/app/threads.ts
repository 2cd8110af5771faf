// The thread panel: a root message and its replies, from the conversation's view at once and
// then from the server; live replies join it as they arrive.
import type { Message } from "../../../protocol";
import { Schemas, qs, type Api } from "../lib/api";
import { mergeMessages } from "../state/timeline";
import type { StoreCore } from "./storeCore";
import type { ChatsPort } from "./ports";

export class Threads {
  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly deps: { chats: Pick<ChatsPort, "view"> },
  ) {}

  async open(conversationId: string, rootSeq: number): Promise<void> {
    const state = this.core.state;
    if (state.thread?.conversationId === conversationId && state.thread.rootSeq === rootSeq) return;
    const fromView = this.deps.chats.view(conversationId).messages.filter((m) => m.seq === rootSeq || m.threadRootSeq === rootSeq);
    state.thread = { conversationId, rootSeq, messages: fromView, loading: true };
    this.core.emit();
    try {
      const page = await this.api.call("GET", `/conversations/${encodeURIComponent(conversationId)}/messages${qs({ thread: rootSeq, after: rootSeq - 1, limit: 500 })}`, Schemas.history);
      const thread = state.thread;
      if (thread?.conversationId === conversationId && thread.rootSeq === rootSeq) {
        thread.messages = mergeMessages(thread.messages, page.messages);
      }
    } catch {
      // Offline: the thread shows what the conversation view holds.
    }
    if (state.thread) state.thread.loading = false;
    this.core.emit();
  }

  /** New messages of a conversation (in seq order): the open thread's root and replies join it. */
  received(conversationId: string, messages: Message[]): void {
    const thread = this.core.state.thread;
    if (!thread || thread.conversationId !== conversationId) return;
    const replies = messages.filter((m) => m.threadRootSeq === thread.rootSeq || m.seq === thread.rootSeq);
    if (replies.length > 0) thread.messages = mergeMessages(thread.messages, replies);
  }
}
