// Forwarding a message: pick one or more conversations (found by name) and the message is sent
// to each, marked forwarded, its media by id (the server shares them: no upload). From a plaintext
// conversation to plaintext ones, from an E2EE one to E2EE ones (store.forwardable). Loaded on
// first use.
import { useRef, useState } from "preact/hooks";
import type { Message } from "../../../protocol";
import { Avatar } from "./Avatar";
import { useServices } from "./context";
import { keepFocusIn, useFocusHandoff } from "./focus";

export function ForwardDialog({ message, onClose }: { message: Message; onClose: () => void }) {
  const { store } = useServices();
  const [filter, setFilter] = useState("");
  const [picked, setPicked] = useState<string[]>([]);
  const [sending, setSending] = useState(false);
  const dialog = useRef<HTMLDivElement>(null);
  const search = useRef<HTMLInputElement>(null);
  useFocusHandoff(dialog, search);
  const f = filter.trim().toLocaleLowerCase();
  const me = store.me;
  const fromE2ee = store.forwardable(message)?.e2ee ?? false;
  const targets = store
    .sortedConversations()
    .filter((c) => c.e2ee === fromE2ee && c.leftSeq === undefined && c.members.some((m) => m.userId === me))
    .filter((c) => !f || store.title(c).toLocaleLowerCase().includes(f));
  const toggle = (id: string) => setPicked((p) => (p.includes(id) ? p.filter((x) => x !== id) : [...p, id]));
  const send = async () => {
    if (picked.length === 0) return;
    setSending(true);
    try {
      await store.forward(message, picked);
      store.notify(picked.length === 1 ? "Forwarded." : `Forwarded to ${picked.length} chats.`);
      onClose();
    } catch (err) {
      setSending(false);
      store.notify(err instanceof Error ? err.message : "Not forwarded.");
    }
  };
  return (
    <div class="dialog-backdrop" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <div
        class="dialog forward-dialog"
        ref={dialog}
        role="dialog"
        aria-modal="true"
        aria-labelledby="forward-title"
        onKeyDown={(e) => {
          if (e.key === "Escape") {
            e.stopPropagation();
            onClose();
          } else keepFocusIn(e, e.currentTarget);
        }}
      >
        <h2 id="forward-title">Forward message</h2>
        <input ref={search} type="search" class="forward-search" aria-label="Search conversations" placeholder="Search conversations" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} />
        <ul class="forward-list" aria-label="Conversations">
          {targets.map((c) => {
            const title = store.title(c);
            const other = c.type === "direct" ? store.otherMember(c) : null;
            return (
              <li key={c.id}>
                <label class="forward-target" data-conversation={c.id}>
                  <input type="checkbox" checked={picked.includes(c.id)} onChange={() => toggle(c.id)} />
                  <Avatar id={c.type === "group" ? c.id : other ?? c.id} name={title} size={28} group={c.type === "group"} />
                  <span dir="auto">{title}</span>
                </label>
              </li>
            );
          })}
          {targets.length === 0 ? <li class="muted">No chats match.</li> : null}
        </ul>
        <div class="dialog-actions">
          <button class="btn" type="button" onClick={onClose}>
            Cancel
          </button>
          <button class="btn btn-primary" type="button" disabled={picked.length === 0 || sending} onClick={() => void send()}>
            {picked.length > 1 ? `Forward to ${picked.length} chats` : "Forward"}
          </button>
        </div>
      </div>
    </div>
  );
}
