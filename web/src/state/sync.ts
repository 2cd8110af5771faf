// Catching up after an absence: GET /messages?since= pages through every conversation the
// user belongs to, exactly once each, and hands back the cursor to resume from next time.
import type { Message } from "../../../protocol";

export interface SincePage {
  messages: Message[];
  cursor: string;
  hasMore: boolean;
}

/**
 * Pages from `cursor` until the server says there is no more, calling `onPage` with each page
 * (so a long catch-up renders as it goes). Returns the cursor to store. `maxPages` bounds one
 * run; the next run continues from the returned cursor.
 */
export async function syncSince(
  cursor: string,
  fetchPage: (since: string) => Promise<SincePage>,
  onPage: (messages: Message[]) => void | Promise<void>,
  maxPages = 100,
): Promise<{ cursor: string; complete: boolean }> {
  let since = cursor;
  for (let i = 0; i < maxPages; i++) {
    const page = await fetchPage(since);
    if (page.messages.length > 0) await onPage(page.messages);
    since = page.cursor;
    if (!page.hasMore) return { cursor: since, complete: true };
  }
  return { cursor: since, complete: false };
}

/** Groups a sync page by conversation, each group in seq order. */
export function byConversation(messages: readonly Message[]): Map<string, Message[]> {
  const out = new Map<string, Message[]>();
  for (const m of messages) {
    const list = out.get(m.conversationId) ?? [];
    list.push(m);
    out.set(m.conversationId, list);
  }
  for (const list of out.values()) list.sort((a, b) => a.seq - b.seq);
  return out;
}
