// The MLS Delivery Service of a conversation, in Node over the conversation's store: the epoch
// compare-and-set holds across the awaits of the signature checks (two racing commits, one
// accepted), Welcomes are stored in the commit's step and survive a new wake-up, and the epochs
// an application message may use.
import { describe, expect, it } from "vitest";
import { MlsDelivery, invalidContent, PAST_EPOCHS_ACCEPTED } from "../../../durable-objects/conversation/mlsDelivery";
import type { DeviceKeys } from "../../../durable-objects/contract";
import { MlsDevice, type PendingCommit } from "../../../web/src/e2ee/engine";
import { ConversationHarness, expectOk, identity } from "../support/conversation";

async function e2eeGroup() {
  const h = new ConversationHarness();
  expectOk(h.conversation.create({ id: "c1", type: "group", title: "t", e2ee: true, creator: identity("alice"), memberIds: ["bob", "carol"], now: 0 }));
  const devices = Object.fromEntries(
    await Promise.all(["alice", "bob", "carol"].map(async (u) => [u, await MlsDevice.create(u, identity(u).deviceId)] as const)),
  );
  const keys: DeviceKeys = Object.fromEntries(
    Object.entries(devices).map(([userId, d]) => [d.identity.deviceId, { userId, signatureKey: d.signatureKey }]),
  );
  let welcomeCalls = 0;
  const delivery = () =>
    new MlsDelivery(h.store, {
      appendCommit: (sender, clientMsgId, commit, now) => h.conversation.appendCommit(sender, clientMsgId, commit, now),
      appendDeviceLoggedOut: (device, now) => h.conversation.appendDeviceLoggedOut(device, now),
      deliverWelcomes: () => welcomeCalls++,
      takeRateToken: () => 0,
    });
  const body = (p: PendingCommit, clientMsgId: string) => ({ clientMsgId, epoch: p.epoch, commit: p.commit, groupInfo: p.groupInfo, welcome: p.welcome, welcomeDeviceIds: p.welcomeDeviceIds });
  return { h, devices, keys, delivery, body, welcomeCalls: () => welcomeCalls };
}

describe("MlsDelivery", () => {
  it("accepts one of two commits racing at one epoch; the other gets 409 with the new epoch", async () => {
    const { h, devices, keys, delivery, body, welcomeCalls } = await e2eeGroup();
    const { alice, bob, carol } = devices as Record<string, MlsDevice>;
    await alice!.createGroup("c1");
    const kps = [...(await bob!.generateKeyPackages(1)), ...(await carol!.generateKeyPackages(1))];
    const first = await alice!.commit("c1", { add: kps });
    const ds = delivery();
    expect(expectOk(await ds.commit(identity("alice"), body(first, "c0"), keys, Date.now())).message.kind).toBe("mls.commit");
    alice!.accept(first);
    expect(welcomeCalls()).toBe(1);
    // Both Welcomes were stored in the commit's step, and a new wake-up still has them.
    h.reopen();
    const pending = delivery().pendingByUser();
    expect([...pending.keys()].sort()).toEqual(["bob", "carol"]);
    expect(pending.get("bob")![0]).toMatchObject({ conversationId: "c1", seq: 2, deviceId: "bob-device" });
    await bob!.joinFromWelcome(pending.get("bob")![0]!.welcome);
    await carol!.joinFromWelcome(pending.get("carol")![0]!.welcome);

    const [a, b] = [await alice!.commit("c1"), await bob!.commit("c1")];
    const again = delivery();
    const results = await Promise.all([again.commit(identity("alice"), body(a, "ra"), keys, Date.now()), again.commit(identity("bob"), body(b, "rb"), keys, Date.now())]);
    const accepted = results.filter((r) => r.ok);
    const refused = results.filter((r) => !r.ok);
    expect(accepted).toHaveLength(1);
    expect(refused).toEqual([expect.objectContaining({ ok: false, code: "conflict", epoch: 2 })]);
    expect(h.store.requireMeta().mlsEpoch).toBe(2);
    // A retry of the accepted one answers the same message, whatever the epoch is now.
    const winner = results[0]!.ok ? ["alice", a, "ra"] as const : ["bob", b, "rb"] as const;
    const retry = expectOk(await again.commit(identity(winner[0]), body(winner[1], winner[2]), keys, Date.now()));
    expect(retry.duplicate).toBe(true);
  });

  it("notices a logged-out device only where it holds a leaf of the group", async () => {
    const { h, devices, keys, delivery, body } = await e2eeGroup();
    const { alice, bob } = devices as Record<string, MlsDevice>;
    const ds = delivery();
    // Before the first commit no device but the creator's holds a leaf, and the server knows none.
    expect(ds.deviceLoggedOut(identity("bob"), 1)).toBeNull();
    await alice!.createGroup("c1");
    const first = await alice!.commit("c1", { add: await bob!.generateKeyPackages(1) });
    expectOk(await ds.commit(identity("alice"), body(first, "c0"), keys, Date.now()));
    expect(ds.deviceLoggedOut({ userId: "bob", deviceId: "another-device" }, 2)).toBeNull();
    expect(ds.deviceLoggedOut(identity("carol"), 2)).toBeNull();
    expect(ds.deviceLoggedOut({ userId: "stranger", deviceId: "bob-device" }, 2)).toBeNull();
    const notice = ds.deviceLoggedOut(identity("bob"), 3);
    expect(notice).toMatchObject({ kind: "system", senderId: "bob", senderDeviceId: "bob-device" });
    expect(JSON.parse(notice!.body!)).toEqual({ event: "deviceLoggedOut", actorId: "bob", userIds: ["bob"], deviceIds: ["bob-device"] });
    expect(h.store.requireMeta().mlsEpoch).toBe(1);
  });

  it("takes application messages of the current epoch and the 3 before, and none other", async () => {
    const { h } = await e2eeGroup();
    const device = await MlsDevice.create("alice", "alice-device");
    await device.createGroup("c1");
    const ciphertext = await device.encrypt("c1", "x");
    const meta = h.store.requireMeta();
    expect(invalidContent({ ...meta, mlsEpoch: 0 }, { ciphertext }, [])).toBeNull();
    expect(invalidContent({ ...meta, mlsEpoch: PAST_EPOCHS_ACCEPTED }, { ciphertext }, [])).toBeNull();
    expect(invalidContent({ ...meta, mlsEpoch: PAST_EPOCHS_ACCEPTED + 1 }, { ciphertext }, [])).toMatchObject({ code: "bad_request" });
    expect(invalidContent({ ...meta, id: "c2" }, { ciphertext }, [])).toMatchObject({ code: "bad_request" });
    expect(invalidContent({ ...meta, e2ee: false }, { ciphertext }, [])).toMatchObject({ code: "bad_request" });
    expect(invalidContent({ ...meta, e2ee: false }, { body: "hi" }, [])).toBeNull();
  });
});
