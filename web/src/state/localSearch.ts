// Search in end-to-end encrypted conversations, on the device: the server holds no text there, so
// each device indexes what it decrypted (docs/e2ee.md, "Local search"). One index per conversation
// (words to seqs, and each message as the search shows it), kept in the account's IndexedDB beside
// the decrypted text and changed with it: on decrypt, edit and delete. A query matches as the
// server's `GET /search` does (every word, the last also as a prefix; case and accents ignored)
// and its answer has that route's shape, so one screen shows both. Plain functions, no storage.
import type { Message } from "../../../protocol";

/** Where a conversation's index is kept in the account's local store. */
export const searchKey = (conversationId: string): string => `mls:search:${conversationId}`;

/** The words a text is found by: letters and digits, lower case, accents removed. */
export function terms(text: string): string[] {
  return text.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

/** One conversation's index. `words`: each word with the seqs holding it, ascending. */
export interface SearchIndex {
  docs: Record<number, Message>;
  words: Record<string, number[]>;
}

export function emptyIndex(): SearchIndex {
  return { docs: {}, words: {} };
}

/** Puts a message's current text in the index (or takes it out: `null`, deleted or hidden). */
export function indexMessage(index: SearchIndex, seq: number, message: Message | null): void {
  const before = index.docs[seq];
  if (before) {
    for (const w of new Set(terms(before.body ?? ""))) {
      const seqs = (index.words[w] ?? []).filter((s) => s !== seq);
      if (seqs.length > 0) index.words[w] = seqs;
      else delete index.words[w];
    }
    delete index.docs[seq];
  }
  if (!message || !message.body) return;
  index.docs[seq] = message;
  for (const w of new Set(terms(message.body))) {
    const seqs = index.words[w] ?? [];
    seqs.push(seq);
    seqs.sort((a, b) => a - b);
    index.words[w] = seqs;
  }
}

/** A part of a snippet; `match`: a word the query matched. */
export interface SnippetPart {
  text: string;
  match: boolean;
}

/** `GET /search`'s answer, and the local search's. */
export interface SearchResults {
  results: { message: Message; snippet: SnippetPart[] }[];
  cursor: string | null;
  hasMore: boolean;
}

const SNIPPET_WORDS = 16;
const QUERY_WORDS = 10;

/** The seqs of one index whose text holds every word of `query`, the last also as a prefix. */
export function matches(index: SearchIndex, query: string): number[] {
  const words = terms(query).slice(0, QUERY_WORDS);
  if (words.length === 0) return [];
  let found: Set<number> | null = null;
  words.forEach((word, i) => {
    const seqs = new Set<number>(index.words[word] ?? []);
    if (i === words.length - 1) for (const [w, s] of Object.entries(index.words)) if (w.startsWith(word)) for (const seq of s) seqs.add(seq);
    found = found === null ? seqs : new Set([...(found as Set<number>)].filter((s) => seqs.has(s)));
  });
  return [...(found ?? new Set<number>())].sort((a, b) => a - b);
}

/** Up to 16 words around the first match, the matched words marked (as the server's snippet). */
export function snippet(text: string, query: string): SnippetPart[] {
  const wanted = terms(query);
  const last = wanted[wanted.length - 1];
  const hit = (word: string) => terms(word).some((t) => wanted.slice(0, -1).includes(t) || (last !== undefined && t.startsWith(last)));
  const words = text.split(/(\s+)/u).filter((w) => w.length > 0);
  const real = words.map((w, i) => ({ w, i })).filter((x) => /\S/u.test(x.w));
  const first = Math.max(0, real.findIndex((x) => hit(x.w)));
  const from = Math.max(0, Math.min(first - Math.floor(SNIPPET_WORDS / 4), real.length - SNIPPET_WORDS));
  const shown = real.slice(from, from + SNIPPET_WORDS);
  if (shown.length === 0) return [];
  const parts: SnippetPart[] = [];
  const push = (piece: string, match: boolean) => {
    const prev = parts[parts.length - 1];
    if (prev && prev.match === match) prev.text += piece;
    else parts.push({ text: piece, match });
  };
  if (from > 0) push("…", false);
  for (let k = shown[0]!.i; k <= shown[shown.length - 1]!.i; k++) {
    const w = words[k]!;
    push(w, /\S/u.test(w) && hit(w));
  }
  if (from + SNIPPET_WORDS < real.length) push("…", false);
  return parts;
}

/** The cursor of a result: its time and place, newest first. */
function cursorOf(m: Message): string {
  return `${m.createdAt}.${m.seq}.${m.conversationId}`;
}

function newerFirst(a: Message, b: Message): number {
  return b.createdAt - a.createdAt || b.seq - a.seq || (a.conversationId < b.conversationId ? 1 : a.conversationId > b.conversationId ? -1 : 0);
}

/**
 * Searches indexes (one per conversation), newest first, `limit` at a time from `before` (the
 * cursor of the previous page), in `GET /search`'s shape.
 */
export function searchIndexes(indexes: readonly SearchIndex[], query: string, options: { limit?: number; before?: string } = {}): SearchResults {
  const limit = options.limit ?? 20;
  const found: Message[] = [];
  for (const index of indexes) for (const seq of matches(index, query)) found.push(index.docs[seq]!);
  found.sort(newerFirst);
  let start = 0;
  if (options.before !== undefined) {
    const i = found.findIndex((m) => cursorOf(m) === options.before);
    start = i === -1 ? found.length : i + 1;
  }
  const page = found.slice(start, start + limit);
  return {
    results: page.map((message) => ({ message, snippet: snippet(message.body ?? "", query) })),
    cursor: page.length > 0 ? cursorOf(page[page.length - 1]!) : null,
    hasMore: start + limit < found.length,
  };
}
