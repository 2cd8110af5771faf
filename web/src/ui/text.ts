import type { Message } from "../../../protocol";
import type { AppStore } from "../app/appStore";
import { systemSentence } from "../state/messageText";

/** "Ann created the group", "You added Bob": system message bodies are JSON events. */
export function systemText(store: AppStore, m: Message): string {
  const group = store.state.conversations.get(m.conversationId)?.type !== "direct";
  return systemSentence(m.body, store.me, (id) => store.userName(id), group);
}
