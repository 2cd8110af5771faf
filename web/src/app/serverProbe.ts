// Asks whether the presence, media and push endpoints exist (a JSON answer from the API rather
// than the app's HTML). Only what exists gets a control (`state.caps`).
import { qs, type Fetch } from "../lib/api";
import type { StoreCore } from "./storeCore";
import type { PresenceWatchPort } from "./ports";

export class ServerProbe {
  constructor(
    private readonly core: StoreCore,
    private readonly browser: { fetch: Fetch; notifications: { readonly pushSupported: boolean } },
    private readonly deps: { presence: Pick<PresenceWatchPort, "watch"> },
  ) {}

  private async answers(path: string): Promise<boolean> {
    try {
      const res = await this.browser.fetch(path, { headers: { authorization: `Bearer ${this.core.state.session?.token ?? ""}` }, cache: "no-store" });
      if (!(res.headers.get("content-type") ?? "").includes("application/json")) return false;
      const body: unknown = await res.json();
      const missing = res.status === 404 && JSON.stringify(body).includes("no such route");
      return !missing;
    } catch {
      return false;
    }
  }

  async run(): Promise<void> {
    const [presence, upload, push] = await Promise.all([
      this.answers(`/presence${qs({ userIds: this.core.me })}`),
      this.answers("/media/capability-probe"),
      this.answers("/push/vapid-public-key"),
    ]);
    const state = this.core.state;
    state.caps = { presence: presence || state.caps.presence, upload, push: push && this.browser.notifications.pushSupported };
    if (presence) this.deps.presence.watch();
    this.core.emit();
  }
}
