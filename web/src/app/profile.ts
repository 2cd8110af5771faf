// The signed-in user's profile: display name and photo (`PATCH /me`, docs/api.md). The photo is a
// media item the user uploaded; the answer's user replaces the session's, so every view that shows
// the user (Settings, avatars) changes at once, and the next start opens with it.
import type { User } from "../../../protocol";
import { Schemas, type Api } from "../lib/api";
import type { SessionPort } from "./ports";

export interface ProfileChange {
  displayName?: string;
  /** A media id of an image the user uploaded; null removes the photo. */
  photo?: string | null;
}

export class Profile {
  constructor(
    private readonly api: Api,
    private readonly deps: { session: Pick<SessionPort, "userChanged"> },
  ) {}

  async update(change: ProfileChange): Promise<User> {
    const { user } = await this.api.call("PATCH", "/me", Schemas.user, change);
    this.deps.session.userChanged(user);
    return user;
  }
}
