// Settings' device list: every device signed in to this account, this one marked, each renamed
// from here, and the others signed out from here after a confirmation. It follows sign-ins,
// sign-outs and renames made elsewhere (the user socket's `devices` frame).
import { useEffect, useRef, useState } from "preact/hooks";
import type { OwnDevice } from "../../../protocol";
import { lastActive, shortTime } from "../state/format";
import { useServices } from "./context";
import { useEscape, useFocusHandoff } from "./focus";

type Listing = { state: "loading" } | { state: "failed" } | { state: "ready"; devices: OwnDevice[] };

export function Devices() {
  const { store } = useServices();
  const [listing, setListing] = useState<Listing>({ state: "loading" });
  const [confirming, setConfirming] = useState<string | null>(null);
  const [renaming, setRenaming] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const heading = useRef<HTMLHeadingElement>(null);
  const section = useRef<HTMLElement>(null);
  const alive = useRef(true);
  // A closed confirmation or rename form gives the focus back to the button it replaced, rendered again in its place.
  const [refocus, setRefocus] = useState<string | null>(null);
  useEffect(() => {
    if (refocus === null) return;
    section.current?.querySelector<HTMLButtonElement>(refocus)?.focus();
    setRefocus(null);
  }, [refocus]);
  const cancel = (id: string) => {
    setConfirming(null);
    setRefocus(`button[data-sign-out="${CSS.escape(id)}"]`);
  };

  const refresh = async () => {
    try {
      const devices = await store.devices();
      if (alive.current) setListing({ state: "ready", devices });
    } catch {
      if (alive.current) setListing((l) => (l.state === "ready" ? l : { state: "failed" }));
    }
  };
  useEffect(() => {
    return () => {
      alive.current = false;
    };
  }, []);
  const changed = store.state.devicesChanged;
  useEffect(() => {
    void refresh();
  }, [changed]);

  const rename = async (device: OwnDevice, name: string) => {
    setBusy(true);
    try {
      const renamed = await store.renameDevice(device.id, name);
      setListing((l) => (l.state === "ready" ? { state: "ready", devices: l.devices.map((d) => (d.id === renamed.id ? renamed : d)) } : l));
      setRenaming(null);
      setRefocus(`button[data-rename="${CSS.escape(device.id)}"]`);
    } catch {
      store.notify(store.state.connection === "offline" ? `Could not rename ${device.name}: you are offline.` : `Could not rename ${device.name}.`);
    } finally {
      if (alive.current) setBusy(false);
    }
  };

  const signOut = async (device: OwnDevice) => {
    setBusy(true);
    try {
      await store.signOutDevice(device.id);
      store.notify(`Signed out ${device.name}.`);
      setConfirming(null);
      await refresh();
      // Its row is gone: the focus goes to the list's heading rather than to the page's top.
      heading.current?.focus();
    } catch {
      store.notify(store.state.connection === "offline" ? `Could not sign out ${device.name}: you are offline.` : `Could not sign out ${device.name}.`);
    } finally {
      if (alive.current) setBusy(false);
    }
  };

  const now = Date.now();
  return (
    <section class="field-group devices" ref={section} aria-labelledby="devices-heading">
      <h3 id="devices-heading" ref={heading} tabIndex={-1}>
        Devices
      </h3>
      {listing.state === "loading" ? <p class="muted">Loading devices…</p> : null}
      {listing.state === "failed" ? (
        <p class="muted">
          Could not load your devices.{" "}
          <button class="link-btn" type="button" onClick={() => void refresh()}>
            Try again
          </button>
        </p>
      ) : null}
      {listing.state === "ready" ? (
        <ul class="device-list">
          {listing.devices.map((d) => (
            <li class="device" key={d.id}>
              <div class="device-info">
                <span class="device-name">
                  {d.name}
                  {d.current ? <span class="device-current"> (this device)</span> : null}
                </span>
                <span class="muted">
                  Signed in {shortTime(d.createdAt, now)}
                  {!d.current && d.lastActiveAt !== null ? `, ${lastActive(d.lastActiveAt, now)}` : ""}
                </span>
              </div>
              {renaming === d.id ? (
                <RenameDevice
                  device={d}
                  busy={busy}
                  onSave={(name) => void rename(d, name)}
                  onCancel={() => {
                    setRenaming(null);
                    setRefocus(`button[data-rename="${CSS.escape(d.id)}"]`);
                  }}
                />
              ) : (
                <button class="btn" type="button" data-rename={d.id} aria-label={`Rename ${d.name}`} onClick={() => setRenaming(d.id)}>
                  Rename
                </button>
              )}
              {d.current ? null : confirming === d.id ? (
                <ConfirmSignOut device={d} busy={busy} onConfirm={() => void signOut(d)} onCancel={() => cancel(d.id)} />
              ) : (
                <button class="btn btn-danger" type="button" data-sign-out={d.id} aria-label={`Sign out ${d.name}`} onClick={() => setConfirming(d.id)}>
                  Sign out
                </button>
              )}
            </li>
          ))}
        </ul>
      ) : null}
    </section>
  );
}

function ConfirmSignOut(props: { device: OwnDevice; busy: boolean; onConfirm: () => void; onCancel: () => void }) {
  const box = useRef<HTMLDivElement>(null);
  const confirm = useRef<HTMLButtonElement>(null);
  useFocusHandoff(box, confirm);
  useEscape(props.onCancel, props.device.id);
  const warning = `device-sign-out-${props.device.id}`;
  return (
    <div class="confirm device-confirm" ref={box} role="alertdialog" aria-label={`Sign out ${props.device.name}?`} aria-describedby={warning}>
      <p id={warning}>It will have to sign in again. Messages waiting there to be sent are lost.</p>
      <button class="btn btn-danger" type="button" ref={confirm} disabled={props.busy} onClick={props.onConfirm}>
        Sign out
      </button>
      <button class="btn" type="button" onClick={props.onCancel}>
        Cancel
      </button>
    </div>
  );
}

function RenameDevice(props: { device: OwnDevice; busy: boolean; onSave: (name: string) => void; onCancel: () => void }) {
  const box = useRef<HTMLFormElement>(null);
  const input = useRef<HTMLInputElement>(null);
  const [name, setName] = useState(props.device.name);
  useFocusHandoff(box, input);
  useEscape(props.onCancel, props.device.id);
  const trimmed = name.trim();
  return (
    <form
      class="confirm device-rename"
      ref={box}
      aria-label={`Rename ${props.device.name}`}
      onSubmit={(e) => {
        e.preventDefault();
        if (trimmed.length > 0 && trimmed !== props.device.name) props.onSave(trimmed);
        else props.onCancel();
      }}
    >
      <label>
        <span class="visually-hidden">New name for {props.device.name}</span>
        <input ref={input} type="text" value={name} maxLength={64} required onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <button class="btn" type="submit" disabled={props.busy || trimmed.length === 0}>
        Save
      </button>
      <button class="btn" type="button" onClick={props.onCancel}>
        Cancel
      </button>
    </form>
  );
}
