// The client's end-to-end encryption module (web/src/e2ee/client.ts) with the real MLS engine,
// several simulated devices and an in-memory Delivery Service (e2eeServer.ts): joining by Welcome
// and by external commit, messages both ways, what a late joiner cannot read, a lost epoch race
// retried, two tabs of one device sharing one state, and a forked group state reported.
import { describe, expect, it } from "vitest";
import { Api } from "../src/lib/api";
import { E2eeClient, GONE_DEVICES_CHECK_MS, type PlainEntry } from "../src/e2ee/client";
import { decodePlaintext, encodeAction, encodeMessage, isSealed } from "../src/e2ee/content";
import { MlsDevice, type DeviceSnapshot } from "../src/e2ee/engine";
import { MLS_ADDS_PER_COMMIT } from "../../protocol";
import { inPageLock, type Exclusive } from "../src/e2ee/lock";
import type { Fetch } from "../src/lib/api";
import { FakeE2eeServer, memoryStore, type Sim } from "./e2eeServer";


function sim(server: FakeE2eeServer, userId: string, deviceId = `${userId}-d1`, options: { store?: ReturnType<typeof memoryStore>; lock?: Exclusive; fetch?: Fetch; now?: () => number } = {}): Sim {
  const store = options.store ?? memoryStore();
  const lock = options.lock ?? inPageLock();
  const api = new Api(() => "token", () => undefined, options.fetch ?? server.fetchFor(userId, deviceId));
  let n = 0;
  const client = new E2eeClient({
    userId,
    deviceId,
    api,
    store,
    exclusive: (fn) => lock("mls", fn),
    engine: () => import("../src/e2ee/engine"),
    newId: () => `${deviceId}-${++n}`,
    membersOf: (id) => server.conversations.get(id)?.members ?? [],
    sleep: async () => undefined,
    ...(options.now ? { now: options.now } : {}),
  });
  return { client, store, userId, deviceId };
}

/** Seals a text and sends it as the send queue would. */
async function say(server: FakeE2eeServer, from: Sim, conversationId: string, body: string) {
  const clientMsgId = `${from.deviceId}-msg-${body}`;
  const ciphertext = await from.client.seal(conversationId, clientMsgId, { body });
  return server.sendCiphertext(conversationId, from.userId, from.deviceId, clientMsgId, ciphertext);
}

/** Ann creates group c1 with Bob, whose two devices join it. */
async function annAndTwoDevicesOfBob(server: FakeE2eeServer, now?: () => number) {
  server.conversation("c1", ["ann", "bob"]);
  const ann = sim(server, "ann", "ann-d1", now ? { now } : {});
  const bob1 = sim(server, "bob", "bob-d1");
  const bob2 = sim(server, "bob", "bob-d2");
  await Promise.all([bob1.client.ready(), bob2.client.ready()]);
  await ann.client.create("c1", ["bob"]);
  await Promise.all([bob1.client.catchUp("c1"), bob2.client.catchUp("c1")]);
  return { ann, bob1, bob2 };
}

const texts = (plain: Map<number, PlainEntry>) => [...plain.values()].map((e) => ("failed" in e ? `failed: ${e.failed}` : "action" in e ? `action: ${e.action.type}` : e.body));

describe("e2ee content", () => {
  it("seals the contract's E2eePlaintext, still opens Content v1, and refuses what is neither", () => {
    const media = [{ id: "b1", contentType: "image/png", size: 10, name: "a.png", width: 4, height: 3, thumbnailId: "b2", seal: { key: "k", nonce: "n", sha256: "h" }, thumbnailSeal: { key: "k2", nonce: "n2", sha256: "h2" } }];
    const sealed = { body: "hi", media, replyToSeq: 3, mentions: ["bob"], forwarded: true as const };
    const bytes = encodeMessage(sealed);
    expect(JSON.parse(new TextDecoder().decode(bytes))).toEqual({ type: "message", ...sealed });
    expect(decodePlaintext(bytes)).toEqual({ type: "message", content: { v: 1, ...sealed } });
    expect(decodePlaintext(encodeMessage({ body: "only text", media: [] }))).toEqual({ type: "message", content: { v: 1, body: "only text" } });
    const edit = { type: "edit" as const, targetSeq: 4, body: "fixed" };
    expect(decodePlaintext(encodeAction(edit))).toEqual({ type: "action", action: edit });
    // What this client sealed before actions existed still opens.
    const v1 = new TextEncoder().encode(JSON.stringify({ v: 1, body: "old", media }));
    expect(decodePlaintext(v1)).toEqual({ type: "message", content: { v: 1, body: "old", media } });
    expect(decodePlaintext(new TextEncoder().encode('{"v":2,"body":"x"}'))).toBeNull();
    expect(decodePlaintext(new TextEncoder().encode('{"type":"action","action":{"type":"react","targetSeq":1,"emoji":"abc","on":true}}'))).toBeNull();
    expect(decodePlaintext(new Uint8Array([0xff, 0xfe]))).toBeNull();
    expect(isSealed(media[0]!)).toBe(true);
    expect(isSealed({ id: "x", contentType: "image/png", size: 1, name: "x" })).toBe(false);
  });
});

describe("the in-page lock", () => {
  it("runs calls of one name one at a time, in order, and a failure does not block the next", async () => {
    const lock = inPageLock();
    const log: string[] = [];
    const step = (name: string, fail = false) => async () => {
      log.push(`${name} in`);
      await new Promise((r) => setTimeout(r, 5));
      log.push(`${name} out`);
      if (fail) throw new Error(name);
      return name;
    };
    const results = await Promise.allSettled([lock("a", step("1")), lock("a", step("2", true)), lock("a", step("3"))]);
    expect(log).toEqual(["1 in", "1 out", "2 in", "2 out", "3 in", "3 out"]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
  });
});

describe("the E2EE client", () => {
  it("registers once, stocks key packages and a last resort, and restocks when they run low", async () => {
    const server = new FakeE2eeServer();
    const ann = sim(server, "ann");
    await ann.client.ready();
    expect(server.deviceKeys.get("ann-d1")?.userId).toBe("ann");
    expect(server.keyPackages.get("ann-d1")?.oneTime).toHaveLength(20);
    expect(server.keyPackages.get("ann-d1")?.lastResort).toBeTruthy();
    await ann.client.ready();
    expect(server.keyPackages.get("ann-d1")?.oneTime).toHaveLength(20);
    server.keyPackages.get("ann-d1")!.oneTime.splice(0, 15);
    await ann.client.replenish();
    expect(server.keyPackages.get("ann-d1")?.oneTime).toHaveLength(25);
  });

  it("replaces its last-resort package once a Welcome used it, and the new one opens the next Welcome", async () => {
    const server = new FakeE2eeServer();
    server.conversation("c1", ["ann", "bob"]);
    server.conversation("c2", ["ann", "bob"]);
    const ann = sim(server, "ann");
    const bob = sim(server, "bob");
    await bob.client.ready();
    const stock = server.keyPackages.get("bob-d1")!;
    const first = stock.lastResort;
    // Only the last resort is left for Ann's claims to hand out.
    stock.oneTime.splice(0);
    await ann.client.create("c1", ["bob"]);
    expect((await bob.client.catchUp("c1")).status).toBe("ready");
    // By the Welcome (no external commit of his).
    expect(server.messages("c1").filter((m) => m.kind === "mls.commit")).toHaveLength(1);
    expect(stock.lastResort).not.toBe(first);
    expect(stock.oneTime.length).toBeGreaterThan(0);
    // The replacement is what the next claim hands out when the one-time packages are gone again.
    stock.oneTime.splice(0);
    const second = stock.lastResort;
    await ann.client.create("c2", ["bob"]);
    expect((await bob.client.catchUp("c2")).status).toBe("ready");
    expect(server.messages("c2").filter((m) => m.kind === "mls.commit")).toHaveLength(1);
    expect(stock.lastResort).not.toBe(second);
  });

  it("creates a group: a device with key packages joins by Welcome, one without by external commit; both ways; the sender keeps its own text", async () => {
    const server = new FakeE2eeServer();
    server.conversation("c1", ["ann", "bob", "cat"]);
    const ann = sim(server, "ann");
    const bob = sim(server, "bob");
    const cat = sim(server, "cat");
    await bob.client.ready();
    const created = await ann.client.create("c1", ["bob", "cat"]);
    expect(created.status).toBe("ready");
    const bobJoined = await bob.client.catchUp("c1");
    const addCommit = server.messages("c1").find((m) => m.kind === "mls.commit")!;
    // Bob's key package was in Ann's commit: he came in by its Welcome.
    expect(bobJoined).toMatchObject({ status: "ready", joinedSeq: addCommit.seq });
    expect(server.welcomes.get("bob-d1")).toEqual([]);
    // Cat had none: her device joins by an external commit.
    const catJoined = await cat.client.catchUp("c1");
    expect(catJoined.status).toBe("ready");
    expect(server.messages("c1").at(-1)).toMatchObject({ kind: "mls.commit", senderDeviceId: "cat-d1", seq: catJoined.joinedSeq });

    await say(server, ann, "c1", "hello from ann");
    await say(server, cat, "c1", "cat here");
    expect(texts((await bob.client.catchUp("c1")).plain)).toEqual(["hello from ann", "cat here"]);
    expect(texts((await cat.client.catchUp("c1")).plain)).toEqual(["hello from ann", "cat here"]);
    // MLS does not let Ann decrypt her own message: she shows the text she kept when sealing it.
    expect(texts((await ann.client.catchUp("c1")).plain)).toEqual(["hello from ann", "cat here"]);
  });

  it("a member's device makes the first commit when the creator's device signed out before it; two racing end in one group", async () => {
    const server = new FakeE2eeServer();
    server.conversation("c1", ["ann", "bob", "cat"], "ann-d1");
    const bob = sim(server, "bob");
    const cat = sim(server, "cat");
    await Promise.all([bob.client.ready(), cat.client.ready()]);
    // The creator's device still may: the others wait for it.
    expect((await bob.client.catchUp("c1")).status).toBe("waiting");
    server.logout("ann", "ann-d1", []);
    const [bobState, catState] = await Promise.all([bob.client.catchUp("c1"), cat.client.catchUp("c1")]);
    expect([bobState.status, catState.status]).toEqual(["ready", "ready"]);
    // One first commit was taken; the other device lost the race, dropped its own group and came
    // in by the winner's Welcome.
    expect(server.conflicts).toBe(1);
    expect(server.messages("c1").filter((m) => m.kind === "mls.commit")).toHaveLength(1);
    await say(server, bob, "c1", "from bob");
    await say(server, cat, "c1", "from cat");
    expect(texts((await bob.client.catchUp("c1")).plain)).toEqual(["from bob", "from cat"]);
    expect(texts((await cat.client.catchUp("c1")).plain)).toEqual(["from bob", "from cat"]);
  });

  it("a device that joins later reads nothing sent before it joined, and everything after", async () => {
    const server = new FakeE2eeServer();
    server.conversation("c1", ["ann", "bob"]);
    const ann = sim(server, "ann");
    await ann.client.create("c1", ["bob"]);
    const early = await say(server, ann, "c1", "before bob");
    const bob = sim(server, "bob");
    const joined = await bob.client.catchUp("c1");
    expect(joined.joinedSeq).toBeGreaterThan(early.seq);
    expect(joined.plain.has(early.seq)).toBe(false);
    const late = await say(server, ann, "c1", "after bob");
    expect((await bob.client.catchUp("c1", [late])).plain.get(late.seq)).toMatchObject({ v: 1, body: "after bob", from: "ann", at: late.createdAt });
  });

  it("a message deleted for everyone leaves the text this device decrypted, stored and in memory", async () => {
    const server = new FakeE2eeServer();
    server.conversation("c1", ["ann", "bob"]);
    const ann = sim(server, "ann");
    const bob = sim(server, "bob");
    await bob.client.ready();
    await ann.client.create("c1", ["bob"]);
    const gone = await say(server, ann, "c1", "regrettable");
    const kept = await say(server, ann, "c1", "still here");
    expect(texts((await bob.client.catchUp("c1")).plain)).toEqual(["regrettable", "still here"]);
    const event = server.deleteForEveryone("c1", "ann", "ann-d1", gone.seq);
    const after = await bob.client.catchUp("c1", [event]);
    expect(after.plain.has(gone.seq)).toBe(false);
    expect(after.plain.get(kept.seq)).toMatchObject({ v: 1, body: "still here" });
    expect(JSON.stringify([...bob.store.map.values()])).not.toContain("regrettable");
    // The sender's own copy goes too.
    expect((await ann.client.catchUp("c1")).plain.has(gone.seq)).toBe(false);
  });

  it("a commit that lost the epoch race (409) is retried after processing the winner", async () => {
    const server = new FakeE2eeServer();
    server.conversation("c1", ["ann", "bob"]);
    const bob = sim(server, "bob");
    const dan = sim(server, "dan");
    const eve = sim(server, "eve");
    await Promise.all([bob.client.ready(), dan.client.ready(), eve.client.ready()]);
    // Ann's first commit attempt meets Bob's, stored just before it at the same epoch.
    let raced = false;
    const annFetch = server.fetchFor("ann", "ann-d1");
    const ann = sim(server, "ann", "ann-d1", {
      fetch: async (path, init) => {
        if (!raced && init.method === "POST" && path.endsWith("/mls/commits") && server.conversations.get("c1")!.epoch === 1) {
          raced = true;
          server.system("c1", "added", "bob", ["eve"]);
          await bob.client.addUsers("c1", ["eve"]);
        }
        return annFetch(path, init);
      },
    });
    await ann.client.create("c1", ["bob"]);
    await bob.client.catchUp("c1");
    server.system("c1", "added", "ann", ["dan"]);
    await ann.client.addUsers("c1", ["dan"]);
    expect(raced).toBe(true);
    expect(server.conflicts).toBe(1);
    // One history: every device ends at the same epoch and reads the same message.
    await say(server, ann, "c1", "all of us");
    for (const d of [bob, dan, eve]) expect(texts((await d.client.catchUp("c1")).plain)).toContain("all of us");
    const commits = server.messages("c1").filter((m) => m.kind === "mls.commit");
    expect(commits.map((m) => m.senderDeviceId)).toEqual(["ann-d1", "bob-d1", "ann-d1"]);
  });

  it("adds many devices in commits of at most MLS_ADDS_PER_COMMIT, claiming 100 users at a time, and retries a chunk that lost the race", async () => {
    const server = new FakeE2eeServer();
    const others = Array.from({ length: 109 }, (_, i) => `u${String(i + 1).padStart(3, "0")}`);
    server.conversation("c1", ["ann", "bob", ...others]);
    const bob = sim(server, "bob");
    const sims = others.map((u) => sim(server, u));
    await bob.client.ready();
    for (const s of sims) await s.client.ready();
    const zed = sim(server, "zed");
    await zed.client.ready();
    // Ann's second commit meets Bob's (added by her first), stored just before it at the same epoch.
    let raced = false;
    const annFetch = server.fetchFor("ann", "ann-d1");
    const ann = sim(server, "ann", "ann-d1", {
      fetch: async (path, init) => {
        if (!raced && init.method === "POST" && path.endsWith("/mls/commits") && server.conversations.get("c1")!.epoch === 1) {
          raced = true;
          await bob.client.catchUp("c1");
          server.system("c1", "added", "bob", ["zed"]);
          await bob.client.addUsers("c1", ["zed"]);
        }
        return annFetch(path, init);
      },
    });
    await ann.client.create("c1", ["bob", ...others]);
    expect(raced).toBe(true);
    expect(server.conflicts).toBe(1);
    // Ann's 111 users (her own too) in two claims, then Bob's one.
    expect(server.claims).toEqual([100, 11, 1]);
    // 110 devices: 50, then Bob's commit (Zed), then the lost 50 again, then 10.
    const commits = server.messages("c1").filter((m) => m.kind === "mls.commit");
    expect(commits.map((m) => m.senderDeviceId)).toEqual(["ann-d1", "bob-d1", "ann-d1", "ann-d1"]);
    expect(commits.map((m) => server.added.get(m.seq)!.length)).toEqual([MLS_ADDS_PER_COMMIT, 1, MLS_ADDS_PER_COMMIT, 10]);
    expect(new Set(commits.flatMap((m) => server.added.get(m.seq)!)).size).toBe(111);
    // The devices read what Ann says next.
    await say(server, ann, "c1", "all 112 of us");
    for (const d of [bob, zed, sims[0]!, sims[60]!, sims.at(-1)!]) expect(texts((await d.client.catchUp("c1")).plain)).toEqual(["all 112 of us"]);
  }, 120_000);

  it("two tabs of one device share one state under the lock: interleaved sends and reads never fork it", async () => {
    const server = new FakeE2eeServer();
    server.conversation("c1", ["ann", "bob"]);
    const store = memoryStore();
    const lock = inPageLock();
    const tab1 = sim(server, "ann", "ann-d1", { store, lock });
    const tab2 = sim(server, "ann", "ann-d1", { store, lock });
    const bob = sim(server, "bob");
    await bob.client.ready();
    await tab1.client.create("c1", ["bob"]);
    await bob.client.catchUp("c1");
    // Both tabs seal at once, and Bob commits meanwhile: each tab restores what the other saved.
    await Promise.all([say(server, tab1, "c1", "one"), say(server, tab2, "c1", "two"), bob.client.addUsers("c1", []), tab2.client.catchUp("c1")]);
    await say(server, tab2, "c1", "three");
    await say(server, bob, "c1", "from bob");
    expect(texts((await bob.client.catchUp("c1")).plain)).toEqual(["one", "two", "three", "from bob"]);
    const seen = await tab1.client.catchUp("c1");
    expect(seen.status).toBe("ready");
    expect(texts(seen.plain)).toEqual(["one", "two", "three", "from bob"]);
  });

  it("removes the leaves of a user the member list dropped, and that user reads nothing after", async () => {
    const server = new FakeE2eeServer();
    server.conversation("c1", ["ann", "bob", "cat"]);
    const ann = sim(server, "ann");
    const bob = sim(server, "bob");
    const cat = sim(server, "cat");
    await Promise.all([bob.client.ready(), cat.client.ready()]);
    await ann.client.create("c1", ["bob", "cat"]);
    await Promise.all([bob.client.catchUp("c1"), cat.client.catchUp("c1")]);
    const snapshotOfCat = ((await cat.store.get("mls:device")) as { snapshot: DeviceSnapshot }).snapshot;
    server.system("c1", "removed", "ann", ["cat"]);
    // Bob's device sees the system message and commits the Remove.
    await bob.client.catchUp("c1");
    const remove = server.messages("c1").at(-1)!;
    expect(remove).toMatchObject({ kind: "mls.commit", senderDeviceId: "bob-d1" });
    await ann.client.catchUp("c1");
    const after = await say(server, ann, "c1", "cat cannot read this");
    // Cat's device, holding the state it had, cannot decrypt what comes after its removal.
    const catDevice = await MlsDevice.restore(snapshotOfCat);
    await expect(catDevice.decrypt("c1", after.ciphertext!)).rejects.toThrow(/cannot decrypt/);
    expect(texts((await bob.client.catchUp("c1")).plain)).toEqual(["cat cannot read this"]);
  });

  it("removes a logged-out device's leaf on the server's notice, once, and that device reads nothing after", async () => {
    const server = new FakeE2eeServer();
    const { ann, bob1, bob2 } = await annAndTwoDevicesOfBob(server);
    const snapshotOfBob2 = ((await bob2.store.get("mls:device")) as { snapshot: DeviceSnapshot }).snapshot;
    server.logout("bob", "bob-d2", ["c1"]);
    const before = server.messages("c1").length;
    // Both remaining devices see the notice; one Remove is committed, the other finds nothing left.
    await Promise.all([ann.client.catchUp("c1"), bob1.client.catchUp("c1")]);
    await Promise.all([ann.client.catchUp("c1"), bob1.client.catchUp("c1")]);
    const commits = server.messages("c1").slice(before).filter((m) => m.kind === "mls.commit");
    expect(commits).toHaveLength(1);
    const after = await say(server, ann, "c1", "bob-d2 cannot read this");
    const gone = await MlsDevice.restore(snapshotOfBob2);
    await expect(gone.decrypt("c1", after.ciphertext!)).rejects.toThrow(/cannot decrypt/);
    expect(texts((await bob1.client.catchUp("c1")).plain)).toEqual(["bob-d2 cannot read this"]);
  });

  it("finds a logged-out device's leaf without a notice once a day has passed, and not before", async () => {
    const server = new FakeE2eeServer();
    let now = 1_000_000;
    const { ann } = await annAndTwoDevicesOfBob(server, () => now);
    await ann.client.catchUp("c1");
    // The notice was missed: the device is only gone from the directory.
    server.logout("bob", "bob-d2", []);
    const before = server.messages("c1").length;
    now += GONE_DEVICES_CHECK_MS - 1;
    await ann.client.catchUp("c1");
    expect(server.messages("c1")).toHaveLength(before);
    now += 1;
    await ann.client.catchUp("c1");
    expect(server.messages("c1").slice(before)).toMatchObject([{ kind: "mls.commit", senderDeviceId: "ann-d1" }]);
  });

  it("reports a forked group state instead of diverging", async () => {
    const server = new FakeE2eeServer();
    server.conversation("c1", ["ann", "bob", "dan"]);
    const ann = sim(server, "ann");
    const bob = sim(server, "bob");
    const dan = sim(server, "dan");
    await Promise.all([bob.client.ready(), dan.client.ready()]);
    await ann.client.create("c1", ["bob"]);
    await bob.client.catchUp("c1");
    // A second writer of Bob's state (no shared lock) applies a commit the server never took...
    const stray = await MlsDevice.restore(((await bob.store.get("mls:device")) as { snapshot: DeviceSnapshot }).snapshot);
    stray.accept(await stray.commit("c1"));
    // ...while the group moves on to the same epoch without it.
    await ann.client.addUsers("c1", ["dan"]);
    expect(stray.epoch("c1")).toBe(server.conversations.get("c1")!.epoch);
    const forked = await stray.commit("c1");
    server.injectCommit("c1", "bob", "bob-d1", forked.commit);
    const seen = await ann.client.catchUp("c1");
    expect(seen.status).toBe("problem");
    expect(seen.problem).toMatch(/forked/);
  });

  it("a commit it cannot check while offline is retried later, not taken for a broken group", async () => {
    const server = new FakeE2eeServer();
    server.conversation("c1", ["ann", "bob", "cat"]);
    const ann = sim(server, "ann");
    let offline = false;
    const bobFetch = server.fetchFor("bob", "bob-d1");
    const bob = sim(server, "bob", "bob-d1", {
      fetch: async (path, init) => {
        if (offline && path.startsWith("/users/")) throw new TypeError("Failed to fetch");
        return bobFetch(path, init);
      },
    });
    await bob.client.ready();
    await ann.client.create("c1", ["bob"]);
    await bob.client.catchUp("c1");
    // Cat joins; Bob must look her device up to accept her leaf, and cannot.
    const cat = sim(server, "cat");
    await cat.client.catchUp("c1");
    offline = true;
    await expect(bob.client.catchUp("c1")).rejects.toThrow(/Failed to fetch/);
    offline = false;
    await say(server, cat, "c1", "cat made it");
    const seen = await bob.client.catchUp("c1");
    expect(seen.status).toBe("ready");
    expect(texts(seen.plain)).toEqual(["cat made it"]);
  });
});
