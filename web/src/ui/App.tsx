import { useEffect, useState } from "preact/hooks";
import { useServices } from "./context";
import { Auth } from "./Auth";
import { Sidebar } from "./Sidebar";
import { ChatView } from "./ChatView";
import { NewChat, NewGroup } from "./People";
import { Settings } from "./Settings";
import { Icon } from "./icons";

export function App() {
  const { store } = useServices();
  const [, setTick] = useState(0);
  useEffect(() => store.subscribe(() => setTick((t) => t + 1)), [store]);
  const s = store.state;
  const route = s.route;

  if (!s.session || route.name === "login" || route.name === "register") {
    return (
      <>
        <Auth mode={route.name === "register" ? "register" : "login"} />
        <Notice />
      </>
    );
  }

  // On a phone one pane shows at a time; the list is the home pane.
  const pane = route.name === "list" ? "list" : "main";
  return (
    <div class="app" data-pane={pane} data-thread={route.name === "chat" && route.thread !== null ? "open" : "closed"}>
      <Sidebar />
      <main class="main" id="main">
        <ConnectionBanner />
        {route.name === "chat" ? (
          <ChatView key={route.id} id={route.id} />
        ) : route.name === "new-chat" ? (
          <NewChat />
        ) : route.name === "new-group" ? (
          <NewGroup />
        ) : route.name === "settings" ? (
          <Settings />
        ) : (
          <div class="empty-main">
            <Icon name="thread" size={48} />
            <p>Pick a conversation, or start a new one.</p>
          </div>
        )}
      </main>
      <Notice />
    </div>
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
