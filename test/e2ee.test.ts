// End-to-end encryption through the real Worker, objects, D1 and R2, with the client engine
// (web/src/e2ee/engine.ts) running as several simulated devices: the server orders commits,
// checks what it can of them, routes Welcomes, and stores and relays ciphertext only.
import { env } from "cloudflare:workers";
import { evictDurableObject, listDurableObjectIds, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { d1Shards } from "../kernel/d1/shards";
import type { ConversationDO } from "../durable-objects/conversation/ConversationDO";
import { MLS_ADDS_PER_COMMIT, MLS_COMMIT_TEXT_MAX, type Conversation, type Message } from "../protocol";
import { MlsDevice, encryptFile, decryptFile, type PendingCommit } from "../web/src/e2ee/engine";
import { call, connect, d1Of, expectError, json, login, register, signInDevice, unique, waitFor, type TestSocket } from "./helpers";
import { acceptWelcome, addMembers, anotherDevice, catchUp, claim, commit, commitBody, createGroup, newDevice, postCommit, sendText, setUp, type Device } from "./mlsDevices";

async function state(conversationId: string, by: Device) {
  return (await json<{ conversation: Conversation }>(`/conversations/${conversationId}`, { token: by.session.token })).conversation;
}

/** A group of alice, bob (two devices) and carol, all joined at epoch 1. */
async function threeUsers(checked = true) {
  const alice = await newDevice(undefined, checked);
  const bob1 = await newDevice(undefined, checked);
  const bob2 = await anotherDevice(bob1, checked);
  const carol = await newDevice(undefined, checked);
  const conversation = await createGroup(alice, [bob1, carol]);
  await addMembers(alice, conversation.id, [bob1, carol]);
  for (const d of [bob1, bob2, carol]) await acceptWelcome(d, conversation.id);
  return { alice, bob1, bob2, carol, id: conversation.id, all: [alice, bob1, bob2, carol] };
}

describe("E2EE devices and key packages", () => {
  it("registers a device's signature key once and lists devices with their keys", async () => {
    const d = await newDevice();
    const path = "/devices/me/mls";
    await json(path, { method: "PUT", token: d.session.token, body: { signatureKey: d.mls.signatureKey } });
    const other = await MlsDevice.create(d.session.user.id, d.session.device.id);
    await expectError(await call(path, { method: "PUT", token: d.session.token, body: { signatureKey: other.signatureKey } }), 409, "conflict");
    await expectError(await call(path, { method: "PUT", token: d.session.token, body: { signatureKey: "short" } }), 400, "bad_request");
    const viewer = await register();
    const { devices } = await json<{ devices: { id: string; signatureKey: string | null }[] }>(`/users/${d.session.user.id}/devices`, { token: viewer.token });
    expect(devices).toEqual([expect.objectContaining({ id: d.session.device.id, signatureKey: d.mls.signatureKey })]);
    await expectError(await call("/users/nobody/devices", { token: viewer.token }), 404, "not_found");
  });

  it("refuses a whole upload for one bad package: another device's, an unregistered key, garbage", async () => {
    const d = await newDevice();
    const before = await json<{ count: number; lastResort: boolean }>("/mls/key-packages/count", { token: d.session.token });
    expect(before).toEqual({ count: 12, lastResort: true });
    const other = await newDevice();
    const good = await d.mls.generateKeyPackages(2);
    for (const bad of [(await other.mls.generateKeyPackages(1))[0]!, good[0]!.slice(0, 40), "%%%"]) {
      await expectError(await call("/mls/key-packages", { token: d.session.token, body: { keyPackages: [...good, bad] } }), 400, "bad_request");
    }
    expect(await json("/mls/key-packages/count", { token: d.session.token })).toEqual(before);
    const unregistered = await register();
    const stranger = await MlsDevice.create(unregistered.user.id, unregistered.device.id);
    const body = { keyPackages: await stranger.generateKeyPackages(1) };
    await expectError(await call("/mls/key-packages", { token: unregistered.token, body }), 400, "bad_request");
  });

  it("hands each one-time package out once, then the last resort; tells the device it runs low; limits claims", async () => {
    const owner = await setUp(await register(), 2);
    const ownerSocket = await connect("/ws", owner.session.token);
    await ownerSocket.next("ready");
    const claimers = await Promise.all([newDevice(), newDevice(), newDevice()]);
    const results = await Promise.all(claimers.map((c) => claim(c, [owner.session.user.id])));
    const handed = results.flatMap((r) => r.keyPackages);
    expect(handed).toHaveLength(3);
    const oneTime = handed.filter((k) => !k.lastResort).map((k) => k.keyPackage);
    expect(oneTime).toHaveLength(2);
    expect(new Set(oneTime).size).toBe(2);
    const lastResort = handed.find((k) => k.lastResort)!;
    expect((await claim(claimers[0]!, [owner.session.user.id])).keyPackages).toEqual([lastResort]);
    expect(await json("/mls/key-packages/count", { token: owner.session.token })).toEqual({ count: 0, lastResort: true });
    await ownerSocket.next("mls.keyPackagesLow", (f) => f.count === 0);
    // The claimer's own device is never handed out; an unknown user gets nothing.
    expect((await claim(owner, [owner.session.user.id, "nobody"])).keyPackages).toEqual([]);
    ownerSocket.close();

    const greedy = await newDevice();
    let limited: Response | null = null;
    for (let i = 0; i < 40 && !limited; i++) {
      const res = await call("/mls/key-packages/claim", { token: greedy.session.token, body: { userIds: [owner.session.user.id] } });
      if (res.status === 429) limited = res;
      else expect(res.status).toBe(200);
    }
    expect(limited).not.toBeNull();
    expect(Number(limited!.headers.get("retry-after"))).toBeGreaterThan(0);
    await expectError(limited!, 429, "rate_limited");
  });
});

describe("E2EE conversations", () => {
  it("a 3-user group, one user on two devices, exchanges messages both ways", async () => {
    const { alice, bob1, bob2, carol, id, all } = await threeUsers();
    expect((await state(id, alice)).mls).toEqual({ epoch: 1 });
    await sendText(alice, id, "hello from alice");
    for (const d of [bob1, bob2, carol]) expect(await catchUp(d, id)).toEqual(["hello from alice"]);
    await sendText(bob2, id, "bob's second device");
    await sendText(carol, id, "carol here");
    expect(await catchUp(alice, id)).toEqual(["bob's second device", "carol here"]);
    expect(await catchUp(bob1, id)).toEqual(["bob's second device", "carol here"]);
    expect(await catchUp(bob2, id)).toEqual(["carol here"]);
    for (const d of all) expect(d.mls.epoch(id)).toBe(1);
    // Commits are no lastMessage and count in no unread; messages are stored without a body.
    const seen = await state(id, carol);
    expect(seen.lastMessage).toMatchObject({ kind: "encrypted", body: null });
    expect(seen.unread).toBe(2);
    const { conversations } = await json<{ conversations: Conversation[] }>("/conversations", { token: carol.session.token });
    await expect.poll(async () => (await json<{ conversations: Conversation[] }>("/conversations", { token: carol.session.token })).conversations.find((c) => c.id === id)).toMatchObject({
      e2ee: true,
      mls: { epoch: 1 },
      unread: 2,
      lastMessage: { kind: "encrypted", body: null },
    });
    expect(conversations).toBeDefined();
    // Sync (GET /messages?since=, from the user's object) serves commits and ciphertexts as the history does.
    const stub = env.CONVERSATION.get(env.CONVERSATION.idFromName(id));
    await waitFor(async () => (await stub.pendingFanout()) === 0, "every message told to the members' objects");
    const history = (await json<{ messages: Message[] }>(`/conversations/${id}/messages`, { token: carol.session.token })).messages;
    const synced = (await json<{ messages: Message[] }>("/messages?since=0&limit=500", { token: carol.session.token })).messages;
    expect(synced.filter((m) => m.conversationId === id)).toStrictEqual(history);
    expect(new Set(history.map((m) => m.kind))).toEqual(new Set(["system", "mls.commit", "encrypted"]));
    expect(history.find((m) => m.kind === "mls.commit")).toMatchObject({ body: null, commit: expect.any(String) });
  });

  it("answers a stale commit 409 with the epoch; the retry after catching up succeeds; racing commits leave one state", async () => {
    const { alice, bob1, bob2, carol, id, all } = await threeUsers();
    await commit(bob1, id, await bob1.mls.commit(id));
    const stale = await carol.mls.commit(id);
    const res = await postCommit(carol, id, commitBody(stale));
    const body = (await expectError(res, 409, "conflict")) as unknown as { epoch: number };
    expect(body.epoch).toBe(2);
    await catchUp(carol, id);
    await commit(carol, id, await carol.mls.commit(id));

    for (const d of [alice, bob1, bob2]) await catchUp(d, id);
    const [a, b] = [await alice.mls.commit(id), await bob2.mls.commit(id)];
    const answers = await Promise.all([postCommit(alice, id, commitBody(a)), postCommit(bob2, id, commitBody(b))]);
    expect(answers.map((r) => r.status).sort()).toEqual([201, 409]);
    const [winner, winning, loser] = answers[0]!.status === 201 ? [alice, a, bob2] : [bob2, b, alice];
    winner.mls.accept(winning);
    winner.readThrough.set(id, ((await answers[answers[0]!.status === 201 ? 0 : 1]!.json()) as { message: Message }).message.seq);
    await catchUp(loser, id);
    await commit(loser, id, await loser.mls.commit(id));
    for (const d of all) await catchUp(d, id);
    expect(new Set(all.map((d) => d.mls.epoch(id)))).toEqual(new Set([5]));
    expect((await state(id, alice)).mls).toEqual({ epoch: 5 });
    // One group state: every device reads every other's message of the last epoch.
    for (const sender of all) {
      await sendText(sender, id, `from ${sender.session.device.id}`);
      for (const reader of all) if (reader !== sender) expect(await catchUp(reader, id)).toEqual([`from ${sender.session.device.id}`]);
    }
  });

  it("a removed user's device cannot read what is sent after the Remove", async () => {
    const { alice, bob1, bob2, carol, id } = await threeUsers();
    await json(`/conversations/${id}/members/${carol.session.user.id}`, { method: "DELETE", token: alice.session.token }, 204);
    await catchUp(alice, id);
    await commit(alice, id, await alice.mls.commit(id, { removeDevices: [carol.session.device.id] }));
    const after = await sendText(alice, id, "after carol left");
    for (const d of [bob1, bob2]) expect(await catchUp(d, id)).toEqual(["after carol left"]);
    // She reads up to her removal (docs/api.md, former members), not the ciphertext after it.
    const hers = await json<{ messages: Message[] }>(`/conversations/${id}/messages?after=0`, { token: carol.session.token });
    expect(hers.messages.at(-1)).toMatchObject({ kind: "system" });
    expect(hers.messages.map((m) => m.seq)).not.toContain(after.seq);
    // Even holding the ciphertext (from elsewhere), her device has no key for it.
    await expect(carol.mls.decrypt(id, after.ciphertext!)).rejects.toThrow();
  });

  it("a member's new device joins by external commit and then reads and writes", async () => {
    const { alice, bob1, bob2, carol, id } = await threeUsers();
    const bob3 = await setUp(await login(bob1.session.user.username, "third"));
    const info = await json<{ epoch: number; groupInfo: string }>(`/conversations/${id}/mls/group-info`, { token: bob3.session.token });
    expect(info.epoch).toBe(1);
    await commit(bob3, id, await bob3.mls.joinExternal(id, info.groupInfo));
    for (const d of [alice, bob1, bob2, carol]) await catchUp(d, id);
    await sendText(bob3, id, "new device");
    for (const d of [alice, bob1, bob2, carol]) expect(await catchUp(d, id)).toEqual(["new device"]);
    await sendText(alice, id, "welcome, bob3");
    expect(await catchUp(bob3, id)).toEqual(["welcome, bob3"]);
    // A stranger learns nothing; before the first commit there is no GroupInfo.
    const stranger = await newDevice();
    await expectError(await call(`/conversations/${id}/mls/group-info`, { token: stranger.session.token }), 404, "not_found");
    const fresh = await createGroup(alice, [bob1]);
    expect(await json(`/conversations/${fresh.id}/mls/group-info`, { token: bob1.session.token })).toEqual({ epoch: 0, groupInfo: null });
  });

  it("an E2EE direct conversation is another one than the pair's plaintext conversation", async () => {
    const [a, b] = [await newDevice(), await newDevice()];
    const plain = await json<{ conversation: Conversation }>("/conversations", { token: a.session.token, body: { type: "direct", userId: b.session.user.id } }, 201);
    const secret = await json<{ conversation: Conversation }>("/conversations", { token: a.session.token, body: { type: "direct", userId: b.session.user.id, e2ee: true } }, 201);
    expect(secret.conversation.id).not.toBe(plain.conversation.id);
    expect(secret.conversation).toMatchObject({ e2ee: true, mls: { epoch: 0 } });
    expect(plain.conversation.e2ee).toBe(false);
    expect(plain.conversation.mls).toBeUndefined();
    const again = await json<{ conversation: Conversation }>("/conversations", { token: b.session.token, body: { type: "direct", userId: a.session.user.id, e2ee: true } });
    expect(again.conversation.id).toBe(secret.conversation.id);
  });

  it("refuses a plaintext body, a ciphertext of another group or epoch, and media other than octet-stream, storing nothing", async () => {
    const { alice, bob1, id } = await threeUsers();
    const other = (await threeUsers()).id;
    const before = (await state(id, alice)).lastSeq;
    const ciphertextElsewhere = await bob1.mls.encrypt(other, "wrong group").catch(() => null);
    const foreign = await (await threeUsers()).alice.mls.encrypt(other, "x").catch(() => null);
    const ownOld = await alice.mls.encrypt(id, "fine");
    const image = await json<{ media: { id: string } }>("/upload?name=a.png", {
      token: alice.session.token,
      rawBody: new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0]),
      headers: { "content-type": "image/png" },
    }, 201).catch(() => null);
    const bodies: Record<string, unknown>[] = [
      { body: "plaintext" },
      { body: "plaintext", ciphertext: ownOld },
      { ciphertext: "AAAA" },
      { ciphertext: (await alice.mls.commit(id)).commit },
    ];
    if (ciphertextElsewhere) bodies.push({ ciphertext: ciphertextElsewhere });
    if (foreign) bodies.push({ ciphertext: foreign });
    if (image) bodies.push({ ciphertext: ownOld, mediaIds: [image.media.id] });
    for (const extra of bodies) {
      const res = await call("/send", { token: alice.session.token, body: { conversationId: id, clientMsgId: unique("m"), ...extra } });
      await expectError(res, 400, "bad_request");
    }
    const ws = await connect(`/conversations/${id}/ws`, alice.session.token);
    await ws.next("ready");
    ws.send({ type: "send", clientMsgId: "sock", body: "plaintext over the socket" });
    await ws.next("error", (f) => f.ref === "sock");
    expect((await state(id, alice)).lastSeq).toBe(before);
    // The socket's send takes a ciphertext like POST /send.
    ws.send({ type: "send", clientMsgId: "sock-ok", ciphertext: await alice.mls.encrypt(id, "over the socket") });
    const ack = await ws.next("ack", (f) => f.clientMsgId === "sock-ok");
    expect(ack.message).toMatchObject({ kind: "encrypted", body: null, seq: before + 1 });
    ws.close();
    expect(await catchUp(bob1, id)).toEqual(["over the socket"]);
    // And a plaintext conversation takes no ciphertext.
    const plain = await json<{ conversation: Conversation }>("/group/create", { token: alice.session.token, body: { title: "plain", memberIds: [] } }, 201);
    await expectError(await call("/send", { token: alice.session.token, body: { conversationId: plain.conversation.id, clientMsgId: "c", ciphertext: ownOld } }), 400, "bad_request");
  });

  it("gives every malformed or hostile MLS structure the error shape and changes nothing", async () => {
    // Clients that check nothing, so that they make what an honest client refuses to.
    const { alice, bob1, carol, id } = await threeUsers(false);
    const elsewhere = await threeUsers(false);
    const dave = await newDevice(undefined, false);
    await json(`/conversations/${id}/members`, { token: alice.session.token, body: { userIds: [dave.session.user.id] } });
    const addDave = await alice.mls.commit(id, { add: (await claim(alice, [dave.session.user.id])).keyPackages.map((k) => k.keyPackage) });
    const before = await state(id, alice);
    const good = await bob1.mls.commit(id);
    const base = commitBody(good);
    // A member whose device claims another device's identity: its key is not that device's.
    const impostor = await MlsDevice.create(carol.session.user.id, bob1.session.device.id);
    const forgedKp = (await impostor.generateKeyPackages(1))[0]!;
    const forged = await alice.mls.commit(id, { add: [forgedKp] });
    const replay = (await json<{ messages: Message[] }>(`/conversations/${id}/messages`, { token: alice.session.token })).messages.find((m) => m.kind === "mls.commit")!;
    const wrongGroup = await elsewhere.bob1.mls.commit(elsewhere.id);
    const stranger = await newDevice();
    const cases: Array<[Device, unknown, number, string]> = [
      [bob1, { ...base, commit: base.commit.slice(0, base.commit.length - 20) }, 400, "truncated commit"],
      [bob1, { ...base, groupInfo: base.groupInfo.slice(0, 30) }, 400, "truncated GroupInfo"],
      [bob1, { ...base, commit: base.groupInfo }, 400, "a GroupInfo as the commit"],
      [bob1, { ...base, epoch: 0 }, 400, "epoch not the commit's"],
      [elsewhere.bob1, commitBody(wrongGroup), 404, "a non-member"],
      [bob1, commitBody(wrongGroup), 400, "another group's commit"],
      [carol, base, 400, "bob's commit sent by carol"],
      [alice, commitBody(forged), 403, "an Add with a forged credential"],
      [bob1, { ...base, clientMsgId: unique("c"), epoch: 0, commit: replay.commit }, 409, "a replayed commit"],
      [alice, { ...commitBody(addDave), welcomeDeviceIds: [stranger.session.device.id] }, 400, "a Welcome for someone else"],
      [alice, { ...commitBody(addDave), welcome: undefined, welcomeDeviceIds: undefined }, 400, "an Add without its Welcome"],
      [bob1, { ...base, welcomeDeviceIds: [bob1.session.device.id] }, 400, "welcomeDeviceIds naming no added device"],
      [bob1, { ...base, commit: "%%%" }, 400, "not base64url"],
    ];
    for (const [by, body, status, what] of cases) {
      const res = await postCommit(by, id, body);
      const code = { 400: "bad_request", 403: "forbidden", 404: "not_found", 409: "conflict" }[status]!;
      await expectError(res, status, code).catch((err: Error) => {
        throw new Error(`${what}: ${err.message}`);
      });
    }
    const after = await state(id, alice);
    expect(after.lastSeq).toBe(before.lastSeq);
    expect(after.mls).toEqual(before.mls);
    // The honest commit still goes through, once; its retry answers the same message.
    const stored = await postCommit(bob1, id, base);
    expect(stored.status).toBe(201);
    const again = await postCommit(bob1, id, base);
    expect(again.status).toBe(200);
    expect(((await again.json()) as { message: Message }).message.id).toBe(((await stored.json()) as { message: Message }).message.id);
  });

  it("an object evicted between a commit and its Welcome's hand-over loses neither", async () => {
    const alice = await newDevice();
    const bob = await newDevice();
    const conversation = await createGroup(alice, [bob]);
    const stub = env.CONVERSATION.get(env.CONVERSATION.idFromName(conversation.id));
    await runInDurableObject(stub, (instance: ConversationDO) => {
      instance.useConnections({
        welcomes: () => ({
          mlsWelcomes: async () => {
            throw new Error("user object unreachable");
          },
        }),
      });
    });
    const added = await addMembers(alice, conversation.id, [bob]);
    expect((await json<{ welcomes: unknown[] }>("/mls/welcomes", { token: bob.session.token })).welcomes).toEqual([]);
    await evictDurableObject(stub);
    await runDurableObjectAlarm(stub);
    await acceptWelcome(bob, conversation.id);
    expect((await json<{ welcomes: unknown[] }>("/mls/welcomes", { token: bob.session.token })).welcomes).toEqual([]);
    const { messages } = await json<{ messages: Message[] }>(`/conversations/${conversation.id}/messages`, { token: bob.session.token });
    expect(messages.find((m) => m.seq === added.seq)).toMatchObject({ kind: "mls.commit", commit: expect.any(String) });
    await sendText(alice, conversation.id, "after the eviction");
    expect(await catchUp(bob, conversation.id)).toEqual(["after the eviction"]);
  });

  it("tells a new device its Welcome on its user socket, and drops Welcomes of a user who is removed", async () => {
    const alice = await newDevice();
    const bob = await newDevice();
    const carol = await newDevice();
    const socket: TestSocket = await connect("/ws", bob.session.token);
    await socket.next("ready");
    const conversation = await createGroup(alice, [bob, carol]);
    await addMembers(alice, conversation.id, [bob, carol]);
    const frame = await socket.next("mls.welcome");
    expect(frame).toMatchObject({ conversationId: conversation.id, welcome: expect.any(String) });
    socket.close();
    expect((await json<{ welcomes: unknown[] }>("/mls/welcomes", { token: carol.session.token })).welcomes).toHaveLength(1);
    await json(`/conversations/${conversation.id}/members/${carol.session.user.id}`, { method: "DELETE", token: alice.session.token }, 204);
    await expect.poll(async () => (await json<{ welcomes: unknown[] }>("/mls/welcomes", { token: carol.session.token })).welcomes).toEqual([]);
    await expectError(await call("/mls/welcomes/nope", { method: "DELETE", token: bob.session.token }), 404, "not_found");
  });
});

/** Logs a device out once D1 lists its conversations (the logout finds its E2EE conversations there). */
/** `count` more devices of `of`'s user, signed in without the password hash, a one-time key package each. */
async function moreDevices(of: Device, count: number): Promise<Device[]> {
  const devices: Device[] = [];
  for (let i = 0; i < count; i++) {
    const { deviceId, token } = await signInDevice(of.session.user.id);
    devices.push(await setUp({ ...of.session, token, device: { ...of.session.device, id: deviceId } }, 1));
  }
  return devices;
}

describe("E2EE groups beyond the ordinary body limit", () => {
  it("grows to 231 devices in commits of 50 (GroupInfo over 64 KiB); a member's commit is accepted and a member decrypts after it", async () => {
    const alice = await newDevice();
    const bob = await newDevice();
    const carol = await newDevice();
    const devices = [bob, carol, ...(await moreDevices(bob, 114)), ...(await moreDevices(carol, 114))];
    const byId = new Map(devices.map((d) => [d.session.device.id, d]));
    const { id } = await createGroup(alice, [bob, carol]);
    const { keyPackages } = await claim(alice, [bob.session.user.id, carol.session.user.id]);
    expect(keyPackages).toHaveLength(230);
    const adds: PendingCommit[] = [];
    for (let i = 0; i < keyPackages.length; i += MLS_ADDS_PER_COMMIT) {
      const pending = await alice.mls.commit(id, { add: keyPackages.slice(i, i + MLS_ADDS_PER_COMMIT).map((k) => k.keyPackage) });
      await commit(alice, id, pending);
      adds.push(pending);
    }
    expect(adds).toHaveLength(5);
    const last = adds.at(-1)!;
    expect(last.groupInfo.length).toBeGreaterThan(64 * 1024);
    expect(await json(`/conversations/${id}/mls/group-info`, { token: bob.session.token })).toEqual({ epoch: 5, groupInfo: last.groupInfo });

    // A device of the first Add catches up through the later ones; one of the last joins by its Welcome.
    const early = byId.get(adds[0]!.welcomeDeviceIds![0]!)!;
    const late = byId.get(last.welcomeDeviceIds!.at(-1)!)!;
    await acceptWelcome(early, id);
    await catchUp(early, id);
    await acceptWelcome(late, id);
    expect([early, late].map((d) => d.mls.epoch(id))).toEqual([5, 5]);

    // A member's update commit in the 231-device group, then a message every member can read.
    await commit(late, id, await late.mls.commit(id));
    await catchUp(alice, id);
    await sendText(alice, id, "after the big commit");
    expect(await catchUp(early, id)).toEqual(["after the big commit"]);
    expect(await catchUp(late, id)).toEqual(["after the big commit"]);
    expect((await state(id, alice)).mls).toEqual({ epoch: 6 });
  }, 120_000);

  it("refuses a body over MLS_COMMIT_MAX_BYTES (413) and a commit over its cap (400), storing nothing", async () => {
    const { alice, bob1, id } = await threeUsers();
    const before = await state(id, alice);
    const base = commitBody(await bob1.mls.commit(id));
    await expectError(await postCommit(bob1, id, { ...base, groupInfo: "A".repeat(1024 * 1024) }), 413, "payload_too_large");
    // The same without a content-length: refused while reading.
    const stream = new Blob([JSON.stringify({ ...base, groupInfo: "A".repeat(1024 * 1024) })]).stream();
    const chunked = await call(`/conversations/${id}/mls/commits`, { token: bob1.session.token, rawBody: stream, headers: { "content-type": "application/json" } });
    await expectError(chunked, 413, "payload_too_large");
    await expectError(await postCommit(bob1, id, { ...base, commit: "A".repeat(MLS_COMMIT_TEXT_MAX + 1) }), 400, "bad_request");
    const after = await state(id, alice);
    expect(after.lastSeq).toBe(before.lastSeq);
    expect(after.mls).toEqual(before.mls);
    expect((await postCommit(bob1, id, base)).status).toBe(201);
  });
});

async function logOut(device: Device, conversationId: string): Promise<void> {
  const stub = env.CONVERSATION.get(env.CONVERSATION.idFromName(conversationId));
  await waitFor(async () => (await stub.pendingOutbox()) === 0, "the conversation in D1");
  const res = await call("/auth/logout", { method: "POST", token: device.session.token });
  expect(res.status).toBe(204);
}

/** The `deviceLoggedOut` system messages of a conversation, as a member reads them. */
async function loggedOutNotices(conversationId: string, by: Device): Promise<{ actorId: string; deviceIds?: string[] }[]> {
  const { messages } = await json<{ messages: Message[] }>(`/conversations/${conversationId}/messages`, { token: by.session.token });
  return messages
    .filter((m) => m.kind === "system")
    .map((m) => JSON.parse(m.body!) as { event: string; actorId: string; deviceIds?: string[] })
    .filter((e) => e.event === "deviceLoggedOut");
}

describe("E2EE logout", () => {
  it("once the creator's device signs out, or its user leaves, before the first commit, any member's device makes it", async () => {
    const alice = await newDevice();
    const bob = await newDevice();
    const carol = await newDevice();
    const { id } = await createGroup(alice, [bob, carol]);
    const groupInfo = (by: Device, conversationId = id) =>
      json<{ epoch: number; groupInfo: string | null; creatorGone?: boolean }>(`/conversations/${conversationId}/mls/group-info`, { token: by.session.token });
    expect(await groupInfo(bob)).toEqual({ epoch: 0, groupInfo: null });
    // While the creator's device may still make it, another member's first commit is refused.
    await bob.mls.createGroup(id);
    await carol.mls.createGroup(id);
    const early = await bob.mls.commit(id);
    await expectError(await postCommit(bob, id, commitBody(early)), 400, "bad_request");

    await logOut(alice, id);
    expect(await groupInfo(bob)).toEqual({ epoch: 0, groupInfo: null, creatorGone: true });
    await addMembers(bob, id, [carol]);
    // The other member's device lost the race: its own group is dropped for the winner's.
    await expectError(await postCommit(carol, id, commitBody(await carol.mls.commit(id))), 409, "conflict");
    carol.mls.groups.delete(id);
    await acceptWelcome(carol, id);
    expect((await groupInfo(carol)).creatorGone).toBeUndefined();
    await sendText(bob, id, "the group exists after all");
    expect(await catchUp(carol, id)).toEqual(["the group exists after all"]);

    // The creator leaving before its first commit opens it the same way.
    const dave = await newDevice();
    const other = await createGroup(dave, [bob]);
    expect((await groupInfo(bob, other.id)).creatorGone).toBeUndefined();
    expect((await call(`/conversations/${other.id}/members/${dave.session.user.id}`, { method: "DELETE", token: dave.session.token })).status).toBe(204);
    expect(await groupInfo(bob, other.id)).toEqual({ epoch: 0, groupInfo: null, creatorGone: true });
  });

  it("a logged-out device's leaf is removed by a member's device, and it reads nothing sent after", async () => {
    const { alice, bob1, bob2, carol, id } = await threeUsers();
    // A device of bob's that never joined the group: its logout tells the group nothing.
    const bob3 = await setUp(await login(bob1.session.user.username, "third"));
    await logOut(bob3, id);
    expect(await loggedOutNotices(id, alice)).toEqual([]);

    await logOut(bob2, id);
    const listed = await json<{ devices: { id: string }[] }>(`/users/${bob1.session.user.id}/devices`, { token: alice.session.token });
    expect(listed.devices.map((d) => d.id)).toEqual([bob1.session.device.id]);
    expect((await claim(carol, [bob1.session.user.id])).keyPackages.map((k) => k.deviceId)).toEqual([bob1.session.device.id]);
    expect(await loggedOutNotices(id, alice)).toEqual([{ event: "deviceLoggedOut", actorId: bob1.session.user.id, userIds: [bob1.session.user.id], deviceIds: [bob2.session.device.id] }]);
    // The logged-out device can no longer commit (nor send, nor read): its token is dead.
    await expectError(await postCommit(bob2, id, commitBody(await bob2.mls.commit(id))), 401, "unauthorized");
    await expectError(await call(`/conversations/${id}/messages`, { token: bob2.session.token }), 401, "unauthorized");

    // A member's device finds the gone leaf on the notice and commits its Remove.
    await catchUp(alice, id);
    expect(await alice.mls.staleLeaves(id)).toEqual([expect.objectContaining({ userId: bob1.session.user.id, deviceId: bob2.session.device.id })]);
    // Given the member list, a leaf of a user who is no longer a member is stale too.
    expect((await alice.mls.staleLeaves(id, [alice.session.user.id, bob1.session.user.id])).map((l) => l.deviceId).sort()).toEqual(
      [bob2.session.device.id, carol.session.device.id].sort(),
    );
    const removal = await alice.mls.removeStale(id);
    expect(removal).not.toBeNull();
    await commit(alice, id, removal!);
    expect(await alice.mls.removeStale(id)).toBeNull();
    for (const d of [bob1, carol]) await catchUp(d, id);
    for (const d of [alice, bob1, carol]) {
      expect(d.mls.members(id).map((m) => m.deviceId).sort()).toEqual([alice, bob1, carol].map((x) => x.session.device.id).sort());
    }

    const after = await sendText(carol, id, "after bob2 logged out");
    for (const d of [alice, bob1]) expect(await catchUp(d, id)).toEqual(["after bob2 logged out"]);
    // Even holding the ciphertext (from elsewhere), the logged-out device has no key for it.
    await expect(bob2.mls.decrypt(id, after.ciphertext!)).rejects.toThrow();
  });

  it("a device signed out by another of its user's devices leaves the same notice as its own logout", async () => {
    const { alice, bob1, bob2, id } = await threeUsers();
    const stub = env.CONVERSATION.get(env.CONVERSATION.idFromName(id));
    await waitFor(async () => (await stub.pendingOutbox()) === 0, "the conversation in D1");
    const res = await call(`/devices/${bob2.session.device.id}`, { method: "DELETE", token: bob1.session.token });
    expect(res.status).toBe(204);
    await expectError(await call(`/conversations/${id}/messages`, { token: bob2.session.token }), 401, "unauthorized");
    expect(await loggedOutNotices(id, alice)).toEqual([{ event: "deviceLoggedOut", actorId: bob1.session.user.id, userIds: [bob1.session.user.id], deviceIds: [bob2.session.device.id] }]);
    // A second sign-out of the same device tells the group nothing more.
    expect((await call(`/devices/${bob2.session.device.id}`, { method: "DELETE", token: bob1.session.token })).status).toBe(204);
    expect(await loggedOutNotices(id, alice)).toHaveLength(1);
    await catchUp(alice, id);
    expect((await alice.mls.staleLeaves(id)).map((l) => l.deviceId)).toEqual([bob2.session.device.id]);
  });

  it("two members racing to remove a logged-out device's leaf end with one group state", async () => {
    const { alice, bob1, bob2, carol, id } = await threeUsers();
    await logOut(bob2, id);
    for (const d of [alice, bob1, carol]) await catchUp(d, id);
    const [a, c] = [await alice.mls.removeStale(id), await carol.mls.removeStale(id)];
    const answers = await Promise.all([postCommit(alice, id, commitBody(a!)), postCommit(carol, id, commitBody(c!))]);
    expect(answers.map((r) => r.status).sort()).toEqual([201, 409]);
    const [winner, winning, loser, answer] = answers[0]!.status === 201 ? [alice, a!, carol, answers[0]!] : [carol, c!, alice, answers[1]!];
    winner.mls.accept(winning);
    winner.readThrough.set(id, ((await answer.json()) as { message: Message }).message.seq);
    // The loser processes the winner's Remove; nothing is left to remove.
    await catchUp(loser, id);
    expect(await loser.mls.removeStale(id)).toBeNull();
    await catchUp(bob1, id);
    expect(new Set([alice, bob1, carol].map((d) => d.mls.epoch(id)))).toEqual(new Set([2]));
    expect((await state(id, alice)).mls).toEqual({ epoch: 2 });
    for (const sender of [alice, bob1, carol]) {
      const sent = await sendText(sender, id, `from ${sender.session.device.id}`);
      for (const reader of [alice, bob1, carol]) if (reader !== sender) expect(await catchUp(reader, id)).toEqual([`from ${sender.session.device.id}`]);
      await expect(bob2.mls.decrypt(id, sent.ciphertext!)).rejects.toThrow();
    }
  });
});

describe("no plaintext at rest", () => {
  it("keeps neither a message's text nor a file's bytes anywhere in Durable Objects, D1 or R2", async () => {
    const marker = `MARKER-${crypto.randomUUID()}`;
    const { alice, bob1, bob2, carol, id } = await threeUsers();
    const file = new Uint8Array(new TextEncoder().encode(`${marker} inside the file `.repeat(50)));
    const { blob, fileKey } = await encryptFile(file);
    const { media } = await json<{ media: { id: string } }>("/upload?name=secret.bin", {
      token: alice.session.token,
      rawBody: blob,
      headers: { "content-type": "application/octet-stream", "content-length": String(blob.length) },
    }, 201);
    const payload = JSON.stringify({ text: `${marker} in a message`, files: [{ ...fileKey, mediaId: media.id }] });
    const sent = await sendText(alice, id, payload, { mediaIds: [media.id] });
    await sendText(bob2, id, `${marker} in a reply`);
    expect(await catchUp(carol, id)).toEqual([payload, `${marker} in a reply`]);
    const received = JSON.parse((await catchUp(bob1, id))[0]!) as { files: (typeof fileKey & { mediaId: string })[] };
    const info = await json<{ media: { url: string } }>(`/media/${received.files[0]!.mediaId}/info`, { token: bob1.session.token });
    const location = new URL(info.media.url);
    const signed = await call(location.pathname + location.search);
    expect(signed.status).toBe(200);
    const bytes = new Uint8Array(await signed.arrayBuffer());
    expect(bytes.length).toBe(blob.length);
    expect(new TextDecoder().decode(await decryptFile(bytes, received.files[0]!))).toBe(new TextDecoder().decode(file));

    // Let the deferred passes feed D1 before reading it.
    await expect.poll(async () => (await d1Of(id).prepare("SELECT count(*) AS n FROM messages WHERE conversation_id = ?").bind(id).first<{ n: number }>())?.n).toBe(
      (await state(id, alice)).lastSeq,
    );
    const stored: string[] = [];
    // Every table of each object's SQLite (the runtime's own _cf_ tables are not readable by SQL:
    // their key-value part is read through the storage API), every D1 table, every R2 object.
    const ownTables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'";
    const dump = async (_instance: unknown, s: DurableObjectState) => {
      for (const { name } of s.storage.sql.exec<{ name: string }>(ownTables)) {
        for (const row of s.storage.sql.exec(`SELECT * FROM "${name}"`)) stored.push(JSON.stringify(row));
      }
      for (const [key, value] of await s.storage.list()) stored.push(`${key} ${JSON.stringify(value)}`);
    };
    for (const objectId of await listDurableObjectIds(env.CONVERSATION)) await runInDurableObject(env.CONVERSATION.get(objectId), dump);
    for (const objectId of await listDurableObjectIds(env.USER)) await runInDurableObject(env.USER.get(objectId), dump);
    for (const database of d1Shards(env).all) {
      const tables = await database.prepare(ownTables).all<{ name: string }>();
      for (const { name } of tables.results) {
        for (const row of (await database.prepare(`SELECT * FROM "${name}"`).all()).results) stored.push(JSON.stringify(row));
      }
    }
    let objects = 0;
    let cursor: string | undefined;
    do {
      const list = await env.MEDIA.list(cursor ? { cursor } : {});
      for (const o of list.objects) {
        const body = await env.MEDIA.get(o.key);
        stored.push(String.fromCharCode(...new Uint8Array(await body!.arrayBuffer())));
        objects++;
      }
      cursor = list.truncated ? list.cursor : undefined;
    } while (cursor);
    expect(objects).toBeGreaterThan(0);
    const everything = stored.join("\n");
    // The dump did read the message's rows: its ciphertext is in the conversation's SQLite and in D1.
    expect(everything.split(sent.ciphertext!).length - 1).toBeGreaterThanOrEqual(2);
    expect(everything.includes(marker)).toBe(false);
  });
});
