import { createContext } from "preact";
import { useContext, useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import type { Action, Conversation, Message } from "../../../protocol";
import type { AppStore, Upload } from "../app/appStore";
import { clock, dayLabel, lastSeen } from "../state/format";
import type { OutboxItem } from "../state/offlineOutbox";
import { tickFor, tickLabel, type TickInfo } from "../state/receipts";
import { emojiCount, linkify } from "../state/messageText";
import { mentionParts, quoteLine } from "../state/compose";
import { ForwardDialog, SearchScreen } from "./lazy";
import { buildTimeline, type TimelineEntry } from "../state/timeline";
import { Avatar } from "./Avatar";
import { Composer } from "./Composer";
import { useServices } from "./context";
import { GroupInfo } from "./People";
import { useEscape, useFocusHandoff } from "./focus";
import { Icon } from "./icons";
import { MediaBlock, UploadCard, startUploads } from "./Media";
import { SafetyNumberPanel, SafetyWarnings, VerifiedMark } from "./SafetyNumber";
import { systemText } from "./text";
import { SHOWN_TEXT } from "../e2ee/content";

export interface Entry extends TimelineEntry {
  message?: Message;
  pending?: OutboxItem;
  upload?: Upload;
}

/** Messages, pending sends and uploads as one ordered list; a sent item keeps its key, so nothing re-mounts. */
export function entriesFor(store: AppStore, conversationId: string, messages: readonly Message[], threadRootSeq: number | null): Entry[] {
  const me = store.me;
  const inScope = (root: number | null | undefined) => (threadRootSeq === null ? root == null : root === threadRootSeq);
  const entries: Entry[] = [];
  const mine = new Set<string>();
  for (const m of messages) {
    if (threadRootSeq === null ? m.threadRootSeq !== null : m.threadRootSeq !== threadRootSeq && m.seq !== threadRootSeq) continue;
    // MLS commits change the group's keys; there is nothing in them to show. Action events
    // (edits, deletes, reactions, pins) show on the messages they change.
    if (m.kind === "mls.commit" || m.kind === "action" || m.hidden || store.isEncryptedAction(m)) continue;
    if (m.senderId === me) mine.add(m.clientMsgId);
    entries.push({ key: `${m.senderId}:${m.clientMsgId || m.id}`, senderId: m.senderId, createdAt: m.createdAt, kind: m.kind, message: m });
  }
  for (const p of store.state.outbox) {
    if (p.conversationId !== conversationId || mine.has(p.clientMsgId) || !inScope(p.threadRootSeq) || p.action) continue;
    entries.push({ key: `${me}:${p.clientMsgId}`, senderId: me, createdAt: p.createdAt, kind: "text", pending: p });
  }
  for (const u of store.state.uploads) {
    if (u.conversationId !== conversationId || !inScope(u.threadRootSeq)) continue;
    entries.push({ key: `upload:${u.id}`, senderId: me, createdAt: u.createdAt, kind: "media", upload: u });
  }
  return entries;
}

/** What a message's menu opens beyond the store: the forward dialog, held by the chat. */
const ChatUi = createContext<{ forward: (message: Message) => void }>({ forward: () => undefined });

/** A panel beside the chat that is not a route: the pinned messages, or search in the conversation. */
type Panel = "pins" | "search" | null;

export function ChatView({ id }: { id: string }) {
  const { store, media } = useServices();
  const [dragging, setDragging] = useState(false);
  const [panel, setPanel] = useState<Panel>(null);
  const [forwarding, setForwarding] = useState<Message | null>(null);
  const ui = useMemo(() => ({ forward: (m: Message) => setForwarding(m) }), []);
  const s = store.state;
  const conv = s.conversations.get(id);
  const view = store.view(id);
  const route = s.route.name === "chat" ? s.route : null;
  const plaintextMember = !!conv && !conv.e2ee && conv.leftSeq === undefined;

  // The pins list: fetched as the chat opens, fetched again as pins change (compose.ts).
  useEffect(() => {
    if (plaintextMember) void store.loadPins(id);
  }, [id, plaintextMember]);
  // A route's panel (thread, info, safety number) takes the place of these.
  const routePanel = !!route && (route.thread !== null || route.info || route.safety !== undefined);
  useEffect(() => {
    if (routePanel) setPanel(null);
  }, [routePanel]);

  useEffect(() => {
    const ids = new Set<string>();
    for (const m of view.messages) ids.add(m.senderId);
    for (const mem of conv?.members.slice(0, 50) ?? []) ids.add(mem.userId);
    store.ensureUsers([...ids]);
  }, [view.messages.length, conv?.members.length]);

  if (view.error && !conv) {
    return (
      <section class="chat" aria-label="Conversation">
        <ChatHeader conv={null} id={id} panel={null} setPanel={setPanel} />
        <div class="empty-main">
          <p>{view.error}</p>
        </div>
      </section>
    );
  }

  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    setDragging(false);
    const files = [...(e.dataTransfer?.files ?? [])];
    if (files.length > 0 && s.caps.upload) void startUploads(store, media, id, files, null);
  };

  return (
    <ChatUi.Provider value={ui}>
    <div class="chat-layout">
      <section
        class={`chat${dragging ? " dragging" : ""}`}
        aria-label={conv ? `Conversation with ${store.title(conv)}` : "Conversation"}
        onDragOver={(e) => {
          if (!s.caps.upload || !e.dataTransfer?.types.includes("Files")) return;
          e.preventDefault();
          setDragging(true);
        }}
        onDragLeave={(e) => {
          const to = e.relatedTarget;
          if (!(to instanceof Node) || !e.currentTarget.contains(to)) setDragging(false);
        }}
        onDrop={onDrop}
      >
        <ChatHeader conv={conv ?? null} id={id} panel={panel} setPanel={setPanel} />
        {conv ? <SafetyWarnings conv={conv} /> : null}
        <MessageList id={id} conv={conv ?? null} />
        {conv?.e2ee ? <EncryptionStatus id={id} /> : null}
        {conv?.leftSeq !== undefined || s.removedFrom === id ? (
          <p class="removed-note" role="status">{notMemberText(conv ?? null)}</p>
        ) : (
          <Composer conversationId={id} threadRootSeq={null} />
        )}
      </section>
      {route?.thread != null && conv ? <ThreadPanel conv={conv} rootSeq={route.thread} /> : null}
      {route?.safety && conv ? <SafetyNumberPanel conv={conv} userId={route.safety} /> : route?.info && conv && conv.leftSeq === undefined ? <GroupInfo conv={conv} /> : null}
      {panel === "pins" && conv && !routePanel ? <PinsPanel conv={conv} onClose={() => setPanel(null)} /> : null}
      {panel === "search" && conv && !routePanel ? <SearchScreen conversationId={id} onClose={() => setPanel(null)} /> : null}
      {forwarding ? <ForwardDialog message={forwarding} onClose={() => setForwarding(null)} /> : null}
    </div>
    </ChatUi.Provider>
  );
}

/** The conversation's pinned messages, the latest pin first; a click shows one in context. */
function PinsPanel({ conv, onClose }: { conv: Conversation; onClose: () => void }) {
  const { store } = useServices();
  const panel = useRef<HTMLElement>(null);
  const heading = useRef<HTMLHeadingElement>(null);
  useFocusHandoff(panel, heading);
  useEscape(onClose, conv.id);
  const pins = store.pins(conv.id);
  return (
    <aside class="side-panel pins-panel" ref={panel} aria-labelledby="pins-title">
      <header class="panel-header">
        <h2 id="pins-title" ref={heading} tabIndex={-1}>Pinned messages</h2>
        <button class="icon-btn" type="button" aria-label="Close pinned messages" onClick={onClose}>
          <Icon name="close" />
        </button>
      </header>
      {pins.length === 0 ? <p class="muted pins-empty">No pinned messages.</p> : null}
      <ul class="pins-list">
        {pins.map((m) => (
          <li key={m.seq}>
            <button
              class="pin-item"
              type="button"
              data-seq={m.seq}
              onClick={() => {
                void store.jumpTo(conv.id, m.seq);
                if (window.matchMedia("(max-width: 760px)").matches) onClose();
              }}
            >
              <span class="sender" dir="auto">{store.userName(m.senderId)}</span>
              <span class="quote-text" dir="auto">{quoteLine(m)}</span>
            </button>
          </li>
        ))}
      </ul>
    </aside>
  );
}

/**
 * An E2EE conversation's state on this device, above the composer while it is not simply
 * ready: being set up (messages wait in the outbox meanwhile), or a problem (a forked group
 * state, a removed device), shown rather than hidden.
 */
function EncryptionStatus({ id }: { id: string }) {
  const { store } = useServices();
  const c = store.state.crypto.get(id);
  if (c?.status === "ready") return null;
  if (c?.status === "problem") {
    return (
      <p class="e2ee-status problem" role="alert" data-testid="e2ee-status" data-status="problem">
        🔒 {c.problem}
      </p>
    );
  }
  return (
    <p class="e2ee-status" role="status" data-testid="e2ee-status" data-status="waiting">
      🔒 Setting up end-to-end encryption on this device…
    </p>
  );
}

/** Why the composer is gone: the system message at `leftSeq` says whether we left or were removed. */
function notMemberText(conv: Conversation | null): string {
  if (conv?.leftSeq === undefined) return "You are no longer a member of this conversation.";
  const last = conv.lastMessage;
  let event: unknown = null;
  try {
    event = last?.seq === conv.leftSeq && last.kind === "system" && last.body ? (JSON.parse(last.body) as { event?: unknown }).event : null;
  } catch {
    event = null;
  }
  return event === "left" ? "You left this group." : "You were removed from this group.";
}

function ChatHeader({ conv, id, panel, setPanel }: { conv: Conversation | null; id: string; panel: Panel; setPanel: (p: Panel) => void }) {
  const { store } = useServices();
  const s = store.state;
  const title = conv ? store.title(conv) : "Conversation";
  const other = conv?.type === "direct" ? store.otherMember(conv) : null;
  const presence = other ? store.presenceOf(other) : undefined;
  const typing = store.typingNames(id);
  // Once per render: in an E2EE chat it reads every message this device decrypted.
  const pinCount = conv ? store.pins(id).length : 0;
  const subtitle =
    typing.length > 0
      ? typing.length === 1 && conv?.type === "direct"
        ? "typing…"
        : `${typing.join(", ")} ${typing.length === 1 ? "is" : "are"} typing…`
      : conv?.leftSeq !== undefined
        ? "Not a member"
        : conv?.type === "group"
        ? `${conv.members.length} members`
        : lastSeen(presence, Date.now());
  // Presence text changes by the minute ("last seen 3 min ago").
  const [, setNow] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setNow((n) => n + 1), 30_000);
    return () => clearInterval(t);
  }, []);
  return (
    <header class="chat-header">
      <button class="icon-btn back" type="button" aria-label="Back to chats" onClick={() => store.navigate({ name: "list" })}>
        <Icon name="back" />
      </button>
      {conv ? <Avatar id={conv.type === "group" ? conv.id : other ?? conv.id} name={title} presence={presence} group={conv.type === "group"} /> : null}
      <div class="chat-title">
        <div class="title-line">
          <h2 dir="auto">{title}</h2>
          {other ? <VerifiedMark userId={other} /> : null}
        </div>
        <p class={`chat-subtitle${typing.length > 0 ? " typing" : ""}${presence?.status === "online" && typing.length === 0 ? " online" : ""}`} aria-live="polite" data-testid="chat-subtitle">
          {subtitle}
        </p>
      </div>
      {pinCount > 0 ? (
        <button class="icon-btn pins-btn" type="button" aria-label={`Pinned messages: ${pinCount}`} title="Pinned messages" aria-expanded={panel === "pins"} onClick={() => {
          if (panel !== "pins" && s.route.name === "chat" && (s.route.info || s.route.thread !== null || s.route.safety)) store.navigate({ name: "chat", id, thread: null, info: false });
          setPanel(panel === "pins" ? null : "pins");
        }}>
          <Icon name="pin" />
          <span class="pins-count" aria-hidden="true">{pinCount}</span>
        </button>
      ) : null}
      {conv ? (
        <button class="icon-btn" type="button" aria-label="Search in this conversation" title="Search in this conversation" aria-expanded={panel === "search"} onClick={() => {
          if (panel !== "search" && s.route.name === "chat" && (s.route.info || s.route.thread !== null || s.route.safety)) store.navigate({ name: "chat", id, thread: null, info: false });
          setPanel(panel === "search" ? null : "search");
        }}>
          <Icon name="search" />
        </button>
      ) : null}
      {conv && conv.leftSeq === undefined ? (
        <button
          class="icon-btn"
          type="button"
          aria-label={conv.type === "group" ? "Group info" : "Contact info"}
          aria-expanded={s.route.name === "chat" && s.route.info}
          onClick={() => store.navigate({ name: "chat", id, thread: null, info: !(s.route.name === "chat" && s.route.info) })}
        >
          <Icon name="info" />
        </button>
      ) : null}
    </header>
  );
}

function MessageList({ id, conv }: { id: string; conv: Conversation | null }) {
  const { store } = useServices();
  const view = store.view(id);
  const scroller = useRef<HTMLDivElement>(null);
  const top = useRef<HTMLDivElement>(null);
  const divider = useRef<HTMLDivElement>(null);
  const snapshot = useRef<{ height: number; top: number; firstKey: string | null; atBottom: boolean; positioned: boolean }>({ height: 0, top: 0, firstKey: null, atBottom: true, positioned: false });
  const [dividerAbove, setDividerAbove] = useState(false);
  const [newBelow, setNewBelow] = useState(0);
  const [atBottom, setAtBottom] = useState(true);
  const resizes = useRef<ResizeObserver | null>(null);

  const entries = entriesFor(store, id, view.messages, null);
  const firstUnreadKey = useMemo(() => {
    if (view.firstUnreadSeq === null) return null;
    // The first one drawn: actions (plaintext or encrypted) and commits draw nothing.
    const m = view.messages.find((x) => x.seq >= view.firstUnreadSeq! && x.senderId !== store.me && x.threadRootSeq === null && x.kind !== "system" && x.kind !== "action" && x.kind !== "mls.commit" && !store.isEncryptedAction(x));
    return m ? `${m.senderId}:${m.clientMsgId || m.id}` : null;
  }, [view.firstUnreadSeq, view.messages.length > 0]);
  const items = buildTimeline(entries, { firstUnreadKey });
  const firstKey = entries[0]?.key ?? null;
  const lastKey = entries[entries.length - 1]?.key ?? null;

  // Keep the reader's place: stick to the bottom if they were there, and hold still when older
  // messages are prepended above (no jump).
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const snap = snapshot.current;
    if (!snap.positioned && entries.length > 0) {
      const d = divider.current;
      if (d) d.scrollIntoView({ block: "start" });
      else el.scrollTop = el.scrollHeight;
      snap.positioned = view.loaded;
    } else if (snap.firstKey !== null && firstKey !== snap.firstKey && el.scrollHeight > snap.height && !snap.atBottom) {
      el.scrollTop += el.scrollHeight - snap.height;
    } else if (snap.atBottom) {
      el.scrollTop = el.scrollHeight;
    } else if (lastKey) {
      setNewBelow((n) => n + 1);
    }
    snap.height = el.scrollHeight;
    snap.firstKey = firstKey;
    onScroll();
    for (const row of el.children) resizes.current?.observe(row);
  }, [firstKey, lastKey, entries.length, view.loaded]);

  // Media arrives after the view is placed (its box is reserved from the sizes the message carries,
  // but a row may still settle: a poster, an audio player, a font). While the reader is at the
  // bottom, every row's change of size keeps them there; so does the list itself resizing (a
  // phone's keyboard). Rows above the reader's place move nothing: the browser's scroll anchoring.
  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const ro = new ResizeObserver(() => {
      if (!snapshot.current.atBottom) return;
      el.scrollTop = el.scrollHeight;
      snapshot.current.height = el.scrollHeight;
    });
    ro.observe(el);
    for (const row of el.children) ro.observe(row);
    resizes.current = ro;
    return () => {
      ro.disconnect();
      resizes.current = null;
    };
  }, [id]);

  // When the history shown does not fill the screen, the sentinel never scrolls into view: ask now.
  useEffect(() => {
    const el = scroller.current;
    if (el && snapshot.current.positioned && view.hasMoreBefore && !view.loadingOlder && el.scrollTop < 400) void store.loadOlder(id);
  }, [firstKey, view.loaded, view.loadingOlder]);

  /** `event`: called for a scroll event (late by a frame), rather than right after placing the view. */
  const onScroll = (event = false) => {
    const el = scroller.current;
    if (!el) return;
    // A reader at the bottom stays there until they scroll up: a row that grew below (media
    // loading) before a scroll event was handled does not count as leaving the bottom.
    const snap = snapshot.current;
    const bottom = el.scrollHeight - el.scrollTop - el.clientHeight < 48 || (event && snap.atBottom && el.scrollTop >= snap.top);
    snap.top = el.scrollTop;
    snapshot.current.atBottom = bottom;
    snapshot.current.height = el.scrollHeight;
    setAtBottom(bottom);
    if (bottom) setNewBelow(0);
    store.setAtBottom(bottom);
    const d = divider.current;
    setDividerAbove(!!d && d.getBoundingClientRect().bottom < el.getBoundingClientRect().top);
  };

  // Older history loads when the top sentinel scrolls into view.
  useEffect(() => {
    const el = top.current;
    const root = scroller.current;
    if (!el || !root) return;
    // Callbacks arrive a frame late: check where the reader is now, not where they were.
    const io = new IntersectionObserver((obs) => {
      if (obs.some((o) => o.isIntersecting) && snapshot.current.positioned && root.scrollTop < 400) void store.loadOlder(id);
    }, { root, rootMargin: "400px 0px 0px 0px" });
    io.observe(el);
    return () => io.disconnect();
  }, [id]);

  // A jump (a quote, a pin, a search result): once the row is drawn, it is scrolled to the middle
  // and highlighted for a moment. A message held but not drawn (deleted for me) ends the jump.
  const jump = store.state.jump;
  const [highlight, setHighlight] = useState<number | null>(null);
  useEffect(() => {
    if (!jump || jump.conversationId !== id) return;
    const row = scroller.current?.querySelector<HTMLElement>(`[data-seq="${jump.seq}"]`);
    if (!row) {
      if (view.loaded && !view.loadingOlder && view.messages.some((m) => m.seq === jump.seq)) store.jumped();
      return;
    }
    snapshot.current.atBottom = false;
    row.scrollIntoView({ block: "center" });
    setHighlight(jump.seq);
    store.jumped();
  }, [jump, entries.length, view.loaded, view.loadingOlder]);
  useEffect(() => {
    if (highlight === null) return;
    const t = setTimeout(() => setHighlight(null), 2500);
    return () => clearTimeout(t);
  }, [highlight]);

  const toBottom = () => {
    const el = scroller.current;
    if (el) el.scrollTop = el.scrollHeight;
    setNewBelow(0);
  };

  const now = Date.now();
  const memberIds = conv?.members.map((m) => m.userId) ?? [];
  const group = conv?.type === "group";

  return (
    <div class="messages-wrap">
      <div class="messages" ref={scroller} onScroll={() => onScroll(true)} role="log" aria-label="Messages" aria-live="polite" aria-relevant="additions" tabIndex={0}>
        <div ref={top} class="history-sentinel">
          {view.loadingOlder ? <span class="spinner" role="status">Loading older messages…</span> : !view.hasMoreBefore && view.loaded ? <span class="history-start">This is the beginning of the conversation.</span> : null}
        </div>
        {!view.loaded && entries.length === 0 ? <p class="loading-messages">{view.error ?? "Loading messages…"}</p> : null}
        {items.map((item) =>
          item.type === "day" ? (
            <div class="day-divider" key={item.key} role="separator">
              <span>{dayLabel(item.at, now)}</span>
            </div>
          ) : item.type === "unread" ? (
            <div class="unread-divider" key={item.key} ref={divider} role="separator" id="first-unread">
              <span>Unread messages</span>
            </div>
          ) : (
            <MessageRow key={item.key} entry={item.entry} first={item.first} last={item.last} conv={conv} memberIds={memberIds} group={group} receipts={view.receipts} highlighted={item.entry.message !== undefined && item.entry.message.seq === highlight} />
          ),
        )}
      </div>
      <TypingLine id={id} />
      {dividerAbove ? (
        <button class="pill pill-top" type="button" onClick={() => divider.current?.scrollIntoView({ block: "start", behavior: "smooth" })}>
          Jump to first unread
        </button>
      ) : null}
      {!atBottom && entries.length > 0 ? (
        <button class="fab-bottom" type="button" onClick={toBottom} title="Jump to latest" aria-label={newBelow > 0 ? `Jump to latest: ${newBelow} new ${newBelow === 1 ? "message" : "messages"}` : "Jump to latest message"}>
          <Icon name="down" />
          {newBelow > 0 ? <span class="badge">{newBelow}</span> : null}
        </button>
      ) : null}
    </div>
  );
}

/** A fixed-height line, so an indicator appearing never shifts the messages. */
function TypingLine({ id }: { id: string }) {
  const { store } = useServices();
  const names = store.typingNames(id);
  return (
    <div class="typing-line" aria-live="polite" data-testid="typing">
      {names.length > 0 ? (
        <>
          <span class="dots" aria-hidden="true">
            <i />
            <i />
            <i />
          </span>
          {`${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`}
        </>
      ) : null}
    </div>
  );
}

export function MessageRow({ entry, first, last, conv, memberIds, group, receipts, inThread = false, highlighted = false }: {
  entry: Entry;
  first: boolean;
  last: boolean;
  conv: Conversation | null;
  memberIds: string[];
  group: boolean;
  receipts: ReturnType<AppStore["view"]>["receipts"];
  inThread?: boolean;
  highlighted?: boolean;
}) {
  const { store } = useServices();
  const [actions, setActions] = useState(false);
  const me = store.me;
  // An E2EE message as decrypted here, with the encrypted actions on it folded in.
  const m = entry.message ? store.decrypted(entry.message) : undefined;
  if (m?.kind === "system") {
    return (
      <div class={`system-msg${highlighted ? " highlight" : ""}`} data-seq={m.seq}>
        {systemText(store, m)}
      </div>
    );
  }
  if (entry.upload) {
    return (
      <div class="msg-row mine first last">
        <UploadCard upload={entry.upload} />
      </div>
    );
  }
  const mine = entry.senderId === me;
  const pending = entry.pending;
  let tick: TickInfo | null = null;
  if (mine && m) tick = tickFor(m.seq, me, memberIds, receipts);
  if (pending) tick = { tick: pending.status === "failed" ? "failed" : "pending", readBy: 0, deliveredTo: 0, others: 0 };
  // A message deleted for everyone shows that it was; an E2EE message shows what this device
  // decrypted, or says why it cannot (never an empty bubble).
  const deleted = m?.deletedAt !== undefined;
  const shown = m?.kind === "encrypted" && !deleted ? store.shown(m) : null;
  const body = deleted ? null : shown ? (shown.kind === "content" ? shown.content.body : shown.kind === "action" ? null : SHOWN_TEXT[shown.kind]) : m ? m.body : pending?.body;
  const media = deleted ? [] : shown ? (shown.kind === "content" ? shown.content.media ?? [] : []) : m?.media ?? [];
  const threadRoot = !inThread && m && m.threadRootSeq === null && conv ? m : null;
  // Threads are for groups. On a touch screen the button shows once the bubble is tapped.
  const canReply = threadRoot !== null && group;
  const mentionsMe = !!m && !mine && (m.mentions?.includes(me) ?? false);
  const forwarded = m?.forwarded ?? pending?.forwarded ?? false;
  const replyToSeq = m?.replyToSeq ?? pending?.replyToSeq;
  return (
    <div class={`msg-row${mine ? " mine" : ""}${first ? " first" : ""}${last ? " last" : ""}${actions ? " actions" : ""}${highlighted ? " highlight" : ""}${mentionsMe ? " mentions-me" : ""}`} data-seq={m?.seq} data-client-msg-id={m?.clientMsgId ?? pending?.clientMsgId}>
      {!mine && group ? <span class="msg-avatar">{last ? <Avatar id={entry.senderId} name={store.userName(entry.senderId)} size={28} /> : null}</span> : null}
      <div
        class={`bubble${pending ? " pending" : ""}`}
        onClick={canReply ? (e) => {
          if (!(e.target instanceof Element) || !e.target.closest("a, button, audio, video, [role=slider]")) setActions((a) => !a);
        } : undefined}
      >
        {!mine && group && first ? <div class="sender" dir="auto">{store.userName(entry.senderId)}</div> : null}
        {forwarded && !deleted ? <div class="forwarded muted">Forwarded</div> : null}
        {media.length > 0 ? <MediaBlock media={media} /> : null}
        {pending?.media ? <MediaBlock media={pending.media} /> : pending?.mediaIds ? <p class="muted">Attachment</p> : null}
        {replyToSeq !== undefined ? <ReplyQuote store={store} conversationId={m?.conversationId ?? pending?.conversationId ?? ""} seq={replyToSeq} /> : null}
        {deleted ? <p class="text muted deleted">This message was deleted</p> : null}
        {body ? <MessageText body={body} undecrypted={shown !== null && shown.kind !== "content"} mention={mentionsMe ? store.state.session?.user.displayName ?? null : null} /> : null}
        {m?.reactions ? (
          <div class="reactions">
            {m.reactions.map((r) => (
              <span key={r.emoji} class="reaction" title={r.userIds.map((id) => store.userName(id)).join(", ")}>
                {r.emoji} {r.userIds.length}
              </span>
            ))}
          </div>
        ) : null}
        <div class="meta">
          {m?.editedAt !== undefined && m.deletedAt === undefined ? <span class="edited">edited</span> : null}
          <time dateTime={new Date(entry.createdAt).toISOString()}>{clock(entry.createdAt)}</time>
          {tick ? <Ticks info={tick} group={group} /> : null}
        </div>
        {pending?.status === "failed" ? (
          <div class="failed-actions">
            <span role="alert">Not sent{pending.error ? `: ${pending.error}` : ""}</span>
            <button class="link-btn" type="button" onClick={() => void store.retry(pending.clientMsgId)}>Retry</button>
            <button class="link-btn" type="button" onClick={() => void store.discard(pending.clientMsgId)}>Delete</button>
          </div>
        ) : null}
        {threadRoot?.thread ? (
          <button class="thread-link" type="button" onClick={() => store.navigate({ name: "chat", id: threadRoot.conversationId, thread: threadRoot.seq, info: false })}>
            <Icon name="thread" size={14} />
            {threadRoot.thread.replyCount === 1 ? "1 reply" : `${threadRoot.thread.replyCount} replies`}
          </button>
        ) : null}
      </div>
      {m && conv && m.deletedAt === undefined && m.kind !== "action" ? <MessageMenu message={m} conv={conv} inThread={inThread} /> : null}
      {canReply ? (
        <button class="icon-btn reply-btn" type="button" aria-label="Reply in thread" title="Reply in thread" onClick={() => store.navigate({ name: "chat", id: threadRoot.conversationId, thread: threadRoot.seq, info: false })}>
          <Icon name="thread" size={16} />
        </button>
      ) : null}
    </div>
  );
}

/**
 * What a member can do to a message (docs/api.md, Message actions); one this device cannot
 * decrypt, only delete. A menu button: the menu takes the focus as it opens, the arrow keys (and
 * Home, End) move between its items, Escape closes it and gives the focus back to the button.
 */
function MessageMenu({ message: m, conv, inThread }: { message: Message; conv: Conversation; inThread: boolean }) {
  const { store } = useServices();
  const ui = useContext(ChatUi);
  const [open, setOpen] = useState(false);
  const button = useRef<HTMLButtonElement>(null);
  const menu = useRef<HTMLDivElement>(null);
  const me = store.me;
  const mine = m.senderId === me;
  const admin = conv.type === "group" && conv.members.some((x) => x.userId === me && x.role === "admin");
  const member = conv.leftSeq === undefined;
  useLayoutEffect(() => {
    const el = menu.current;
    if (!open || !el) return;
    // It opens above its button; near the top of the list it would be cut off: below, then.
    const list = el.closest(".messages, .thread-messages")?.getBoundingClientRect();
    if (list && el.getBoundingClientRect().top < list.top) el.classList.add("below");
    el.querySelector<HTMLElement>("[role=menuitem]")?.focus();
  }, [open]);
  const close = () => {
    setOpen(false);
    button.current?.focus();
  };
  const run = (work: () => Promise<void>) => {
    close();
    void work().catch((err: unknown) => store.notify(err instanceof Error ? err.message : "That did not work."));
  };
  const act = (action: Action) => run(() => store.act(conv.id, action));
  const onKeyDown = (e: KeyboardEvent) => {
    const items = [...(menu.current?.querySelectorAll<HTMLElement>("[role=menuitem]") ?? [])];
    const i = items.findIndex((el) => el === document.activeElement);
    const to = (n: number) => {
      e.preventDefault();
      items[(n + items.length) % items.length]?.focus();
    };
    if (e.key === "ArrowDown") to(i + 1);
    else if (e.key === "ArrowUp") to(i < 0 ? items.length - 1 : i - 1);
    else if (e.key === "Home") to(0);
    else if (e.key === "End") to(items.length - 1);
    else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      close();
    } else if (e.key === "Tab") setOpen(false);
  };
  const liked = m.reactions?.some((r) => r.emoji === "👍" && r.userIds.includes(me)) ?? false;
  // In an E2EE conversation the members apply these themselves, to what they decrypted.
  const readable = m.kind !== "encrypted" || store.shown(m).kind === "content";
  // Replies quote from the main list (a thread has its own replies).
  const canReply = !inThread && member && m.threadRootSeq === null;
  const canForward = store.forwardable(m) !== null;
  return (
    <div class="msg-menu">
      <button ref={button} class="icon-btn" type="button" aria-label="Message actions" aria-haspopup="menu" aria-expanded={open} onClick={() => setOpen((o) => !o)}>
        ⋯
      </button>
      {open ? (
        <div class="menu" role="menu" aria-label="Message actions" ref={menu} onKeyDown={onKeyDown}>
          {readable ? (
            <>
              {canReply ? (
                <button type="button" role="menuitem" tabIndex={-1} onClick={() => {
                  setOpen(false);
                  store.startReply(conv.id, m.seq);
                }}>
                  Reply
                </button>
              ) : null}
              {canForward ? (
                <button type="button" role="menuitem" tabIndex={-1} onClick={() => {
                  // The dialog gives the focus back to what had it as it opened: the menu's button.
                  close();
                  ui.forward(m);
                }}>
                  Forward
                </button>
              ) : null}
              <button type="button" role="menuitem" tabIndex={-1} onClick={() => act({ type: "react", targetSeq: m.seq, emoji: "👍", on: !liked })}>
                {liked ? "Remove 👍" : "React 👍"}
              </button>
              <button type="button" role="menuitem" tabIndex={-1} onClick={() => act({ type: "pin", targetSeq: m.seq, on: m.pinned === undefined })}>
                {m.pinned ? "Unpin" : "Pin"}
              </button>
              {mine && m.body !== null ? (
                <button
                  type="button"
                  role="menuitem"
                  tabIndex={-1}
                  onClick={() => {
                    const body = window.prompt("Edit message", m.body ?? "");
                    if (body && body !== m.body) act({ type: "edit", targetSeq: m.seq, body });
                    else close();
                  }}
                >
                  Edit
                </button>
              ) : null}
            </>
          ) : null}
          {mine || admin ? (
            <button type="button" role="menuitem" tabIndex={-1} class="danger" onClick={() => (window.confirm("Delete this message for everyone?") ? act({ type: "delete", targetSeq: m.seq }) : close())}>
              Delete for everyone
            </button>
          ) : null}
          <button type="button" role="menuitem" tabIndex={-1} class="danger" onClick={() => run(() => store.hideForMe(conv.id, m.seq))}>
            Delete for me
          </button>
        </div>
      ) : null}
    </div>
  );
}

/**
 * The message a reply quotes, as this device holds it (a reference, not a copy): its sender and a
 * line of it, or that it was deleted. A click shows the original in context.
 */
function ReplyQuote({ store, conversationId, seq }: { store: AppStore; conversationId: string; seq: number }) {
  const held = store.view(conversationId).messages.find((x) => x.seq === seq);
  const quoted = held ? store.decrypted(held) : undefined;
  const text = quoteLine(quoted);
  return (
    <button class="reply-quote" type="button" data-reply-to={seq} title="Show the message" onClick={() => void store.jumpTo(conversationId, seq)}>
      <span class="visually-hidden">Quoted message: </span>
      {quoted ? <span class="sender" dir="auto">{store.userName(quoted.senderId)}</span> : null}
      <span class={`quote-text${quoted?.deletedAt !== undefined ? " deleted" : ""}`} dir="auto">{text}</span>
    </button>
  );
}

/** Text with its own direction, http(s) links as links (built as nodes: no markup), 1-3 emoji large. */
function MessageText({ body, undecrypted = false, mention = null }: { body: string; undecrypted?: boolean; mention?: string | null }) {
  const emoji = undecrypted ? 0 : emojiCount(body);
  return (
    <p class={`text${emoji > 0 && emoji <= 3 ? " emoji-only" : ""}${undecrypted ? " undecrypted" : ""}`} dir="auto">
      {linkify(body).map((part, i) =>
        typeof part === "string" ? (
          mention ? (
            mentionParts(part, mention).map((p, j) => (p.mention ? <strong key={`${i}.${j}`} class="mention">{p.text}</strong> : p.text))
          ) : (
            part
          )
        ) : (
          <a key={i} href={part.href} target="_blank" rel="noopener noreferrer">
            {part.text}
          </a>
        ),
      )}
    </p>
  );
}

function Ticks({ info, group }: { info: TickInfo; group: boolean }) {
  const label = tickLabel(info, group);
  const icon = info.tick === "pending" ? "clock" : info.tick === "failed" ? "alert" : info.tick === "sent" ? "check" : "checks";
  return (
    <span class={`ticks tick-${info.tick}`} title={label} data-tick={info.tick}>
      <Icon name={icon} size={16} label={label} />
      {group && info.readBy > 0 && info.tick !== "read" ? <span class="read-by">{info.readBy}</span> : null}
    </span>
  );
}

function ThreadPanel({ conv, rootSeq }: { conv: Conversation; rootSeq: number }) {
  const { store } = useServices();
  const thread = store.state.thread;
  const view = store.view(conv.id);
  const messages = thread && thread.conversationId === conv.id && thread.rootSeq === rootSeq ? thread.messages : [];
  const entries = entriesFor(store, conv.id, messages, rootSeq);
  const items = buildTimeline(entries, {});
  const close = () => store.navigate({ name: "chat", id: conv.id, thread: null, info: false });
  const listRef = useRef<HTMLDivElement>(null);
  const panel = useRef<HTMLElement>(null);
  useFocusHandoff(panel);
  useLayoutEffect(() => {
    const el = listRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [entries.length]);
  useEscape(close, conv.id);
  const replies = entries.length > 0 ? entries.length - 1 : 0;
  return (
    <aside class="side-panel thread-panel" ref={panel} aria-label="Thread">
      <header class="panel-header">
        <h2>Thread</h2>
        <span class="muted">{replies === 1 ? "1 reply" : `${replies} replies`}</span>
        <button class="icon-btn" type="button" aria-label="Close thread" onClick={close}>
          <Icon name="close" />
        </button>
      </header>
      <div class="messages thread-messages" ref={listRef} role="log" aria-label="Thread messages" tabIndex={0}>
        {thread?.loading && entries.length === 0 ? <p class="loading-messages">Loading thread…</p> : null}
        {items.map((item) =>
          item.type === "entry" ? (
            <MessageRow key={item.key} entry={item.entry} first={item.first} last={item.last} conv={conv} memberIds={conv.members.map((m) => m.userId)} group={conv.type === "group"} receipts={view.receipts} inThread />
          ) : item.type === "day" ? (
            <div class="day-divider" key={item.key} role="separator">
              <span>{dayLabel(item.at, Date.now())}</span>
            </div>
          ) : null,
        )}
      </div>
      {conv.leftSeq === undefined ? <Composer conversationId={conv.id} threadRootSeq={rootSeq} /> : null}
    </aside>
  );
}
