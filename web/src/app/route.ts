// Client-side routes. The Worker serves index.html for any non-API path naming no file, so each
// of these is also a real URL: a notification click can open /c/<id> directly.
export type Route =
  | { name: "login" }
  | { name: "register" }
  | { name: "list" }
  | { name: "new-chat" }
  | { name: "new-group" }
  | { name: "settings" }
  /** Searching the messages of every conversation. */
  | { name: "search" }
  /** `info`: the group or contact panel; `safety`: the safety-number panel of that member. */
  | { name: "chat"; id: string; thread: number | null; info: boolean; safety?: string };

export function parseRoute(pathname: string, search: string): Route {
  const params = new URLSearchParams(search);
  if (pathname === "/login") return { name: "login" };
  if (pathname === "/register") return { name: "register" };
  if (pathname === "/new") return { name: "new-chat" };
  if (pathname === "/new-group") return { name: "new-group" };
  if (pathname === "/settings") return { name: "settings" };
  if (pathname === "/search") return { name: "search" };
  const chat = /^\/c\/([^/]{1,128})(\/info|\/safety\/([^/]{1,128}))?$/.exec(pathname);
  if (chat) {
    const thread = Number(params.get("thread"));
    return {
      name: "chat",
      id: decodeURIComponent(chat[1]!),
      thread: Number.isInteger(thread) && thread > 0 ? thread : null,
      info: chat[2] === "/info",
      ...(chat[3] !== undefined ? { safety: decodeURIComponent(chat[3]) } : {}),
    };
  }
  return { name: "list" };
}

export function routePath(route: Route): string {
  switch (route.name) {
    case "login":
      return "/login";
    case "register":
      return "/register";
    case "list":
      return "/";
    case "new-chat":
      return "/new";
    case "new-group":
      return "/new-group";
    case "settings":
      return "/settings";
    case "search":
      return "/search";
    case "chat":
      return `/c/${encodeURIComponent(route.id)}${route.safety ? `/safety/${encodeURIComponent(route.safety)}` : route.info ? "/info" : ""}${route.thread ? `?thread=${route.thread}` : ""}`;
  }
}
