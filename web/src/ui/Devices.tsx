// Settings' device list: every device signed in to this account, this one marked, and the others
// signed out from here after a confirmation.
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
  const [busy, setBusy] = useState(false);
  const heading = useRef<HTMLHeadingElement>(null);
  const section = useRef<HTMLElement>(null);
  const alive = useRef(true);
  // A cancelled confirmation gives the focus back to its device's button, rendered again in its place.
  const [refocus, setRefocus] = useState<string | null>(null);
  useEffect(() => {
    if (refocus === null) return;
    section.current?.querySelector<HTMLButtonElement>(`button[data-device="${CSS.escape(refocus)}"]`)?.focus();
    setRefocus(null);
  }, [refocus]);
  const cancel = (id: string) => {
    setConfirming(null);
    setRefocus(id);
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
    void refresh();
    return () => {
      alive.current = false;
    };
  }, []);

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
              {d.current ? null : confirming === d.id ? (
                <ConfirmSignOut device={d} busy={busy} onConfirm={() => void signOut(d)} onCancel={() => cancel(d.id)} />
              ) : (
                <button class="btn btn-danger" type="button" data-device={d.id} aria-label={`Sign out ${d.name}`} onClick={() => setConfirming(d.id)}>
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
