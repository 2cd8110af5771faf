// Asks whether the presence, media and push endpoints exist (a JSON answer from the API rather
// than the app's HTML). Only what exists gets a control (`state.caps`). What the last answered
// probe found is kept in the account's local store: started offline, the controls stay.
import * as z from "zod";
import { qs, type Fetch } from "../lib/api";
import type { Capabilities, StoreCore } from "./storeCore";
import type { PresenceWatchPort } from "./ports";

const CachedCaps = z.object({ presence: z.boolean(), upload: z.boolean(), push: z.boolean() });

export class ServerProbe {
  constructor(
    private readonly core: StoreCore,
    private readonly browser: { fetch: Fetch; notifications: { readonly pushSupported: boolean } },
    private readonly deps: { presence: Pick<PresenceWatchPort, "watch"> },
  ) {}

  /** Whether the endpoint exists; null when nothing answered (offline). */
  private async answers(path: string): Promise<boolean | null> {
    try {
      const res = await this.browser.fetch(path, { headers: { authorization: `Bearer ${this.core.state.session?.token ?? ""}` }, cache: "no-store" });
      if (!(res.headers.get("content-type") ?? "").includes("application/json")) return false;
      const body: unknown = await res.json();
      const missing = res.status === 404 && JSON.stringify(body).includes("no such route");
      return !missing;
    } catch {
      return null;
    }
  }

  async run(): Promise<void> {
    const [presence, upload, push] = await Promise.all([
      this.answers(`/presence${qs({ userIds: this.core.me })}`),
      this.answers("/media/capability-probe"),
      this.answers("/push/vapid-public-key"),
    ]);
    const state = this.core.state;
    const db = this.core.db;
    let known: Capabilities | null = null;
    if (presence === null || upload === null || push === null) {
      const cached = CachedCaps.safeParse(await db?.get("caps"));
      known = cached.success ? cached.data : null;
    }
    state.caps = {
      presence: (presence ?? known?.presence ?? false) || state.caps.presence,
      upload: upload ?? known?.upload ?? false,
      push: (push ?? known?.push ?? false) && this.browser.notifications.pushSupported,
    };
    if (presence !== null && upload !== null && push !== null) void db?.set("caps", { presence, upload, push });
    if (presence) this.deps.presence.watch();
    this.core.emit();
  }
}
