// The caller's own devices: the list (which one is asking, when each was last active) and remote
// sign-out. Another user's devices, with their MLS keys, are GET /users/:id/devices.
import { RenameDeviceBody, type OwnDevice } from "../../protocol";
import { newApp, requireAuth } from "../app";
import { userStub } from "../../kernel/objects";
import { d1Shards } from "../../kernel/d1/shards";
import { ApiError } from "../lib/apiError";
import { devicesOf } from "../lib/deviceKeys";
import { signOutDevice } from "../lib/signOut";
import { readJson } from "../lib/validate";

export const devices = newApp();

/**
 * The caller's signed-in devices, oldest first: D1's names, for the devices whose sessions the
 * user's object still holds (it ends them at a sign-out before D1 hears of it).
 */
devices.get("/", requireAuth, async (c) => {
  const { userId, deviceId } = c.get("auth");
  const [rows, signedIn] = await Promise.all([devicesOf(c.env, [userId]), userStub(c.env, userId).signedInDevices(userId)]);
  const lastActive = new Map(signedIn.map((d) => [d.deviceId, d.lastActiveAt]));
  const list: OwnDevice[] = rows
    .filter((d) => lastActive.has(d.id))
    .map((d) => ({ id: d.id, name: d.name, createdAt: d.createdAt, lastActiveAt: lastActive.get(d.id) ?? null, current: d.id === deviceId }));
  return c.json({ devices: list });
});

/**
 * Signs one of the caller's devices out, exactly as that device's own POST /auth/logout would.
 * Another user's device gets the answer of a device that never existed (404). One already signed
 * out (not in GET /devices) is a 204 that does nothing more, so a repeated request does not
 * notify its conversations twice.
 */
devices.delete("/:id", requireAuth, async (c) => {
  const { userId } = c.get("auth");
  const id = c.req.param("id");
  const [owned, signedIn] = await Promise.all([
    d1Shards(c.env).of(userId).prepare("SELECT 1 AS owned FROM devices WHERE id = ? AND user_id = ?").bind(id, userId).first<{ owned: number }>(),
    userStub(c.env, userId).signedInDevices(userId),
  ]);
  if (!owned) throw new ApiError("not_found", "no such device");
  if (signedIn.some((d) => d.deviceId === id)) await signOutDevice(c.env, { userId, deviceId: id });
  return c.body(null, 204);
});

/**
 * Renames one of the caller's signed-in devices (any of them: a user tidies the list from one
 * place). Another user's device, or one signed out, gets the answer of one that never existed (404).
 */
devices.patch("/:id", requireAuth, async (c) => {
  const { userId } = c.get("auth");
  const id = c.req.param("id");
  const { name } = await readJson(c.req.raw, RenameDeviceBody, c.get("settings").maxRequestBytes);
  const signedIn = await userStub(c.env, userId).signedInDevices(userId);
  const current = signedIn.find((d) => d.deviceId === id);
  if (!current) throw new ApiError("not_found", "no such device");
  const renamed = await d1Shards(c.env).of(userId).prepare("UPDATE devices SET name = ? WHERE id = ? AND user_id = ? RETURNING id, name, created_at")
    .bind(name, id, userId)
    .first<{ id: string; name: string; created_at: number }>();
  if (!renamed) throw new ApiError("not_found", "no such device");
  await userStub(c.env, userId).deviceRenamed(userId, { id, name: renamed.name, createdAt: renamed.created_at });
  const device: OwnDevice = { id, name: renamed.name, createdAt: renamed.created_at, lastActiveAt: current.lastActiveAt, current: id === c.get("auth").deviceId };
  return c.json({ device });
});
