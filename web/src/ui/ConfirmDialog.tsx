import type { ComponentChildren } from "preact";
import { useRef, useState } from "preact/hooks";
import { keepFocusIn, useFocusHandoff } from "./focus";

let dialogs = 0;

/**
 * Asks before something that cannot be undone. A modal alert dialog: the focus moves to Cancel (the
 * safe answer) and stays inside while it is open, Escape cancels (without closing the panel
 * behind it), and the focus goes back to what opened it.
 */
export function ConfirmDialog({ title, children, confirmLabel, onConfirm, onCancel }: {
  title: string;
  children: ComponentChildren;
  confirmLabel: string;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const [ids] = useState(() => {
    const n = ++dialogs;
    return { title: `confirm-title-${n}`, body: `confirm-body-${n}` };
  });
  const box = useRef<HTMLDivElement>(null);
  const cancel = useRef<HTMLButtonElement>(null);
  useFocusHandoff(box, cancel);
  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === "Escape") {
      // The panel behind closes on Escape too (useEscape, on the document): this one is the dialog's.
      e.stopPropagation();
      onCancel();
      return;
    }
    if (box.current) keepFocusIn(e, box.current);
  };
  return (
    <div class="dialog-backdrop" onClick={(e) => e.target === e.currentTarget && onCancel()}>
      <div class="dialog" role="alertdialog" aria-modal="true" aria-labelledby={ids.title} aria-describedby={ids.body} ref={box} onKeyDown={onKeyDown}>
        <h2 id={ids.title}>{title}</h2>
        <p id={ids.body} dir="auto">{children}</p>
        <div class="dialog-actions">
          <button class="btn" type="button" ref={cancel} onClick={onCancel}>
            Cancel
          </button>
          <button class="btn btn-danger" type="button" onClick={onConfirm}>
            {confirmLabel}
          </button>
        </div>
      </div>
    </div>
  );
}
