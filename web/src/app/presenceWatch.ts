// Presence: the set of people whose status is on screen (direct partners in the list, the open
// chat's members) is sent to the server as the user socket's watch list; their status arrives
// as frames, and is fetched once when the set changes.
import { LIMITS, type Presence } from "../../../protocol";
import { Schemas, qs, type Api } from "../lib/api";
import type { StoreCore } from "./storeCore";
import type { ChatsPort, ConnectionPort } from "./ports";

const WATCH_DIRECT_MAX = 150;
const WATCH_MEMBERS_MAX = 50;
const WATCH_MAX = 200;

export class PresenceWatch {
  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly deps: {
      chats: Pick<ChatsPort, "sorted" | "otherMember">;
      connection: Pick<ConnectionPort, "watchPresence">;
    },
  ) {}

  /** The people whose status is on screen now. */
  watched(): string[] {
    const ids = new Set<string>();
    for (const conv of this.deps.chats.sorted()) {
      if (conv.type === "direct") {
        const other = this.deps.chats.otherMember(conv);
        if (other) ids.add(other);
      }
      if (ids.size >= WATCH_DIRECT_MAX) break;
    }
    const r = this.core.state.route;
    if (r.name === "chat") {
      for (const m of this.core.state.conversations.get(r.id)?.members.slice(0, WATCH_MEMBERS_MAX) ?? []) if (m.userId !== this.core.me) ids.add(m.userId);
    }
    return [...ids].slice(0, WATCH_MAX);
  }

  /** Sends the watch list (and fetches their status when the server has presence). */
  watch(): void {
    const ids = this.watched();
    this.deps.connection.watchPresence(ids);
    if (this.core.state.caps.presence) this.fetch(ids);
  }

  /** What we know of someone's presence; nothing while we are offline ourselves (it would be stale). */
  of(userId: string): Presence | undefined {
    if (!this.core.state.caps.presence || this.core.state.connection !== "online") return undefined;
    return this.core.state.presence.get(userId);
  }

  fetch(ids: string[]): void {
    const others = ids.filter((id) => id !== this.core.me).slice(0, LIMITS.presenceQueryMax);
    if (others.length === 0 || !this.core.state.caps.presence) return;
    void this.api
      .call("GET", `/presence${qs({ userIds: others.join(",") })}`, Schemas.presence)
      .then(({ presence }) => {
        for (const p of presence) this.core.state.presence.set(p.userId, p);
        this.core.emit();
      })
      .catch(() => undefined);
  }

  /** A presence frame: the server has presence, whatever the probe said. */
  received(p: Presence): void {
    this.core.state.caps.presence = true;
    this.core.state.presence.set(p.userId, p);
    this.core.emit();
  }
}
