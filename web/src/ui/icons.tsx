// Inline SVG icons (no icon font, no extra request); decorative unless given a label.
import type { JSX } from "preact";

type IconName =
  | "send" | "attach" | "mic" | "stop" | "trash" | "back" | "plus" | "group" | "settings" | "info"
  | "close" | "check" | "checks" | "clock" | "alert" | "search" | "down" | "file" | "play" | "pause" | "thread" | "logout" | "bell" | "shield" | "pin";

const PATHS: Record<IconName, string> = {
  send: "M3 20.5 21 12 3 3.5l2.5 7L15 12l-9.5 1.5z",
  attach: "M16.5 6.5 8.6 14.4a2 2 0 0 0 2.8 2.8l7.8-7.8a4 4 0 0 0-5.6-5.6L5.7 11.7a6 6 0 0 0 8.5 8.5l6.3-6.3",
  mic: "M12 15a3 3 0 0 0 3-3V6a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm6-3a6 6 0 0 1-12 0M12 18v3",
  stop: "M7 7h10v10H7z",
  trash: "M4 7h16M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3",
  back: "M15 5l-7 7 7 7",
  plus: "M12 5v14M5 12h14",
  group: "M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm-7 10a7 7 0 0 1 14 0M17 11a3 3 0 1 0 0-6M22 20a5 5 0 0 0-4-5",
  settings: "M12 15a3 3 0 1 0 0-6 3 3 0 0 0 0 6zM19.4 15a1.7 1.7 0 0 0 .3 1.8l.1.1a2 2 0 1 1-2.8 2.8l-.1-.1a1.7 1.7 0 0 0-2.9 1.2V21a2 2 0 1 1-4 0v-.1A1.7 1.7 0 0 0 7 19.4l-.1.1a2 2 0 1 1-2.8-2.8l.1-.1A1.7 1.7 0 0 0 3 13.7H3a2 2 0 1 1 0-4h.1A1.7 1.7 0 0 0 4.6 7l-.1-.1a2 2 0 1 1 2.8-2.8l.1.1A1.7 1.7 0 0 0 10.3 3V3a2 2 0 1 1 4 0v.1a1.7 1.7 0 0 0 2.9 1.2l.1-.1a2 2 0 1 1 2.8 2.8l-.1.1a1.7 1.7 0 0 0 1.2 2.9h.1a2 2 0 1 1 0 4h-.1a1.7 1.7 0 0 0-1.5 1z",
  info: "M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20zM12 16v-4M12 8h0",
  close: "M6 6l12 12M18 6 6 18",
  pin: "M9 4h6M10 4v6l-3 4h10l-3-4V4M12 14v7",
  check: "M4 12.5l5 5L20 7",
  checks: "M1.5 12.5l5 5L17 7M10 16.5l1 1L22 7",
  clock: "M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20zM12 6v6l4 2",
  alert: "M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20zM12 8v5M12 16h0",
  search: "M11 18a7 7 0 1 0 0-14 7 7 0 0 0 0 14zM21 21l-5-5",
  down: "M12 5v14M5 12l7 7 7-7",
  file: "M14 3H6v18h12V7zM14 3v4h4",
  play: "M7 4v16l13-8z",
  pause: "M6 4h4v16H6zM14 4h4v16h-4z",
  thread: "M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z",
  logout: "M15 4h4v16h-4M10 17l5-5-5-5M15 12H3",
  bell: "M18 16V11a6 6 0 0 0-12 0v5l-2 2h16zM10 21h4",
  shield: "M12 3 5 6v6c0 4.5 3 7.7 7 9 4-1.3 7-4.5 7-9V6zM9 12l2 2 4-4",
};

export function Icon({ name, label, size = 20 }: { name: IconName; label?: string; size?: number }): JSX.Element {
  const filled = name === "send" || name === "play" || name === "pause" || name === "stop";
  return (
    <svg
      class={`icon icon-${name}`}
      width={size}
      height={size}
      viewBox="0 0 24 24"
      fill={filled ? "currentColor" : "none"}
      stroke={filled ? "none" : "currentColor"}
      stroke-width="2"
      stroke-linecap="round"
      stroke-linejoin="round"
      role={label ? "img" : undefined}
      aria-label={label}
      aria-hidden={label ? undefined : "true"}
    >
      <path d={PATHS[name]} />
    </svg>
  );
}
