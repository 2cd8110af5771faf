// Text for people: initials, times, sizes, durations, "last seen".
import type { Presence } from "../../../protocol";

export function initials(name: string): string {
  const words = name.trim().split(/[\s_.-]+/u).filter(Boolean);
  const letters = words.length >= 2 ? [words[0]!, words[words.length - 1]!].map((w) => [...w][0] ?? "") : [...(words[0] ?? "?")].slice(0, 1);
  return letters.join("").toUpperCase() || "?";
}

/** A stable hue per id, so a person's avatar keeps its colour everywhere. */
export function hueOf(id: string): number {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) % 360;
  return h;
}

const pad = (n: number) => String(n).padStart(2, "0");

export function clock(t: number): string {
  const d = new Date(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** The conversation list's time column: the clock today, "Yesterday", else a date. */
export function shortTime(t: number, now: number): string {
  const d = new Date(t);
  const today = new Date(now);
  if (d.toDateString() === today.toDateString()) return clock(t);
  const yesterday = new Date(now - 86_400_000);
  if (d.toDateString() === yesterday.toDateString()) return "Yesterday";
  const sameYear = d.getFullYear() === today.getFullYear();
  return `${d.getDate()} ${MONTHS[d.getMonth()]}${sameYear ? "" : ` ${d.getFullYear()}`}`;
}

/** A day divider: "Today", "Yesterday" or a date. */
export function dayLabel(t: number, now: number): string {
  const s = shortTime(t, now);
  return s === clock(t) ? "Today" : s;
}

export function lastSeen(p: Presence | undefined, now: number): string {
  if (!p || p.status === "unknown") return "";
  if (p.status === "online") return "online";
  if (p.lastSeen === null) return "offline";
  const ago = Math.max(0, now - p.lastSeen);
  if (ago < 60_000) return "last seen just now";
  if (ago < 3_600_000) return `last seen ${Math.floor(ago / 60_000)} min ago`;
  const s = shortTime(p.lastSeen, now);
  return s === clock(p.lastSeen) ? `last seen today at ${s}` : `last seen ${s}`;
}

/** When a device was last active, for the device list: `null` (unknown) says nothing. */
export function lastActive(t: number | null, now: number): string {
  if (t === null) return "";
  const ago = Math.max(0, now - t);
  if (ago < 60_000) return "active just now";
  if (ago < 3_600_000) return `active ${Math.floor(ago / 60_000)} min ago`;
  const s = shortTime(t, now);
  return s === clock(t) ? `active today at ${s}` : `active ${s}`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(s / 60)}:${pad(s % 60)}`;
}

// Look-alikes folded together when comparing a display name with usernames: digits and Latin
// letters that pass for others, and the Cyrillic and Greek letters that look Latin.
const LOOKALIKES: Record<string, string> = {
  "0": "o", "1": "l", i: "l", "|": "l", "3": "e", "5": "s", $: "s",
  а: "a", е: "e", о: "o", р: "p", с: "c", х: "x", у: "y", і: "l", ј: "j", ѕ: "s", к: "k", м: "m", т: "t", в: "b", н: "h",
  α: "a", ο: "o", ρ: "p", ν: "v", κ: "k", τ: "t", ι: "l", υ: "u", χ: "x",
};

/** A name reduced to what a reader sees: NFKC, lower case, no invisible characters, a leading `@` dropped, look-alikes folded. */
function skeleton(name: string): string {
  const folded = name.normalize("NFKC").toLowerCase().replace(/\p{Cf}/gu, "").trim().replace(/^@+/u, "");
  return [...folded].map((c) => LOOKALIKES[c] ?? c).join("");
}

/**
 * Whether a display name could be taken for another user's username: it reads (look-alikes
 * folded, with or without `@`) as the username of someone else the client knows, or it starts
 * with `@` and reads as a username not its owner's. The server lets anyone pick any display
 * name; the client then shows `@username` beside it (docs/api.md).
 */
export function imitatesUsername(displayName: string, ownUsername: string, otherUsernames: Iterable<string>): boolean {
  const shown = skeleton(displayName);
  const own = skeleton(ownUsername);
  if (shown === own) return false;
  if (displayName.trim().startsWith("@") && /^[a-z0-9_]{3,32}$/u.test(shown)) return true;
  for (const other of otherUsernames) if (skeleton(other) === shown) return true;
  return false;
}

/** A user's name as shown: the display name, and `@username` beside it when it imitates another's. */
export function shownUserName(user: { id: string; displayName: string; username: string }, known: Iterable<{ id: string; username: string }>): string {
  const others = function* () {
    for (const u of known) if (u.id !== user.id) yield u.username;
  };
  return imitatesUsername(user.displayName, user.username, others()) ? `${user.displayName} (@${user.username})` : user.displayName;
}

/** A voice note's waveform: the loudest sample of each of `bars` equal slices, scaled so the loudest bar is 1. */
export function peaks(samples: ArrayLike<number>, bars: number): number[] {
  const out: number[] = [];
  const step = samples.length / bars;
  for (let i = 0; i < bars; i++) {
    let max = 0;
    for (let j = Math.floor(i * step); j < Math.min(samples.length, Math.floor((i + 1) * step)); j++) max = Math.max(max, Math.abs(samples[j]!));
    out.push(max);
  }
  const top = Math.max(...out);
  return top > 0 ? out.map((p) => p / top) : out;
}
