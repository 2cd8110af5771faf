// Searching messages (docs/api.md, Message actions: search): the server's full-text search over
// plaintext conversations (`GET /search`), paged by its cursor, asked once typing pauses; and the
// device's own results for E2EE conversations from a LocalSearchPort, merged into the first page.
import { ApiRequestError, Schemas, qs, type Api, type SearchResult } from "../lib/api";
import type { Clock } from "./browser";
import type { LocalSearchPort } from "./ports";
import type { SearchView, StoreCore } from "./storeCore";

/** Typing pauses this long before a query is sent. */
export const SEARCH_DEBOUNCE_MS = 300;
const PAGE = 20;

export class Search {
  private timer: unknown = null;
  /** Bumped by every query and close: answers to an older one are dropped. */
  private generation = 0;

  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly clock: Clock,
    private readonly local: LocalSearchPort,
  ) {}

  private get view(): SearchView | null {
    return this.core.state.search;
  }

  /** Opens the search (every conversation, or one), keeping what was typed if it is the same scope. */
  open(conversationId: string | null): void {
    if (this.view?.conversationId === conversationId) return;
    this.generation++;
    this.core.state.search = { query: "", conversationId, ran: "", results: [], cursor: null, hasMore: false, loading: false, error: null };
    this.core.emit();
  }

  close(): void {
    this.generation++;
    this.cancelTimer();
    this.core.state.search = null;
    this.core.emit();
  }

  /** What is typed: searched once typing pauses; an empty box shows nothing. */
  type(query: string): void {
    const view = this.view;
    if (!view) return;
    view.query = query;
    this.cancelTimer();
    this.generation++;
    if (!query.trim()) {
      Object.assign(view, { ran: "", results: [], cursor: null, hasMore: false, loading: false, error: null });
    } else {
      view.loading = true;
      this.timer = this.clock.setTimeout(() => void this.run(), SEARCH_DEBOUNCE_MS);
    }
    this.core.emit();
  }

  /** The first page now (Enter, or the pause after typing). */
  async run(): Promise<void> {
    const view = this.view;
    this.cancelTimer();
    if (!view) return;
    const q = view.query.trim();
    if (!q) return;
    const generation = ++this.generation;
    view.loading = true;
    view.error = null;
    this.core.emit();
    const scope = view.conversationId ?? undefined;
    const [server, local] = await Promise.allSettled([this.page(q, scope), this.local.localSearch(q, scope)]);
    if (generation !== this.generation || this.view !== view) return;
    const found: SearchResult[] = [];
    if (server.status === "fulfilled") found.push(...server.value.results);
    if (local.status === "fulfilled") found.push(...local.value);
    found.sort((a, b) => b.message.createdAt - a.message.createdAt);
    Object.assign(view, {
      ran: q,
      results: found,
      cursor: server.status === "fulfilled" ? server.value.cursor : null,
      hasMore: server.status === "fulfilled" && server.value.hasMore,
      loading: false,
      error: server.status === "rejected" ? reason(server.reason) : null,
    });
    this.core.emit();
  }

  /** The next page of the query shown. */
  async more(): Promise<void> {
    const view = this.view;
    if (!view || !view.hasMore || view.loading || view.cursor === null) return;
    const generation = this.generation;
    view.loading = true;
    this.core.emit();
    try {
      const page = await this.page(view.ran, view.conversationId ?? undefined, view.cursor);
      if (generation !== this.generation || this.view !== view) return;
      const seen = new Set(view.results.map((r) => `${r.message.conversationId}:${r.message.seq}`));
      view.results = [...view.results, ...page.results.filter((r) => !seen.has(`${r.message.conversationId}:${r.message.seq}`))];
      view.cursor = page.cursor;
      view.hasMore = page.hasMore;
      view.error = null;
    } catch (err) {
      if (generation === this.generation) view.error = reason(err);
    } finally {
      if (generation === this.generation) view.loading = false;
      this.core.emit();
    }
  }

  private page(q: string, conversationId: string | undefined, before?: string) {
    return this.api.call("GET", `/search${qs({ q, conversationId, limit: PAGE, before })}`, Schemas.search);
  }

  private cancelTimer(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }
}

function reason(err: unknown): string {
  if (err instanceof ApiRequestError) return err.status === 400 ? err.message : "Search failed. Try again.";
  return "Search needs a connection.";
}
