import type { Presence } from "../../../protocol";
import { hueOf, initials } from "../state/format";

export function Avatar({ id, name, size = 40, presence, group = false }: { id: string; name: string; size?: number; presence?: Presence | undefined; group?: boolean }) {
  const online = presence?.status === "online";
  return (
    // The initials are drawn from an attribute (styles.css), not written as text: they are
    // decoration, and a link holding an avatar is named by the words beside it.
    <span class={`avatar${group ? " avatar-group" : ""}`} style={{ "--hue": hueOf(id), "--size": `${size}px` }} data-initials={initials(name)} aria-hidden="true">
      {presence && presence.status !== "unknown" ? <span class={`presence-dot ${online ? "online" : "offline"}`} /> : null}
    </span>
  );
}
