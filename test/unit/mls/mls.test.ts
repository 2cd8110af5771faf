// Our MLS interface over ts-mls, both sides: the server's reading and verification
// (kernel/mls) and the client engine (web/src/e2ee/engine.ts). Both use deep imports of the
// library; these tests pin what we rely on, so an upgrade that changes it fails here first.
import { describe, expect, it } from "vitest";
import {
  checkOwnKeyPackage,
  isWelcome,
  leafOf,
  leavesOf,
  readCommit,
  readGroupInfo,
  readPrivateMessage,
  verifyCommitSignature,
  verifyGroupInfo,
} from "../../../kernel/mls";
import { MlsDevice, decryptFile, encryptFile, fingerprintHalf, safetyNumber } from "../../../web/src/e2ee/engine";
import { fromBase64Url, toBase64Url } from "../../../protocol/mls";

const now = Date.now();

async function device(userId: string, deviceId: string) {
  return MlsDevice.create(userId, deviceId);
}

describe("MLS interface", () => {
  it("checks a key package's suite, credential, key, lifetime and signature", async () => {
    const alice = await device("ua", "da");
    const [kp] = await alice.generateKeyPackages(1);
    const self = { userId: "ua", deviceId: "da", signatureKey: alice.identity.signaturePublicKey };
    expect(await checkOwnKeyPackage(kp!, self, now)).toMatchObject({ ok: true });
    expect((await checkOwnKeyPackage(kp!, { ...self, deviceId: "other" }, now)).ok).toBe(false);
    const bob = await device("ub", "db");
    expect((await checkOwnKeyPackage(kp!, { ...self, signatureKey: bob.identity.signaturePublicKey }, now)).ok).toBe(false);
    expect((await checkOwnKeyPackage(kp!, self, now + 200 * 24 * 3600 * 1000)).ok).toBe(false);
    expect((await checkOwnKeyPackage(kp!.slice(0, -5), self, now)).ok).toBe(false);
    // One flipped byte of the signature (the package's last bytes).
    const bytes = fromBase64Url(kp!)!;
    bytes[bytes.length - 2]! ^= 1;
    expect((await checkOwnKeyPackage(toBase64Url(bytes), self, now)).ok).toBe(false);
  });

  it("reads and verifies commits and GroupInfos; members exchange messages; a new device joins by external commit", async () => {
    const alice = await device("ua", "da");
    const bob = await device("ub", "db");
    await alice.createGroup("conv1");
    const first = await alice.commit("conv1", { add: await bob.generateKeyPackages(1) });
    const commit = readCommit(first.commit, now)!;
    expect(commit).toMatchObject({ groupId: "conv1", epoch: 0, sender: { kind: "member", leafIndex: 0 }, removes: [], externalInit: false, unsupported: [] });
    expect(commit.adds.map((a) => a.identity.deviceId)).toEqual(["db"]);
    expect(first.welcomeDeviceIds).toEqual(["db"]);
    expect(isWelcome(first.welcome!)).toBe(true);
    expect(isWelcome(first.commit)).toBe(false);
    const info = readGroupInfo(first.groupInfo)!;
    expect(info).toMatchObject({ groupId: "conv1", epoch: 1, hasExternalPub: true });
    expect(info.signer).toMatchObject({ userId: "ua", deviceId: "da" });
    expect(leafOf(info, 1)).toMatchObject({ userId: "ub", deviceId: "db" });
    expect(leavesOf(info).map((l) => l.deviceId)).toEqual(["da", "db"]);
    expect(await verifyGroupInfo(info, alice.identity.signaturePublicKey)).toBe(true);
    expect(await verifyGroupInfo(info, bob.identity.signaturePublicKey)).toBe(false);
    alice.accept(first);
    expect(await bob.joinFromWelcome(first.welcome!)).toBe("conv1");

    const hello = await alice.encrypt("conv1", "hello bob");
    expect(readPrivateMessage(hello)).toEqual({ groupId: "conv1", epoch: 1, contentType: "application" });
    expect(new TextDecoder().decode(await bob.decrypt("conv1", hello))).toBe("hello bob");

    // Bob's commit at epoch 1 verifies under the epoch-1 GroupInfo with his key only.
    const second = await bob.commit("conv1");
    const secondCommit = readCommit(second.commit, now)!;
    expect(secondCommit.sender).toEqual({ kind: "member", leafIndex: 1 });
    expect(await verifyCommitSignature(secondCommit, info, bob.identity.signaturePublicKey)).toBe(true);
    expect(await verifyCommitSignature(secondCommit, info, alice.identity.signaturePublicKey)).toBe(false);
    bob.accept(second);
    expect(await alice.processCommit("conv1", second.commit)).toBe(true);
    expect(alice.epoch("conv1")).toBe(2);

    const bob2 = await device("ub", "db2");
    const join = await bob2.joinExternal("conv1", second.groupInfo);
    const external = readCommit(join.commit, now)!;
    expect(external).toMatchObject({ epoch: 2, sender: { kind: "new_member_commit" }, externalInit: true, removes: [] });
    expect(external.pathLeaf).toMatchObject({ userId: "ub", deviceId: "db2" });
    expect(await verifyCommitSignature(external, readGroupInfo(second.groupInfo)!, bob2.identity.signaturePublicKey)).toBe(true);
    bob2.accept(join);
    await alice.processCommit("conv1", join.commit);
    await bob.processCommit("conv1", join.commit);
    const fromNew = await bob2.encrypt("conv1", "from my second device");
    expect(new TextDecoder().decode(await alice.decrypt("conv1", fromNew))).toBe("from my second device");
    expect(alice.members("conv1").map((m) => m.deviceId)).toEqual(["da", "db", "db2"]);
  });

  it("accepts a leaf only when the device directory holds its device with that key", async () => {
    const alice = await device("ua", "da");
    const entries = new Map<string, { id: string; signatureKey: string | null }[]>([["ua", [{ id: "da", signatureKey: alice.signatureKey }]]]);
    const directory = async (userId: string) => entries.get(userId) ?? [];
    const bob = await MlsDevice.create("ub", "db", directory);
    entries.set("ub", [{ id: "db", signatureKey: bob.signatureKey }]);
    const trusting = await MlsDevice.create("ub", "db2", async (userId) => (userId === "ua" ? [] : (entries.get(userId) ?? [])));
    entries.get("ub")!.push({ id: "db2", signatureKey: trusting.signatureKey });
    await alice.createGroup("conv2");
    const add = await alice.commit("conv2", { add: [...(await bob.generateKeyPackages(1)), ...(await trusting.generateKeyPackages(1))] });
    expect(await bob.joinFromWelcome(add.welcome!)).toBe("conv2");
    // This device's directory does not list alice's key: her leaf (and so the group) is refused.
    await expect(trusting.joinFromWelcome(add.welcome!)).rejects.toThrow();
    // A commit adding a device the directory does not know is refused too.
    alice.accept(add);
    const stranger = await device("uc", "dc");
    const addStranger = await alice.commit("conv2", { add: await stranger.generateKeyPackages(1) });
    await expect(bob.processCommit("conv2", addStranger.commit)).rejects.toThrow();
    expect(bob.epoch("conv2")).toBe(1);
  });

  it("reports a fork: a commit from a group state that is not ours", async () => {
    const alice = await device("ua", "da");
    const bob = await device("ub", "db");
    await alice.createGroup("conv3");
    const add = await alice.commit("conv3", { add: await bob.generateKeyPackages(1) });
    alice.accept(add);
    await bob.joinFromWelcome(add.welcome!);
    // Bob applies a commit of his own that the server never accepted; alice's is the real epoch 2.
    bob.accept(await bob.commit("conv3"));
    const real = await alice.commit("conv3");
    alice.accept(real);
    const next = await alice.commit("conv3");
    await expect(bob.processCommit("conv3", next.commit)).rejects.toThrow(/forked at epoch 2/);
  });

  it("restores a device from its snapshot: its groups go on, its key packages still join", async () => {
    const alice = await device("ua", "da");
    const bob = await device("ub", "db");
    await alice.createGroup("conv4");
    const [kp] = await bob.generateKeyPackages(2);
    await bob.generateLastResort();
    const add = await alice.commit("conv4", { add: [kp!] });
    alice.accept(add);
    // Through JSON, as a store would keep it; bob's snapshot is taken before he joins.
    const bobAgain = await MlsDevice.restore(JSON.parse(JSON.stringify(bob.snapshot())));
    expect(await bobAgain.joinFromWelcome(add.welcome!)).toBe("conv4");
    const aliceAgain = await MlsDevice.restore(JSON.parse(JSON.stringify(alice.snapshot())));
    expect(aliceAgain.signatureKey).toBe(alice.signatureKey);
    const text = await aliceAgain.encrypt("conv4", "after a reload");
    expect(new TextDecoder().decode(await bobAgain.decrypt("conv4", text))).toBe("after a reload");
    const next = await bobAgain.commit("conv4");
    bobAgain.accept(next);
    expect(await aliceAgain.processCommit("conv4", next.commit)).toBe(true);
    expect(aliceAgain.epoch("conv4")).toBe(2);
  });

  it("rejects what is not the structure asked for", () => {
    expect(readCommit("AAAA", now)).toBeNull();
    expect(readGroupInfo("not base64!")).toBeNull();
    expect(readPrivateMessage("")).toBeNull();
  });

  it("encrypts files with a fresh key and checks their hash", async () => {
    const { blob, fileKey } = await encryptFile(new Uint8Array(new TextEncoder().encode("file bytes")));
    expect(new TextDecoder().decode(await decryptFile(blob, fileKey))).toBe("file bytes");
    blob[0]! ^= 1;
    await expect(decryptFile(blob, fileKey)).rejects.toThrow();
  });

  it("computes safety numbers: 60 digits, the same both ways, changed by a new device", async () => {
    const k1 = new Uint8Array(32).fill(1);
    const k2 = new Uint8Array(32).fill(2);
    const half = await fingerprintHalf("ua", [k1]);
    expect(half).toMatch(/^\d{30}$/);
    expect(await fingerprintHalf("ua", [k2, k1])).toBe(await fingerprintHalf("ua", [k1, k2]));
    const ab = await safetyNumber({ userId: "ua", keys: [k1] }, { userId: "ub", keys: [k2] });
    expect(ab).toMatch(/^\d{60}$/);
    expect(await safetyNumber({ userId: "ub", keys: [k2] }, { userId: "ua", keys: [k1] })).toBe(ab);
    expect(await safetyNumber({ userId: "ua", keys: [k1] }, { userId: "ub", keys: [k2, k1] })).not.toBe(ab);
  });
});
