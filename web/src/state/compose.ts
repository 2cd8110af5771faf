// What composing a reply, a mention or a forward needs, without DOM: the line a quote shows, the
// `@` being typed, the name a pick inserts, and which picked members the text still names.
import { ACTION_LIMITS, type Message } from "../../../protocol";

/** The one line a quote shows of a message (docs/web.md, Message actions). */
export function quoteLine(message: Message | undefined): string {
  if (!message) return "Earlier message";
  if (message.deletedAt !== undefined) return "This message was deleted";
  const text = message.body?.split("\n").find((line) => line.trim()) ?? "";
  if (text) return text.length > 120 ? `${text.slice(0, 119)}…` : text;
  const first = message.media[0];
  if (!first) return message.hidden ? "Message deleted for you" : "Message";
  if (first.contentType.startsWith("image/")) return "Photo";
  if (first.contentType.startsWith("video/")) return "Video";
  if (first.contentType.startsWith("audio/")) return "Voice message";
  return first.name || "File";
}

/** The longest text after `@` that still filters names: a name with a space or two. */
const QUERY_MAX = 40;

/**
 * The mention being typed at the caret: an `@` at the start or after a space, and what follows it
 * up to the caret (no line break). Null when the caret is not in one.
 */
export function mentionAt(text: string, caret: number): { start: number; query: string } | null {
  const before = text.slice(0, caret);
  const at = before.lastIndexOf("@");
  if (at < 0) return null;
  if (at > 0 && !/\s/u.test(before[at - 1]!)) return null;
  const query = before.slice(at + 1);
  if (query.length > QUERY_MAX || /[\n@]/u.test(query)) return null;
  return { start: at, query };
}

export interface Candidate {
  userId: string;
  name: string;
}

/** The members whose name (or username) starts with the query, or has a word that does; at most `max`. */
export function filterCandidates(candidates: readonly (Candidate & { username?: string })[], query: string, max = 8): Candidate[] {
  const q = query.trim().toLocaleLowerCase();
  const fits = (c: Candidate & { username?: string }) => {
    if (!q) return true;
    const name = c.name.toLocaleLowerCase();
    return name.startsWith(q) || name.split(/\s+/u).some((w) => w.startsWith(q)) || (c.username?.toLocaleLowerCase().startsWith(q) ?? false);
  };
  return candidates.filter(fits).slice(0, max).map(({ userId, name }) => ({ userId, name }));
}

/** The text with the `@query` at `start` replaced by `@Name `, and the caret after it. */
export function insertMention(text: string, start: number, caret: number, name: string): { text: string; caret: number } {
  const inserted = `@${name} `;
  return { text: text.slice(0, start) + inserted + text.slice(caret), caret: start + inserted.length };
}

/** The ids of the picked members the text still names (`@Name`), each once, at most the protocol's limit. */
export function mentionsIn(text: string, picked: readonly Candidate[]): string[] {
  const ids: string[] = [];
  for (const p of picked) {
    if (ids.includes(p.userId) || !namedIn(text, p.name)) continue;
    ids.push(p.userId);
  }
  return ids.slice(0, ACTION_LIMITS.mentionsMax);
}

/** `@Name` in the text, not followed by more of a word (`@Ann` does not name Anna). */
function namedIn(text: string, name: string): boolean {
  const needle = `@${name}`;
  for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + 1)) {
    const next = text[i + needle.length];
    if (next === undefined || !/[\p{L}\p{N}_]/u.test(next)) return true;
  }
  return false;
}

/** A body cut into plain text and the spans that mention `name` (`@name`), to mark a mention of the reader. */
export function mentionParts(body: string, name: string): { text: string; mention: boolean }[] {
  const needle = `@${name}`;
  const parts: { text: string; mention: boolean }[] = [];
  let from = 0;
  for (let i = body.indexOf(needle); i >= 0; i = body.indexOf(needle, i + needle.length)) {
    const next = body[i + needle.length];
    if (next !== undefined && /[\p{L}\p{N}_]/u.test(next)) continue;
    if (i > from) parts.push({ text: body.slice(from, i), mention: false });
    parts.push({ text: needle, mention: true });
    from = i + needle.length;
  }
  if (from < body.length) parts.push({ text: body.slice(from), mention: false });
  return parts;
}
