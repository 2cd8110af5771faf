import { useEffect, useState } from "preact/hooks";

type ElementRef = { readonly current: HTMLElement | null };

/**
 * A panel or dialog takes the focus as it opens (`first`, when given: the thread panel's composer
 * focuses itself) and gives it back to what opened it as it closes, so a keyboard or screen reader
 * user is neither left behind nor dropped at the top of the page. The opener is read while the
 * panel first renders, before any effect (a child's included) has moved the focus.
 */
export function useFocusHandoff(panel: ElementRef, first?: ElementRef): void {
  const [opener] = useState(() => document.activeElement);
  useEffect(() => {
    first?.current?.focus();
    const el = panel.current;
    return () => {
      // Only when the focus was still in the panel (or fell to the body as it went): a click
      // elsewhere that closed it keeps its own focus.
      const active = document.activeElement;
      const inPanel = !active || active === document.body || !!el?.contains(active);
      if (inPanel && opener instanceof HTMLElement && opener.isConnected) opener.focus();
    };
  }, []);
}

/** Escape closes the panel: `onEscape` runs on the key anywhere in the page while `key` stands. */
export function useEscape(onEscape: () => void, key: unknown): void {
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") onEscape();
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [key]);
}

/** A modal dialog keeps the focus: Tab from its last control goes to its first, Shift+Tab back. */
export function keepFocusIn(e: KeyboardEvent, box: HTMLElement): void {
  if (e.key !== "Tab") return;
  const controls = [...box.querySelectorAll<HTMLElement>("input, button:not(:disabled)")];
  const first = controls[0];
  const last = controls[controls.length - 1];
  if (!first || !last) return;
  if (e.shiftKey && document.activeElement === first) {
    e.preventDefault();
    last.focus();
  } else if (!e.shiftKey && document.activeElement === last) {
    e.preventDefault();
    first.focus();
  }
}
