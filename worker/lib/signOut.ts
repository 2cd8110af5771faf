// Signing a device out, the same whether the device itself logs out (POST /auth/logout) or
// another device of its user signs it out (DELETE /devices/:id).
import { conversationStub, userStub } from "../../kernel/objects";
import type { Identity } from "../../kernel/identity";
import { e2eeConversationsOf } from "./deviceKeys";

/**
 * Ends the device's sessions, closes its sockets and tells its E2EE conversations. The user's
 * object ends the device's sessions and its tickets first: from there on its token is refused
 * everywhere. It then marks the device logged out in D1 and drops its push subscriptions (from its
 * alarm while D1 fails). Should the revocation fail, nothing has changed and the call can be
 * retried.
 */
export async function signOutDevice(env: Env, device: Identity): Promise<void> {
  const user = userStub(env, device.userId);
  await user.revokeDevice(device.userId, device.deviceId);
  // Now close what the device still holds open.
  await user.closeDevice(device.deviceId);
  await noticeLoggedOutDevice(env, device);
}

/**
 * Tells each E2EE conversation of the user that the device is gone: those where it holds a leaf
 * append a `deviceLoggedOut` system message, on which members' devices commit its Remove. The
 * sign-out stands even if some are not reached: a client also looks for leaves of devices no
 * longer listed when it opens a conversation (docs/e2ee.md, "Logout").
 */
async function noticeLoggedOutDevice(env: Env, device: Identity): Promise<void> {
  let ids: string[];
  try {
    ids = await e2eeConversationsOf(env, device.userId);
  } catch (err) {
    console.warn("deviceLoggedOut: the user's E2EE conversations could not be read", String(err));
    return;
  }
  const now = Date.now();
  const results = await Promise.allSettled(ids.map((id) => conversationStub(env, id).mlsDeviceLoggedOut(device, now)));
  for (const [i, r] of results.entries()) {
    if (r.status === "rejected") console.warn(`deviceLoggedOut in ${ids[i]} failed`, String(r.reason));
  }
}
