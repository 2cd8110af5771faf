// What a message's text becomes on screen: system events as sentences, links, emoji-only messages.
// Plain functions (no DOM): the views build nodes from what these return, never HTML.
import { SystemEvent } from "../../../protocol";

/**
 * "Ann created the group", "You added Bob", "Ann added you and Cy": a system message's body is a
 * JSON event. The signed-in user is "You" as the actor and "you" as the subject.
 */
/** A `system` message's body, or null if it is not one. */
export function parseSystemEvent(body: string | null): SystemEvent | null {
  try {
    const parsed = SystemEvent.safeParse(JSON.parse(body ?? "null"));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export function systemSentence(body: string | null, me: string, name: (id: string) => string, group: boolean): string {
  const event = parseSystemEvent(body);
  if (!event) return "Conversation updated";
  const actor = event.actorId === me ? "You" : name(event.actorId);
  const names = event.userIds.map((id) => (id === me ? (event.actorId === me ? "yourself" : "you") : name(id)));
  const list = names.length <= 1 ? names.join("") : `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
  switch (event.event) {
    case "created":
      return `${actor} created the ${group ? "group" : "conversation"}`;
    case "added":
      return `${actor} added ${list}`;
    case "removed":
      return `${actor} removed ${list}`;
    case "left":
      return `${actor} left`;
    case "deviceLoggedOut":
      return `${event.actorId === me ? "One of your devices" : `A device of ${name(event.actorId)}`} logged out`;
    case "renamed":
      return `${actor} renamed the group to “${event.title ?? ""}”`;
    case "descriptionChanged":
      return event.description ? `${actor} changed the group description` : `${actor} removed the group description`;
    case "promoted":
      return `${actor} made ${list} ${names.length === 1 ? "an admin" : "admins"}`;
    case "demoted":
      return event.userIds.length === 1 && event.userIds[0] === event.actorId ? `${actor} stepped down as admin` : `${actor} dismissed ${list} as admin`;
  }
}

export type TextPart = string | { href: string; text: string };

const URL_RE = /\bhttps?:\/\/[^\s<>"]+/giu;
const TRAILING = /[.,:;!?'"\]}>]+$/u;

/** Splits text into plain runs and http(s) links; anything else (javascript:, data:) stays text. */
export function linkify(text: string): TextPart[] {
  const parts: TextPart[] = [];
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let raw = match[0].replace(TRAILING, "");
    // A closing parenthesis belongs to the link only when the link opened one: "(see https://x.y/a)".
    while (raw.endsWith(")") && (raw.match(/\(/gu)?.length ?? 0) < (raw.match(/\)/gu)?.length ?? 0)) raw = raw.slice(0, -1).replace(TRAILING, "");
    let href: string;
    try {
      const url = new URL(raw);
      if (url.protocol !== "http:" && url.protocol !== "https:") continue;
      href = url.href;
    } catch {
      continue;
    }
    const start = match.index;
    if (start > last) parts.push(text.slice(last, start));
    parts.push({ href, text: raw });
    last = start + raw.length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

const EMOJI = /^(?:\p{Extended_Pictographic}|\p{Regional_Indicator}|\p{Emoji_Modifier}|\p{Emoji_Component}|\u200d|\ufe0f|\u20e3)+$/u;
const NOT_EMOJI = /[\p{L}\p{N}]/u;

/** How many emoji a message is, when it is nothing else (1 to 3 are shown large); 0 otherwise. */
export function emojiCount(text: string): number {
  const trimmed = text.replace(/\s+/gu, "");
  if (!trimmed || trimmed.length > 64) return 0;
  let n = 0;
  for (const { segment } of new Intl.Segmenter(undefined, { granularity: "grapheme" }).segment(trimmed)) {
    // Keycaps ("1️⃣") are digits with a combining mark: count them, but no bare digit or letter.
    const keycap = /^[0-9#*]\ufe0f?\u20e3$/u.test(segment);
    if (!keycap && (!EMOJI.test(segment) || NOT_EMOJI.test(segment) || !/\p{Extended_Pictographic}|\p{Regional_Indicator}/u.test(segment))) return 0;
    n++;
  }
  return n;
}
