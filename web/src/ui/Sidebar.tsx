import { useState } from "preact/hooks";
import { isMuted, type Conversation, type Message } from "../../../protocol";
import type { AppStore } from "../app/appStore";
import { shortTime } from "../state/format";
import { Avatar } from "./Avatar";
import { useServices } from "./context";
import { Icon } from "./icons";
import { systemText } from "./text";

export function Sidebar() {
  const { store } = useServices();
  const s = store.state;
  const [filter, setFilter] = useState("");
  // The "Archived" list instead of the main one (archived conversations are kept apart).
  const [archivedOpen, setArchivedOpen] = useState(false);
  const me = s.session!.user;
  const activeId = s.route.name === "chat" ? s.route.id : null;
  const f = filter.trim().toLowerCase();
  const all = store.sortedConversations();
  const archived = all.filter((c) => c.settings?.archived === true);
  // A search looks through the archived ones too.
  const list = all.filter((c) => (f ? store.title(c).toLowerCase().includes(f) : (c.settings?.archived === true) === archivedOpen));
  const archivedUnread = archived.filter((c) => c.unread > 0).length;
  const now = Date.now();
  const openArchived = (open: boolean) => {
    setArchivedOpen(open);
    // The row or the button pressed goes away: the focus goes to the first row of what opened.
    requestAnimationFrame(() => document.querySelector<HTMLElement>(open ? ".archived-back" : ".archived-row")?.focus());
  };

  return (
    <nav class="sidebar" aria-label="Conversations">
      <header class="sidebar-header">
        <button class="me" type="button" onClick={() => store.navigate({ name: "settings" })} aria-label={`Settings for ${me.displayName}`}>
          <Avatar id={me.id} name={me.displayName} size={36} />
        </button>
        <h2 class="app-title">Chats</h2>
        <button class="icon-btn" type="button" onClick={() => store.navigate({ name: "search" })} aria-label="Search messages" title="Search messages" aria-current={s.route.name === "search" ? "page" : undefined}>
          <Icon name="search" />
        </button>
        <button class="icon-btn" type="button" onClick={() => store.navigate({ name: "new-chat" })} aria-label="New chat" title="New chat">
          <Icon name="plus" />
        </button>
        <button class="icon-btn" type="button" onClick={() => store.navigate({ name: "new-group" })} aria-label="New group" title="New group">
          <Icon name="group" />
        </button>
        <button class="icon-btn" type="button" onClick={() => store.navigate({ name: "settings" })} aria-label="Settings" title="Settings">
          <Icon name="settings" />
        </button>
      </header>
      <div class="search">
        <Icon name="search" size={16} />
        <input
          id="chat-search"
          type="search"
          placeholder="Search chats"
          aria-label="Search chats"
          aria-keyshortcuts="Control+K"
          value={filter}
          onInput={(e) => setFilter(e.currentTarget.value)}
          onKeyDown={(e) => {
            if (e.key === "ArrowDown") {
              e.preventDefault();
              document.querySelector<HTMLElement>(".conv-item")?.focus();
            }
          }}
        />
      </div>
      {archivedOpen && !f ? (
        <div class="archived-header">
          <button class="icon-btn archived-back" type="button" aria-label="Back to chats" title="Back to chats" onClick={() => openArchived(false)}>
            <Icon name="back" />
          </button>
          <h3>Archived</h3>
        </div>
      ) : null}
      <ul class="conv-list" role="list" onKeyDown={moveFocus}>
        {!archivedOpen && !f && archived.length > 0 ? (
          <li>
            {/* Named by what it shows ("Archived", the count), the words a sighted user infers added unseen. */}
            <button class="conv-item archived-row" type="button" onClick={() => openArchived(true)}>
              <span class="archived-icon" aria-hidden="true">
                <Icon name="archive" />
              </span>
              <span class="archived-title">Archived</span>{" "}
              <span class="archived-count">
                {archived.length}
                <span class="visually-hidden">
                  {` ${archived.length === 1 ? "chat" : "chats"}${archivedUnread > 0 ? `, ${archivedUnread} unread` : ""}`}
                </span>
              </span>
            </button>
          </li>
        ) : null}
        {list.map((c) => (
          <ConversationItem key={c.id} conv={c} active={c.id === activeId} now={now} />
        ))}
      </ul>
      {list.length === 0 ? (
        <div class="conv-empty">
          {!s.listLoaded && s.conversations.size === 0 ? (
            <p>Loading…</p>
          ) : f ? (
            <p>No chats match “{filter}”.</p>
          ) : archivedOpen ? (
            <p>No archived chats.</p>
          ) : archived.length > 0 ? null : (
            <>
              <p>No conversations yet.</p>
              <button class="btn btn-primary" type="button" onClick={() => store.navigate({ name: "new-chat" })}>
                Find people
              </button>
            </>
          )}
        </div>
      ) : null}
    </nav>
  );
}

/** Arrow keys move between conversations; Enter opens one (it is a link). */
function moveFocus(e: KeyboardEvent): void {
  if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
  const items = [...document.querySelectorAll<HTMLElement>(".conv-item")];
  const active = document.activeElement;
  const i = active instanceof HTMLElement ? items.indexOf(active) : -1;
  if (i < 0) return;
  e.preventDefault();
  const next = e.key === "ArrowDown" ? Math.min(items.length - 1, i + 1) : i - 1;
  if (next < 0) document.getElementById("chat-search")?.focus();
  else items[next]?.focus();
}

function ConversationItem({ conv, active, now }: { conv: Conversation; active: boolean; now: number }) {
  const { store } = useServices();
  const title = store.title(conv);
  const other = conv.type === "direct" ? store.otherMember(conv) : null;
  const presence = other ? store.presenceOf(other) : undefined;
  const pending = store.state.outbox.filter((o) => o.conversationId === conv.id && !o.action);
  const failed = pending.some((o) => o.status === "failed");
  const typing = store.typingNames(conv.id);
  const preview: Preview = typing.length > 0 ? { who: "", what: `${typing.join(", ")} typing…` } : pending.length > 0 ? { who: "You: ", what: pending[pending.length - 1]!.body ?? "Attachment" } : previewOf(store, conv, conv.lastMessage);
  const time = conv.lastMessageAt ?? conv.createdAt;
  const href = `/c/${encodeURIComponent(conv.id)}`;
  // The link's name is what it shows, in the same order (name, preview, time), then what the
  // row shows without words: the unread count, being online, the lock, a message waiting.
  const waiting = pending.length > 0 ? (failed ? "not sent" : "waiting to send") : null;
  const unread = conv.unread > 99 ? "99+" : String(conv.unread);
  const muted = isMuted(conv.settings, now);
  const pinned = (conv.settings?.pinnedAt ?? null) !== null;
  const label = [
    title,
    `${preview.who}${preview.what}`,
    shortTime(time, now),
    conv.unread > 0 ? `${unread} unread` : null,
    // Thread replies are counted apart from the conversation's own messages (docs/api.md).
    conv.threadUnread > 0 ? `${conv.threadUnread} new ${conv.threadUnread === 1 ? "thread reply" : "thread replies"}` : null,
    presence?.status === "online" ? "online" : null,
    conv.e2ee ? "end-to-end encrypted" : null,
    pinned ? "pinned" : null,
    muted ? "muted" : null,
    waiting,
  ].filter((part) => part !== null).join(", ");
  return (
    <li>
      <a
        class={`conv-item${active ? " active" : ""}${conv.unread > 0 ? " unread" : ""}`}
        href={href}
        aria-current={active ? "page" : undefined}
        aria-label={label}
        data-conversation={conv.id}
        onClick={(e) => {
          e.preventDefault();
          store.navigate({ name: "chat", id: conv.id, thread: null, info: false });
        }}
      >
        <Avatar id={conv.type === "group" ? conv.id : other ?? conv.id} name={title} presence={presence} group={conv.type === "group"} />
        {/* In the order the link's name reads them, spaces between (the grid places them, and
            ignores the spaces): its visible words are then the start of its name. */}
        <span class="conv-main">
          <span class="conv-title" dir="auto">{conv.e2ee ? <span aria-hidden="true" title="End-to-end encrypted">🔒 </span> : null}{title}</span>{" "}
          <span class={`conv-preview${typing.length > 0 ? " typing" : ""}`}>
            {pending.length > 0 ? <Icon name={failed ? "alert" : "clock"} size={14} /> : null}
            {preview.who}
            <span dir="auto">{preview.what}</span>
          </span>{" "}
          <time class="conv-time" dateTime={new Date(time).toISOString()}>{shortTime(time, now)}</time>{" "}
          {conv.unread > 0 || conv.threadUnread > 0 || muted || pinned ? (
            <span class="conv-badges">
              {muted ? (
                <span class="conv-flag" aria-hidden="true" title="Muted" data-flag="muted">
                  <Icon name="muted" size={16} />
                </span>
              ) : null}
              {pinned ? (
                <span class="conv-flag" aria-hidden="true" title="Pinned" data-flag="pinned">
                  <Icon name="pin" size={16} />
                </span>
              ) : null}
              {conv.threadUnread > 0 ? (
                <span class="thread-badge" aria-hidden="true" title="New thread replies">
                  <Icon name="thread" size={12} />
                  {conv.threadUnread > 99 ? "99+" : conv.threadUnread}
                </span>
              ) : null}
              {conv.unread > 0 ? <span class={`badge${muted ? " badge-muted" : ""}`} aria-hidden="true">{unread}</span> : null}
            </span>
          ) : null}
        </span>
      </a>
    </li>
  );
}

/** The list's line under a name: who wrote it, and the text in its own direction. */
interface Preview {
  who: string;
  what: string;
}

function previewOf(store: AppStore, conv: Conversation, m: Message | null): Preview {
  if (!m) return { who: "", what: conv.type === "group" ? "Group created" : "Say hello" };
  if (m.kind === "system") return { who: "", what: systemText(store, m) };
  const who = m.senderId === store.me ? "You: " : conv.type === "group" ? `${store.userName(m.senderId)}: ` : "";
  const shown = m.kind === "encrypted" ? store.shown(m) : null;
  if (shown && shown.kind !== "content") return { who, what: "🔒 Encrypted message" };
  const body = shown?.kind === "content" ? shown.content.body : m.body;
  const media = shown?.kind === "content" ? shown.content.media?.[0] : m.media[0];
  const what = body ?? (media ? (media.contentType.startsWith("image/") ? "Photo" : media.contentType.startsWith("video/") ? "Video" : media.contentType.startsWith("audio/") ? "Voice message" : media.name) : "");
  return { who, what };
}
