import type { MediaRef } from "../../protocol";
import { ApiError } from "./errors";

/**
 * Turns the media ids of a send into refs the conversation stores. Until uploads exist no id
 * names any media, so any id is unknown.
 */
export async function resolveMedia(_env: Env, _userId: string, mediaIds: string[]): Promise<MediaRef[]> {
  if (mediaIds.length > 0) throw new ApiError("bad_request", "unknown media id");
  return [];
}
