// Searching messages: every conversation (a screen of its own, from the sidebar) or one (a panel
// beside the chat). The server's matched words are marked with <mark>, built as nodes, never as
// HTML. A result opens its conversation at that message, highlighted. Loaded on first use.
import { useEffect, useRef } from "preact/hooks";
import type { AppStore } from "../app/appStore";
import type { SearchResult } from "../lib/api";
import { shortTime } from "../state/format";
import { useServices } from "./context";
import { useFocusHandoff } from "./focus";
import { Icon } from "./icons";

export function SearchScreen({ conversationId, onClose }: { conversationId: string | null; onClose: () => void }) {
  const { store } = useServices();
  const input = useRef<HTMLInputElement>(null);
  const root = useRef<HTMLElement>(null);
  useFocusHandoff(root, input);
  useEffect(() => {
    store.openSearch(conversationId);
    return () => store.closeSearch();
  }, [conversationId]);
  const view = store.state.search;
  const inOne = conversationId !== null;
  const label = inOne ? "Search in this conversation" : "Search messages";
  const results = view?.conversationId === conversationId ? view.results : [];
  const status = !view || !view.query.trim()
    ? ""
    : view.loading && results.length === 0
      ? "Searching…"
      : view.error
        ? view.error
        : view.ran && results.length === 0
          ? `No messages match “${view.ran}”.`
          : view.ran
            ? `${results.length}${view.hasMore ? "+" : ""} ${results.length === 1 ? "result" : "results"}`
            : "";
  const open = (r: SearchResult) => {
    void store.openMessage(r.message);
    // On a phone the panel covers the chat: close it to show the message.
    if (inOne && window.matchMedia("(max-width: 760px)").matches) onClose();
  };
  const body = (
    <>
      <header class="panel-header">
        {inOne ? null : (
          <button class="icon-btn" type="button" aria-label="Back to chats" onClick={onClose}>
            <Icon name="back" />
          </button>
        )}
        <h2 id={inOne ? "search-in-title" : "search-title"}>{inOne ? "Search" : "Search messages"}</h2>
        {inOne ? (
          <button class="icon-btn" type="button" aria-label="Close search" onClick={onClose}>
            <Icon name="close" />
          </button>
        ) : null}
      </header>
      <div class="search search-messages">
        <Icon name="search" size={16} />
        <input
          ref={input}
          type="search"
          aria-label={label}
          placeholder={label}
          value={view?.query ?? ""}
          onInput={(e) => store.typeSearch(e.currentTarget.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter") {
              e.preventDefault();
              void store.runSearch();
            } else if (e.key === "Escape" && inOne) {
              e.stopPropagation();
              onClose();
            }
          }}
        />
      </div>
      <p class="search-status muted" role="status" aria-live="polite">{status}</p>
      <ul class="search-results" aria-label="Results">
        {results.map((r) => (
          <li key={`${r.message.conversationId}:${r.message.seq}`}>
            <button class="search-result" type="button" data-seq={r.message.seq} onClick={() => open(r)}>
              <span class="search-result-head">
                <span class="search-result-who" dir="auto">
                  {inOne ? store.userName(r.message.senderId) : `${conversationTitle(store, r.message.conversationId)} · ${store.userName(r.message.senderId)}`}
                </span>
                <time class="muted" dateTime={new Date(r.message.createdAt).toISOString()}>{shortTime(r.message.createdAt, Date.now())}</time>
              </span>
              <span class="snippet" dir="auto">
                {r.snippet.map((part, i) => (part.match ? <mark key={i}>{part.text}</mark> : part.text))}
              </span>
            </button>
          </li>
        ))}
      </ul>
      {view?.hasMore ? (
        <button class="btn more-results" type="button" disabled={view.loading} onClick={() => void store.moreResults()}>
          {view.loading ? "Loading…" : "More results"}
        </button>
      ) : null}
    </>
  );
  return inOne ? (
    <aside class="side-panel search-panel" ref={root} aria-labelledby="search-in-title">
      {body}
    </aside>
  ) : (
    <section class="search-screen" ref={root} aria-labelledby="search-title">
      {body}
    </section>
  );
}

function conversationTitle(store: AppStore, id: string): string {
  const conv = store.state.conversations.get(id);
  return conv ? store.title(conv) : "Conversation";
}
