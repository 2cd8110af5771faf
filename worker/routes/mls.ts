// End-to-end encryption (API.md "End-to-end encryption (v2 addition)"): the server as MLS's
// Authentication Service (device signature keys, checked key packages) and Delivery Service (the
// KeyPackage directory in each user's object, commits ordered by each conversation's object,
// Welcomes kept by the new devices' user objects). The Worker checks what needs no state (the
// structures parse, a key package's credential and signatures) and reads D1's device records;
// the objects decide the rest. Each route authenticates itself: this app is mounted at the root.
import { ClaimKeyPackagesBody, CommitBody, DeviceMlsBody, KeyPackagesBody, type ClaimedKeyPackage } from "../../protocol";
import { fromBase64Url } from "../../protocol/mls";
import { checkOwnKeyPackage, readCommit } from "../../kernel/mls";
import { conversationStub, userStub } from "../../kernel/objects";
import type { StoredKeyPackage } from "../../durable-objects/contract";
import { newApp, requireAuth, type AppContext } from "../app";
import { ApiError, unwrap } from "../lib/apiError";
import { deviceKeys, devicesOf, registerSignatureKey } from "../lib/deviceKeys";
import { readJson } from "../lib/validate";

export const mls = newApp();

mls.put("/devices/me/mls", requireAuth, async (c) => {
  const { signatureKey } = await readJson(c.req.raw, DeviceMlsBody, c.get("settings").maxRequestBytes);
  const registered = await registerSignatureKey(c.env, c.get("auth").deviceId, signatureKey);
  if (registered !== signatureKey) throw new ApiError("conflict", "this device registered another signature key");
  return c.json({ signatureKey });
});

/** The caller device's registered key, or a 400 (a device registers before it uploads or commits). */
async function ownKey(c: AppContext): Promise<Uint8Array> {
  const { userId, deviceId } = c.get("auth");
  const key = (await deviceKeys(c.env, [deviceId]))[deviceId];
  const bytes = key?.userId === userId && key.signatureKey ? fromBase64Url(key.signatureKey) : null;
  if (!bytes) throw new ApiError("bad_request", "register this device's signature key first (PUT /devices/me/mls)");
  return bytes;
}

mls.post("/mls/key-packages", requireAuth, async (c) => {
  const body = await readJson(c.req.raw, KeyPackagesBody, c.get("settings").maxRequestBytes);
  const { userId, deviceId } = c.get("auth");
  const device = { userId, deviceId, signatureKey: await ownKey(c) };
  const now = Date.now();
  // All or nothing: every package is checked before any is stored.
  const check = async (text: string, path: string): Promise<StoredKeyPackage> => {
    const result = await checkOwnKeyPackage(text, device, now);
    if (!result.ok) throw new ApiError("bad_request", `${path}: ${result.message}`, { issues: [{ path, message: result.message }] });
    return { keyPackage: text, notAfter: result.notAfter };
  };
  const packages = await Promise.all(body.keyPackages.map((text, i) => check(text, `keyPackages.${i}`)));
  const lastResort = body.lastResort === undefined ? null : await check(body.lastResort, "lastResort");
  const { count } = unwrap(await userStub(c.env, userId).uploadKeyPackages(userId, deviceId, packages, lastResort));
  return c.json({ count }, 201);
});

mls.get("/mls/key-packages/count", requireAuth, async (c) => {
  const { userId, deviceId } = c.get("auth");
  return c.json(await userStub(c.env, userId).keyPackageCount(userId, deviceId));
});

mls.post("/mls/key-packages/claim", requireAuth, async (c) => {
  const { userIds } = await readJson(c.req.raw, ClaimKeyPackagesBody, c.get("settings").maxRequestBytes);
  const me = c.get("auth");
  unwrap(await userStub(c.env, me.userId).takeKeyPackageClaim(me.userId));
  // Only devices that registered a key can have uploaded packages; never the calling device.
  const devices = (await devicesOf(c.env, userIds)).filter((d) => d.signatureKey !== null && d.id !== me.deviceId);
  const byUser = new Map<string, string[]>();
  for (const d of devices) byUser.set(d.userId, [...(byUser.get(d.userId) ?? []), d.id]);
  const claimed: ClaimedKeyPackage[][] = await Promise.all(
    [...byUser].map(([userId, ids]) => userStub(c.env, userId).claimKeyPackages(userId, ids)),
  );
  return c.json({ keyPackages: claimed.flat() });
});

mls.get("/mls/welcomes", requireAuth, async (c) => {
  const { userId, deviceId } = c.get("auth");
  return c.json({ welcomes: await userStub(c.env, userId).listWelcomes(userId, deviceId) });
});

mls.delete("/mls/welcomes/:id", requireAuth, async (c) => {
  const { userId, deviceId } = c.get("auth");
  unwrap(await userStub(c.env, userId).deleteWelcome(userId, deviceId, c.req.param("id")));
  return c.body(null, 204);
});

mls.post("/conversations/:id/mls/commits", requireAuth, async (c) => {
  // Its own body limit: the GroupInfo and the Welcome carry the whole ratchet tree. Only the
  // commit is relayed to the members, and CommitBody bounds it far lower.
  const body = await readJson(c.req.raw, CommitBody, c.get("settings").mlsCommitMaxBytes);
  const me = c.get("auth");
  const now = Date.now();
  // The devices the commit involves, for the conversation's checks (it reads no D1 itself). A
  // commit that does not parse is the object's 400, in the contract's order.
  const adds = readCommit(body.commit, now)?.adds ?? [];
  const keys = await deviceKeys(c.env, [me.deviceId, ...adds.map((kp) => kp.identity.deviceId)]);
  const result = await conversationStub(c.env, c.req.param("id")).mlsCommit(me, body, keys, now);
  if (!result.ok && "epoch" in result) {
    return c.json({ error: { code: result.code, message: result.message }, epoch: result.epoch }, 409);
  }
  const { message, duplicate } = unwrap(result);
  return c.json({ message }, duplicate ? 200 : 201);
});

mls.get("/conversations/:id/mls/group-info", requireAuth, async (c) => {
  const result = unwrap(await conversationStub(c.env, c.req.param("id")).mlsGroupInfo(c.get("auth").userId));
  return c.json({ epoch: result.epoch, groupInfo: result.groupInfo, ...(result.creatorGone ? { creatorGone: true } : {}) });
});
