// Safety numbers on screen: the "Verified" mark beside a contact, the warning in a chat when a
// verified contact's number changed, and the panel with the number (SafetyNumberPanel.tsx, loaded
// when it first opens). The store computes and keeps them (app/safetyNumbers.ts).
import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { Conversation } from "../../../protocol";
import { changeReason } from "../state/safetyNumbers";
import { useServices } from "./context";
import { Icon } from "./icons";

/** The panel (SafetyNumberPanel.tsx), loaded when it first opens. */
export function SafetyNumberPanel(props: { conv: Conversation; userId: string }) {
  // A function given to useState is an initializer: wrap the component so it is kept, not called.
  const [Panel, setPanel] = useState<LoadedPanel | null>(() => loadedPanel);
  useEffect(() => {
    if (Panel) return;
    let live = true;
    void import("./SafetyNumberPanel").then((m) => {
      loadedPanel = m.SafetyNumberPanel;
      if (live) setPanel(() => m.SafetyNumberPanel);
    });
    return () => {
      live = false;
    };
  }, []);
  if (Panel) return <Panel {...props} />;
  return (
    <aside class="side-panel safety-panel" aria-label="Safety number" aria-busy="true">
      <header class="panel-header">
        <h2>Safety number</h2>
      </header>
    </aside>
  );
}

type LoadedPanel = (props: { conv: Conversation; userId: string }) => JSX.Element;
let loadedPanel: LoadedPanel | null = null;

/** Beside a verified contact's name. */
export function VerifiedMark({ userId }: { userId: string }) {
  const { store } = useServices();
  if (store.safetyStatus(userId).kind !== "verified") return null;
  return (
    <span class="verified-mark" title="You verified the safety number" data-testid="verified-mark">
      <Icon name="shield" size={14} />
      Verified
    </span>
  );
}

/**
 * In a chat: a warning for each verified member whose safety number changed since, with the way
 * to compare it again. Opening the chat re-checks them.
 */
export function SafetyWarnings({ conv }: { conv: Conversation }) {
  const { store } = useServices();
  const others = conv.members.map((m) => m.userId).filter((id) => id !== store.me);
  useEffect(() => {
    void store.checkSafetyNumbers(others);
  }, [conv.id, others.join()]);
  const changed = others.flatMap((id) => {
    const status = store.safetyStatus(id);
    return status.kind === "changed" ? [{ id, status }] : [];
  });
  if (changed.length === 0) return null;
  return (
    <div class="safety-warnings" role="alert" data-testid="safety-warning">
      {changed.map(({ id, status }) => (
        <p key={id} class="safety-warning">
          <Icon name="alert" size={18} />
          <span>
            Your safety number with {store.userName(id)} has changed: {changeReason(store.userName(id), status)}. Compare it again before you trust this
            chat.
          </span>
          <button class="btn" type="button" onClick={() => store.navigate({ name: "chat", id: conv.id, thread: null, info: false, safety: id })}>
            Verify again
          </button>
        </p>
      ))}
    </div>
  );
}
