// Users: names for ids (fetched in batches the first time they are needed) and the search.
import { USER_LOOKUP_MAX, type User } from "../../../protocol";
import { Schemas, qs, type Api } from "../lib/api";
import { shownUserName } from "../state/format";
import type { StoreCore } from "./storeCore";
import type { LocalCachePort } from "./ports";

export class People {
  private readonly fetching = new Set<string>();

  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly deps: { cache: Pick<LocalCachePort, "scheduleSave"> },
  ) {}

  /**
   * Fetches the users not known yet (`again`: all of them, as names and photos change), up to
   * USER_LOOKUP_MAX per request (`GET /users?ids=`).
   */
  ensure(ids: string[], again = false): void {
    const users = this.core.state.users;
    const missing = [...new Set(ids)].filter((id) => (again || !users.has(id)) && !this.fetching.has(id));
    for (let i = 0; i < missing.length; i += USER_LOOKUP_MAX) {
      const chunk = missing.slice(i, i + USER_LOOKUP_MAX);
      for (const id of chunk) this.fetching.add(id);
      void this.api
        .call("GET", `/users${qs({ ids: chunk.join(",") })}`, Schemas.users)
        .then(({ users: found }) => {
          for (const user of found) this.core.state.users.set(user.id, user);
          this.deps.cache.scheduleSave();
          this.core.emit();
        })
        .catch(() => undefined)
        .finally(() => {
          for (const id of chunk) this.fetching.delete(id);
        });
    }
  }

  name(id: string): string {
    if (id === this.core.me) return "You";
    const user = this.core.state.users.get(id);
    return user ? shownUserName(user, this.core.state.users.values()) : "…";
  }

  async search(q: string): Promise<User[]> {
    const query = q.trim().toLowerCase();
    if (!/^[a-z0-9_]{1,32}$/.test(query)) return [];
    const { users } = await this.api.call("GET", `/users${qs({ q: query })}`, Schemas.users);
    for (const u of users) this.core.state.users.set(u.id, u);
    return users.filter((u) => u.id !== this.core.me);
  }
}
