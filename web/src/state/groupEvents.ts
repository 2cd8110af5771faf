// A group's settings as its system messages change them: the title, the description and members'
// roles (docs/api.md, Group settings). A device applies the events it receives, so the header and
// the info panel change with the message that says so, before the user socket's `conversation`
// frame (which carries the same state) arrives.
import type { Conversation, Member, Message, SystemEvent } from "../../../protocol";
import { parseSystemEvent } from "./messageText";

export type GroupFields = Pick<Conversation, "title" | "description" | "members">;

const eventOf = (m: Message): SystemEvent | null => (m.kind === "system" ? parseSystemEvent(m.body) : null);

/**
 * The fields that `messages` change, applied in order to what `conv` holds; only messages past
 * `conv.lastSeq` count (an older one is already in the state the server gave). Null: no change.
 */
export function groupChanges(conv: Conversation, messages: readonly Message[]): Partial<GroupFields> | null {
  if (conv.type !== "group") return null;
  const out: Partial<GroupFields> = {};
  let changed = false;
  let members: Member[] = conv.members;
  for (const m of [...messages].sort((a, b) => a.seq - b.seq)) {
    if (m.conversationId !== conv.id || m.seq <= conv.lastSeq) continue;
    const event = eventOf(m);
    if (!event) continue;
    switch (event.event) {
      case "renamed":
        if (event.title === undefined) break;
        out.title = event.title;
        changed = true;
        break;
      case "descriptionChanged":
        if (event.description === undefined) break;
        out.description = event.description;
        changed = true;
        break;
      case "promoted":
      case "demoted": {
        const role = event.event === "promoted" ? "admin" : "member";
        members = members.map((x) => (event.userIds.includes(x.userId) ? { ...x, role } : x));
        out.members = members;
        changed = true;
        break;
      }
      default:
        break;
    }
  }
  return changed ? out : null;
}

/** Whether `userId` is an admin of the group. */
export const isAdmin = (conv: Conversation, userId: string): boolean =>
  conv.type === "group" && conv.members.some((m) => m.userId === userId && m.role === "admin");
