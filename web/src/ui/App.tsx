import { useEffect, useState } from "preact/hooks";
import { useServices } from "./context";
import { Auth } from "./Auth";
import { Sidebar } from "./Sidebar";
import { ChatView } from "./ChatView";
import { NewChat, NewGroup } from "./People";
import { Settings } from "./Settings";
import { SearchScreen } from "./lazy";
import { Icon } from "./icons";

export function App() {
  const { store } = useServices();
  const [, setTick] = useState(0);
  useEffect(() => store.subscribe(() => setTick((t) => t + 1)), [store]);
  const s = store.state;
  const route = s.route;
  const unread = [...s.conversations.values()].reduce((n, c) => n + c.unread, 0);

  // The unread total in the tab title and on the installed app's icon.
  useEffect(() => {
    document.title = unread > 0 ? `(${unread}) Edge Chat` : "Edge Chat";
    if ("setAppBadge" in navigator) void (unread > 0 ? navigator.setAppBadge(unread) : navigator.clearAppBadge()).catch(() => undefined);
  }, [unread]);

  // Ctrl+K (or Cmd+K) finds a chat from anywhere.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k") {
        e.preventDefault();
        if (store.state.route.name !== "list" && window.matchMedia("(max-width: 760px)").matches) store.navigate({ name: "list" });
        queueMicrotask(() => document.getElementById("chat-search")?.focus());
      }
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [store]);

  if (!s.session || route.name === "login" || route.name === "register") {
    return (
      <>
        <Auth mode={route.name === "register" ? "register" : "login"} />
        <Notice />
      </>
    );
  }

  // On a phone one pane shows at a time; the list is the home pane. The whole app is the main
  // landmark (the list among it), so a phone showing only the list still has one.
  const pane = route.name === "list" ? "list" : "main";
  return (
    <main class="app" data-pane={pane} data-thread={route.name === "chat" && route.thread !== null ? "open" : "closed"}>
      <h1 class="visually-hidden">Edge Chat</h1>
      <Sidebar />
      <div class="main" id="main">
        <ConnectionBanner />
        {route.name === "chat" ? (
          <ChatView key={route.id} id={route.id} />
        ) : route.name === "new-chat" ? (
          <NewChat />
        ) : route.name === "new-group" ? (
          <NewGroup />
        ) : route.name === "settings" ? (
          <Settings />
        ) : route.name === "search" ? (
          <SearchScreen conversationId={null} onClose={() => store.navigate({ name: "list" })} />
        ) : (
          <div class="empty-main">
            <Icon name="thread" size={48} />
            <p>Pick a conversation, or start a new one.</p>
          </div>
        )}
      </div>
      <Notice />
    </main>
  );
}

function ConnectionBanner() {
  const { store } = useServices();
  const c = store.state.connection;
  if (c === "online") return null;
  return (
    <div class={`banner banner-${c}`} role="status">
      {c === "offline" ? "You are offline. New messages are kept and sent when you are back." : "Connecting…"}
    </div>
  );
}

function Notice() {
  const { store } = useServices();
  const n = store.state.notice;
  return (
    <div class="toast-region" role="status" aria-live="polite">
      {n ? <div class="toast" key={n.id}>{n.text}</div> : null}
    </div>
  );
}
