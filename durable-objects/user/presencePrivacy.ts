// The presence privacy rule: a user's presence is disclosed only to users who share a
// conversation with them, and to themselves. "Share" means both are members of it now: a user who
// left (or was removed from) every conversation shared with another sees them as `unknown`.
//
// Answered by the objects that hold the memberships, never by D1's. Only ids the directory knows
// are asked, so that made-up ids create no objects. Each user's object keeps the
// user's conversations with their spans (./conversationList.ts, told by each conversation before a
// membership change's call returns). The viewer's object reads its current conversations, most
// active first, and asks each other user's object, all at once, for that user's presence if they
// are a member of any of them: a shared conversation is found by the one who is asked, with a
// primary-key lookup per id, and the presence comes back in the same call. A viewer in more than
// PRIVACY_CHUNK conversations sends them in chunks, one after the other, and stops at the first
// that answers (a shared conversation is likelier among the active ones), so no call carries more
// than PRIVACY_CHUNK ids. A viewer in no conversation asks no one.
import type { Presence } from "../../protocol";
import type { PresencePeer } from "../contract";

/** The most conversation ids one call carries: ~13 KB of ids as conversations name them. */
export const PRIVACY_CHUNK = 500;

/** How many ids known to be users the viewer's object remembers (in memory) before starting over. */
export const KNOWN_USERS_MAX = 10_000;

export interface PrivacyDeps {
  /** The viewer's current conversations, most active first (ConversationList.current). */
  current(): string[];
  /** Which of these ids are users (the directory in D1). */
  existing(userIds: string[]): Promise<Set<string>>;
  users(userId: string): Pick<PresencePeer, "presenceIfMember">;
}

export class PresencePrivacy {
  /** Ids the directory said are users; users are never deleted, so this is never wrong. */
  private readonly known = new Set<string>();

  constructor(private readonly deps: PrivacyDeps) {}

  /**
   * Of `userIds`, the users: an id that is nobody's is never asked, since asking would create an
   * object (and its storage) for it. The directory is read once per id and object instance.
   */
  private async users(userIds: string[]): Promise<string[]> {
    const unchecked = userIds.filter((id) => !this.known.has(id));
    if (unchecked.length === 0) return userIds;
    const found = await this.deps.existing(unchecked);
    const users = userIds.filter((id) => this.known.has(id) || found.has(id));
    if (this.known.size + found.size > KNOWN_USERS_MAX) this.known.clear();
    for (const id of found) this.known.add(id);
    return users;
  }

  /**
   * Of `userIds` (other than the viewer), those who share a current conversation with the
   * viewer, with their presence. Fails if a user's object cannot be asked, as the rule cannot be
   * answered without it.
   */
  async shared(userIds: string[]): Promise<Map<string, Presence>> {
    const found = new Map<string, Presence>();
    const unique = [...new Set(userIds)];
    if (unique.length === 0) return found;
    const mine = this.deps.current();
    if (mine.length === 0) return found;
    const chunks: string[][] = [];
    for (let i = 0; i < mine.length; i += PRIVACY_CHUNK) chunks.push(mine.slice(i, i + PRIVACY_CHUNK));
    await Promise.all(
      (await this.users(unique)).map(async (userId) => {
        for (const conversationIds of chunks) {
          const presence = await this.deps.users(userId).presenceIfMember(userId, conversationIds);
          if (presence) return void found.set(userId, presence);
        }
      }),
    );
    return found;
  }

  /**
   * `GET /presence` for the viewer: in the order asked, duplicates collapsed; the viewer's own
   * presence, each sharer's, and `unknown` for anyone else, whether they exist or not.
   */
  async visibleTo(viewerId: string, userIds: string[], own: () => Presence): Promise<Presence[]> {
    const unique = [...new Set(userIds)];
    const shared = await this.shared(unique.filter((id) => id !== viewerId));
    return unique.map((userId) =>
      userId === viewerId ? own() : (shared.get(userId) ?? { userId, status: "unknown", lastSeen: null }),
    );
  }
}
