// Routes: the address bar and `state.route` kept in step. Entering a conversation opens it (its
// history and socket); leaving closes its socket. Signed out, every route is the login.
import type { AddressBar } from "./browser";
import { parseRoute, routePath, type Route } from "./route";
import type { StoreCore } from "./storeCore";

export interface RouteEffects {
  openConversation(id: string): void;
  /** Whether the conversation socket is there (a route change to the same chat keeps it). */
  chatConnected(): boolean;
  leaveConversation(): void;
  openThread(conversationId: string, rootSeq: number): void;
}

export class Navigation {
  constructor(
    private readonly core: StoreCore,
    private readonly address: AddressBar,
    private readonly effects: RouteEffects,
  ) {}

  /** The route the address bar shows. */
  current(): Route {
    return parseRoute(this.address.pathname(), this.address.search());
  }

  navigate(route: Route, replace = false): void {
    const path = routePath(route);
    if (path !== this.address.pathname() + this.address.search()) {
      if (replace) this.address.replace(path);
      else this.address.push(path);
    }
    this.apply(route);
  }

  /** Makes `route` the state's route (the address bar already shows it). */
  apply(route: Route): void {
    const state = this.core.state;
    if (!state.session && route.name !== "login" && route.name !== "register") route = { name: "login" };
    if (state.session && (route.name === "login" || route.name === "register")) route = { name: "list" };
    const prev = state.route;
    state.route = route;
    if (route.name === "chat") {
      if (prev.name !== "chat" || prev.id !== route.id || !this.effects.chatConnected()) this.effects.openConversation(route.id);
      if (route.thread !== null) this.effects.openThread(route.id, route.thread);
      else state.thread = null;
    } else {
      this.effects.leaveConversation();
      state.thread = null;
    }
    this.core.emit();
  }
}
