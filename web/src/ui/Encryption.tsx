import type { Conversation } from "../../../protocol";
import { useServices } from "./context";

/**
 * The info panel's section on an E2EE conversation: that it is encrypted, and this device's
 * state of it. Safety numbers are reached from the contact's entry (GroupInfo, the member list).
 */
export function EncryptionInfo({ conv }: { conv: Conversation }) {
  const { store } = useServices();
  const c = store.state.crypto.get(conv.id);
  const state = c?.status === "ready" ? "This device holds its keys." : c?.status === "problem" ? c.problem : "Setting up on this device…";
  return (
    <section class="encryption-info" aria-label="Encryption">
      <h4>🔒 End-to-end encrypted</h4>
      <p class="muted">Messages and files are encrypted on the members' devices; the server cannot read them. {state}</p>
    </section>
  );
}
