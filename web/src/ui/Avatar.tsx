import type { Presence } from "../../../protocol";
import { hueOf, initials } from "../state/format";

export function Avatar({ id, name, size = 40, presence, group = false }: { id: string; name: string; size?: number; presence?: Presence | undefined; group?: boolean }) {
  const online = presence?.status === "online";
  return (
    <span class={`avatar${group ? " avatar-group" : ""}`} style={{ "--hue": hueOf(id), "--size": `${size}px` }} aria-hidden="true">
      {initials(name)}
      {presence && presence.status !== "unknown" ? <span class={`presence-dot ${online ? "online" : "offline"}`} /> : null}
    </span>
  );
}
