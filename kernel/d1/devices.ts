// The directory's record of a device being signed in, which the user's object keeps current after
// a logout (durable-objects/user/sessions.ts). Authentication never reads it: a token is signed
// and its session lives in the user's object. D1 keeps the mark for what lists a user's devices
// (the MLS directory: worker/lib/deviceKeys.ts).

/** What `devices.token_hash` holds for a device signed in with a signed session token. */
export const SIGNED_IN_MARK = "s1:";

/** Marks a logged-out device as such. Idempotent: a retry after a failure changes nothing more. */
export async function retireDevice(db: D1Database, deviceId: string, revokedAt: number): Promise<void> {
  await db
    .prepare("UPDATE devices SET token_hash = NULL, revoked_at = ? WHERE id = ? AND token_hash IS NOT NULL")
    .bind(revokedAt, deviceId)
    .run();
}
