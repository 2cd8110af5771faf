// The safety-number panel: the 60 digits, their QR code, what they mean, and the verify toggle.
// Loaded when it first opens (SafetyNumber.tsx), with the QR encoder, so neither weighs on the
// initial bundle.
import { useEffect, useRef, useState } from "preact/hooks";
import type { Conversation } from "../../../protocol";
import { qrMatrix, qrPath } from "../lib/qrCode";
import { changeReason, groupDigits } from "../state/safetyNumbers";
import { Avatar } from "./Avatar";
import { useServices } from "./context";
import { useEscape } from "./focus";
import { Icon } from "./icons";

export function SafetyNumberPanel({ conv, userId }: { conv: Conversation; userId: string }) {
  const { store } = useServices();
  const view = store.safetyNumber(userId);
  const status = store.safetyStatus(userId);
  const name = store.userName(userId);
  const [busy, setBusy] = useState(false);
  const back = () => store.navigate({ name: "chat", id: conv.id, thread: null, info: true });
  const close = () => store.navigate({ name: "chat", id: conv.id, thread: null, info: false });

  useEffect(() => {
    store.ensureUsers([userId]);
    void store.showSafetyNumber(userId);
  }, [userId]);
  useEscape(back, conv.id);
  // Focus moves into the panel as it opens, so a keyboard or screen reader user is in it.
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => heading.current?.focus(), [userId]);

  const toggle = async () => {
    setBusy(true);
    try {
      if (status.kind === "verified") await store.clearVerified(userId);
      else await store.markVerified(userId);
    } finally {
      setBusy(false);
    }
  };

  return (
    <aside class="side-panel safety-panel" aria-labelledby="safety-heading">
      <header class="panel-header">
        <button class="icon-btn" type="button" aria-label={conv.type === "group" ? "Back to group info" : "Back to contact info"} onClick={back}>
          <Icon name="back" />
        </button>
        <h2 id="safety-heading" ref={heading} tabIndex={-1}>Safety number</h2>
        <button class="icon-btn" type="button" aria-label="Close" onClick={close}>
          <Icon name="close" />
        </button>
      </header>
      <div class="page-body">
        <div class="profile">
          <Avatar id={userId} name={name} size={56} />
          <h3 dir="auto">{name}</h3>
          <p class={`safety-status safety-${status.kind}`} data-testid="safety-status">
            {status.kind === "verified" ? (
              <>
                <Icon name="shield" size={16} /> Verified
              </>
            ) : status.kind === "changed" ? (
              <>
                <Icon name="alert" size={16} /> Changed since you verified it
              </>
            ) : (
              "Not verified"
            )}
          </p>
        </div>
        {!view || view.state === "loading" ? (
          <p class="muted" role="status">Working out the safety number…</p>
        ) : view.state === "error" ? (
          <div role="alert">
            <p>{view.message}</p>
            <button class="btn" type="button" onClick={() => void store.showSafetyNumber(userId)}>
              Try again
            </button>
          </div>
        ) : view.state === "no-keys" ? (
          <div class="safety-none" data-testid="safety-none">
            <p>
              <strong>There is no safety number yet.</strong>
            </p>
            {view.theirs ? <p>{name} has not set up end-to-end encryption on any device yet.</p> : null}
            {view.mine ? <p>None of your devices has set up end-to-end encryption yet.</p> : null}
            <p class="muted">A safety number appears once each of you has a device with encryption keys.</p>
            {status.kind !== "unverified" ? (
              <button class="btn" type="button" disabled={busy} onClick={() => void toggle()}>
                Clear verification
              </button>
            ) : null}
          </div>
        ) : (
          <>
            {status.kind === "changed" ? (
              <p class="safety-warning" role="alert">
                This number is not the one you verified: {changeReason(name, status)}. Compare it again.
              </p>
            ) : null}
            <h4 id="safety-digits-label">Your safety number with {name}</h4>
            <div class="safety-digits" role="group" aria-labelledby="safety-digits-label" data-testid="safety-digits">
              {groupDigits(view.number).map((group, i) => (
                <span key={i}>{group} </span>
              ))}
            </div>
            <QrCode text={view.number} />
            <p class="safety-explain">
              Compare these 60 digits with the ones {name} sees, side by side or over a call you trust. If they are the same, no
              one is secretly reading along: your messages reach only your devices and theirs. The number changes when either of
              you adds or removes a device.
            </p>
            <button class={`btn${status.kind === "verified" ? "" : " btn-primary"}`} type="button" disabled={busy} onClick={() => void toggle()}>
              <Icon name={status.kind === "verified" ? "close" : "shield"} />
              {status.kind === "verified" ? "Clear verification" : "Mark as verified"}
            </button>
          </>
        )}
      </div>
    </aside>
  );
}

/** The QR code of the digits: dark on white in both themes, as scanners expect. */
function QrCode({ text }: { text: string }) {
  const path = qrPath(qrMatrix(text));
  return (
    <div class="safety-qr">
      <svg viewBox={`0 0 ${path.side} ${path.side}`} width="200" height="200" role="img" aria-label="QR code of the safety number" shape-rendering="crispEdges" data-testid="safety-qr">
        <rect width={path.side} height={path.side} fill="#fff" />
        <path d={path.d} fill="#000" />
      </svg>
    </div>
  );
}
