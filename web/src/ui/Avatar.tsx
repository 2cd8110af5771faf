import { useEffect, useState } from "preact/hooks";
import type { Presence } from "../../../protocol";
import { hueOf, initials } from "../state/format";
import { useServices } from "./context";

/**
 * A user's photo where they set one (a media item the server signs a URL for), else their
 * initials on a colour of their id; a group's initials. The initials stay underneath while the
 * photo loads and when it cannot (offline).
 */
export function Avatar({ id, name, size = 40, presence, group = false }: { id: string; name: string; size?: number; presence?: Presence | undefined; group?: boolean }) {
  const { store, media } = useServices();
  const photoId = group ? undefined : store.photoOf(id);
  const [shown, setShown] = useState<{ id: string; url: string } | null>(null);
  useEffect(() => {
    if (!photoId) return;
    let live = true;
    media
      .url(photoId)
      .then((url) => live && setShown({ id: photoId, url }))
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, [photoId]);
  const url = photoId && shown?.id === photoId ? shown.url : null;
  const online = presence?.status === "online";
  return (
    // The initials are drawn from an attribute (styles.css), not written as text: they are
    // decoration, and a link holding an avatar is named by the words beside it.
    <span class={`avatar${group ? " avatar-group" : ""}${url ? " has-photo" : ""}`} style={{ "--hue": hueOf(id), "--size": `${size}px` }} data-initials={initials(name)} aria-hidden="true">
      {url ? <img class="avatar-photo" src={url} alt="" width={size} height={size} decoding="async" onError={() => setShown(null)} /> : null}
      {presence && presence.status !== "unknown" ? <span class={`presence-dot ${online ? "online" : "offline"}`} /> : null}
    </span>
  );
}
