// This user's settings of a conversation, in its info panel: mute (8 hours, 1 week, always) or
// unmute, archive or unarchive, pin to the top of the list or unpin. Each is stored by the server
// for all of the user's devices (docs/api.md, Conversation settings).
import { useEffect, useRef, useState } from "preact/hooks";
import { isMuted, MUTED_ALWAYS, type Conversation, type ConversationSettingsBody } from "../../../protocol";
import { ApiRequestError } from "../lib/api";
import { clock, shortTime } from "../state/format";
import { useServices } from "./context";
import { Icon } from "./icons";

const HOUR = 3600_000;
const MUTES = [
  { label: "8 hours", ms: 8 * HOUR },
  { label: "1 week", ms: 7 * 24 * HOUR },
] as const;

/** "Muted until 18:30", "Muted until 14 Dec, 09:00", "Muted". */
function mutedText(mutedUntil: number, now: number): string {
  if (mutedUntil >= MUTED_ALWAYS) return "Muted";
  const day = shortTime(mutedUntil, now);
  return `Muted until ${day === clock(mutedUntil) ? day : `${day}, ${clock(mutedUntil)}`}`;
}

export function ConversationSettingsSection({ conv }: { conv: Conversation }) {
  const { store } = useServices();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const now = Date.now();
  const settings = conv.settings;
  const muted = isMuted(settings, now);
  const archived = settings?.archived ?? false;
  const pinned = (settings?.pinnedAt ?? null) !== null;
  // A mute or an unmute replaces the buttons pressed: the focus moves to what replaced them.
  const unmuteButton = useRef<HTMLButtonElement>(null);
  const firstMuteButton = useRef<HTMLButtonElement>(null);
  const focusAfter = useRef<"muted" | "unmuted" | null>(null);
  // Once the buttons are enabled again (a disabled button takes no focus).
  useEffect(() => {
    if (busy) return;
    if (focusAfter.current === "muted" && muted) unmuteButton.current?.focus();
    if (focusAfter.current === "unmuted" && !muted) firstMuteButton.current?.focus();
    focusAfter.current = null;
  }, [muted, busy]);

  const change = async (body: ConversationSettingsBody, then: "muted" | "unmuted" | null = null) => {
    setError(null);
    setBusy(true);
    focusAfter.current = then;
    try {
      await store.changeConversationSettings(conv.id, body);
    } catch (err) {
      setError(err instanceof ApiRequestError ? err.message : "That did not work. Try again.");
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="conv-settings" aria-labelledby={`conv-settings-${conv.id}`}>
      <h4 id={`conv-settings-${conv.id}`}>Notifications and list</h4>
      {muted && settings?.mutedUntil != null ? (
        <div class="setting-row">
          <span class="setting-state" data-testid="muted-state">
            <Icon name="muted" size={16} /> {mutedText(settings.mutedUntil, now)}
          </span>
          <button class="btn" type="button" ref={unmuteButton} disabled={busy} onClick={() => void change({ mutedUntil: null }, "unmuted")}>
            Unmute
          </button>
        </div>
      ) : (
        <div class="setting-row mute-choices" role="group" aria-label="Mute notifications">
          <span class="setting-state">
            <Icon name="bell" size={16} /> Mute for
          </span>
          {MUTES.map((m, i) => (
            <button
              key={m.label}
              class="btn"
              type="button"
              ref={i === 0 ? firstMuteButton : undefined}
              disabled={busy}
              aria-label={`Mute for ${m.label}`}
              onClick={() => void change({ mutedUntil: Date.now() + m.ms }, "muted")}
            >
              {m.label}
            </button>
          ))}
          <button class="btn" type="button" disabled={busy} aria-label="Mute always" onClick={() => void change({ mutedUntil: MUTED_ALWAYS }, "muted")}>
            Always
          </button>
        </div>
      )}
      <div class="setting-row">
        <button class="btn" type="button" disabled={busy} onClick={() => void change({ pinned: !pinned })}>
          <Icon name="pin" /> {pinned ? "Unpin" : "Pin to top"}
        </button>
        <button class="btn" type="button" disabled={busy} onClick={() => void change({ archived: !archived })}>
          <Icon name="archive" /> {archived ? "Unarchive" : "Archive"}
        </button>
      </div>
      <p class="form-error" role="alert">{error ?? ""}</p>
    </section>
  );
}
