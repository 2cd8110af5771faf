import { useRef, useState } from "preact/hooks";
import { LIMITS } from "../../../protocol";
import { ApiRequestError } from "../lib/api";
import { upload } from "../lib/mediaFiles";
import { Avatar } from "./Avatar";
import { useServices } from "./context";

/** The image types the server takes (docs/api.md, Media): a profile photo is one of them. */
const PHOTO_TYPES = "image/jpeg,image/png,image/gif,image/webp,image/avif";

/** The signed-in user's display name and photo, as others see them (Settings). */
export function ProfileSettings() {
  const { store } = useServices();
  const me = store.state.session!.user;
  const [name, setName] = useState(me.displayName);
  const [busy, setBusy] = useState<"name" | "photo" | null>(null);
  const [status, setStatus] = useState("");
  const [error, setError] = useState<string | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const offline = store.state.connection === "offline";

  const work = async (what: "name" | "photo", f: () => Promise<void>, done: string) => {
    setBusy(what);
    setError(null);
    setStatus("");
    try {
      await f();
      setStatus(done);
    } catch (err) {
      setError(err instanceof ApiRequestError ? err.message : offline ? "You are offline. Try again when online." : "That did not work. Try again.");
    } finally {
      setBusy(null);
    }
  };
  const saveName = (e: Event) => {
    e.preventDefault();
    void work("name", () => store.updateProfile({ displayName: name.trim() }), "Name saved.");
  };
  const choose = (file: File | undefined) => {
    const token = store.state.session?.token;
    if (!file || !token) return;
    void work(
      "photo",
      async () => {
        const media = await upload(token, file, file.name || "photo", {}, () => undefined).done;
        await store.updateProfile({ photo: media.id });
      },
      "Photo saved.",
    );
  };
  return (
    <section class="field-group profile-settings" aria-labelledby="profile-heading">
      <h3 id="profile-heading">Profile</h3>
      <div class="profile">
        <Avatar id={me.id} name={me.displayName} size={72} />
        <h4 dir="auto">{me.displayName}</h4>
        <p class="muted">@{me.username}</p>
      </div>
      <div class="form-actions">
        <button class="btn" type="button" disabled={busy !== null || offline} onClick={() => fileInput.current?.click()}>
          {busy === "photo" ? "Uploading…" : me.photoId ? "Change photo" : "Choose photo"}
        </button>
        <input
          ref={fileInput}
          class="visually-hidden"
          type="file"
          tabIndex={-1}
          aria-hidden="true"
          accept={PHOTO_TYPES}
          data-testid="photo-input"
          onChange={(e) => {
            choose(e.currentTarget.files?.[0]);
            e.currentTarget.value = "";
          }}
        />
        {me.photoId ? (
          <button class="btn btn-danger" type="button" disabled={busy !== null || offline} onClick={() => void work("photo", () => store.updateProfile({ photo: null }), "Photo removed.")}>
            Remove photo
          </button>
        ) : null}
      </div>
      <form class="profile-name" onSubmit={saveName}>
        <label class="field">
          Display name
          <input required maxLength={LIMITS.displayNameMax} value={name} autocomplete="name" onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <button class="btn" type="submit" disabled={busy !== null || !name.trim() || name.trim() === me.displayName}>
          {busy === "name" ? "Saving…" : "Save name"}
        </button>
      </form>
      <p class="form-error" role="alert">{error ?? ""}</p>
      <p class="muted profile-status" role="status">{status}</p>
    </section>
  );
}
