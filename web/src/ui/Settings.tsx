import { useRef, useState } from "preact/hooks";
import type { Theme } from "../app/appStore";
import { Devices } from "./lazy";
import { useServices } from "./context";
import { useFocusHandoff } from "./focus";
import { Icon } from "./icons";
import { ProfileSettings } from "./Profile";

export function Settings() {
  const { store } = useServices();
  const s = store.state;
  const [busy, setBusy] = useState(false);
  const page = useRef<HTMLElement>(null);
  const heading = useRef<HTMLHeadingElement>(null);
  useFocusHandoff(page, heading);
  const [confirmSignOut, setConfirmSignOut] = useState(false);
  // Signing out deletes this device's copy of the account, the outbox with it: say so first.
  const waiting = s.outbox.length;
  const offline = s.connection === "offline";
  const signOut = () => {
    if ((waiting > 0 || offline) && !confirmSignOut) setConfirmSignOut(true);
    else void store.logout();
  };
  const permission = "Notification" in window ? Notification.permission : "denied";
  const togglePush = async () => {
    setBusy(true);
    try {
      if (s.pushEnabled) await store.disablePush();
      else await store.enablePush();
    } catch {
      store.notify(store.state.connection === "offline" ? "Could not change notifications. Try again when online." : "Could not change notifications.");
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="page" ref={page} aria-label="Settings">
      <header class="chat-header">
        <button class="icon-btn" type="button" aria-label="Back" onClick={() => store.navigate({ name: "list" })}>
          <Icon name="back" />
        </button>
        <div class="chat-title">
          <h2 ref={heading} tabIndex={-1}>Settings</h2>
        </div>
      </header>
      <div class="page-body">
        <ProfileSettings />
        <fieldset class="field-group">
          <legend>Theme</legend>
          {(["system", "light", "dark"] as Theme[]).map((t) => (
            <label class="radio" key={t}>
              <input type="radio" name="theme" value={t} checked={s.theme === t} onChange={() => store.setTheme(t)} />
              {t === "system" ? "Same as device" : t === "light" ? "Light" : "Dark"}
            </label>
          ))}
        </fieldset>
        {s.caps.push ? (
          <fieldset class="field-group">
            <legend>Notifications</legend>
            <p class="muted">Get a notification for new messages when this app is closed.</p>
            <button class="btn" type="button" disabled={busy || permission === "denied"} onClick={() => void togglePush()} aria-pressed={s.pushEnabled}>
              <Icon name="bell" /> {s.pushEnabled ? "Turn off notifications" : "Turn on notifications"}
            </button>
            {permission === "denied" ? <p class="muted">Notifications are blocked in the browser's site settings.</p> : null}
          </fieldset>
        ) : null}
        <Devices />
        {confirmSignOut ? (
          <div class="confirm sign-out-confirm" role="alertdialog" aria-label="Confirm signing out" aria-describedby="sign-out-warning">
            <p id="sign-out-warning">
              {waiting > 0 ? `${waiting} ${waiting === 1 ? "message is" : "messages are"} still waiting to be sent and will be lost. ` : ""}
              {offline ? "You are offline: this device will be signed out of the server when it is back online." : ""}
            </p>
            <button class="btn btn-danger" type="button" onClick={signOut}>
              Sign out anyway
            </button>
            <button class="btn" type="button" onClick={() => setConfirmSignOut(false)}>
              Cancel
            </button>
          </div>
        ) : (
          <button class="btn btn-danger" type="button" onClick={signOut}>
            <Icon name="logout" /> Sign out
          </button>
        )}
      </div>
    </section>
  );
}
