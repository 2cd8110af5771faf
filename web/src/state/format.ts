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
