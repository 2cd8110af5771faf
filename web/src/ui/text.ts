import { SystemEvent, type Message } from "../../../protocol";
import type { AppStore } from "../app/appStore";

/** "Ann created the group", "Ann added Bob and Cy": system message bodies are JSON events. */
export function systemText(store: AppStore, m: Message): string {
  let event: SystemEvent | null = null;
  try {
    const parsed = SystemEvent.safeParse(JSON.parse(m.body ?? "null"));
    event = parsed.success ? parsed.data : null;
  } catch {
    event = null;
  }
  if (!event) return "Conversation updated";
  const actor = store.userName(event.actorId);
  const names = event.userIds.map((id) => store.userName(id));
  const list = names.length <= 1 ? names.join("") : `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
  switch (event.event) {
    case "created":
      return `${actor} created the conversation`;
    case "added":
      return `${actor} added ${list}`;
    case "removed":
      return `${actor} removed ${list}`;
    case "left":
      return `${actor} left`;
  }
}
