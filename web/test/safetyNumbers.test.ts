// Safety numbers in the client: the plain rules (state/safetyNumbers.ts), the QR code of the
// digits (decoded by an independent reader), and the slice (app/safetyNumbers.ts) on the fake
// browser: computing from both users' device keys, the verified mark in the account's store, and
// a verified contact's changed number.
import jsQR from "jsqr";
import { describe, expect, it, vi } from "vitest";
import { toBase64Url } from "../../protocol/mls";
import { parseRoute, routePath } from "../src/app/route";
import { VERIFIED_KEY } from "../src/app/safetyNumbers";
import { fingerprintHalf, safetyNumber } from "../src/e2ee/safetyNumber";
import { QUIET_ZONE, qrMatrix, qrPath } from "../src/lib/qrCode";
import { changeReason, deviceKeys, groupDigits, keySetId, safetyStatus, type VerifiedMark } from "../src/state/safetyNumbers";
import { settle } from "./fakes";
import { ME, YOU, startSignedIn, type Setup } from "./storeSetup";

const key = (fill: number) => new Uint8Array(32).fill(fill);
const device = (id: string, fill: number | null) => ({ id, name: "Chrome on Linux", createdAt: 1, signatureKey: fill === null ? null : toBase64Url(key(fill)) });

const DIGITS = "052141326917839473924125829006138751249375209846103751293847";

describe("safety number rules", () => {
  it("groups the 60 digits in 12 groups of 5, in order", () => {
    const groups = groupDigits(DIGITS);
    expect(groups).toHaveLength(12);
    expect(groups.every((g) => /^\d{5}$/.test(g))).toBe(true);
    expect(groups.join("")).toBe(DIGITS);
    expect(groups[0]).toBe("05214");
    expect(groups[11]).toBe("93847");
  });

  it("uses the registered keys only, and names a key set the same whatever the order", () => {
    const keys = deviceKeys([device("d1", 1), device("d2", null), device("d3", 3)]);
    expect(keys.map((k) => k[0])).toEqual([1, 3]);
    expect(keySetId("u", [device("a", 1), device("b", 2)])).toBe(keySetId("u", [device("b", 2), device("a", 1), device("c", null)]));
    expect(keySetId("u", [device("a", 1)])).not.toBe(keySetId("u", [device("a", 1), device("b", 2)]));
    expect(keySetId("u", [device("a", 1)])).not.toBe(keySetId("v", [device("a", 1)]));
  });

  it("tells verified, changed (and whose devices) and unverified apart", () => {
    const mine = "1".repeat(30);
    const theirs = "2".repeat(30);
    const mark: VerifiedMark = { userId: "you", number: mine + theirs, mine, theirs, verifiedAt: 1 };
    expect(safetyStatus(undefined, { state: "ready", number: mine + theirs, mine, theirs })).toEqual({ kind: "unverified" });
    expect(safetyStatus(mark, { state: "ready", number: mine + theirs, mine, theirs }).kind).toBe("verified");
    // Not computed yet (offline, or before the first check): the mark stands.
    expect(safetyStatus(mark, undefined).kind).toBe("verified");
    expect(safetyStatus(mark, { state: "loading" }).kind).toBe("verified");
    const other = "3".repeat(30);
    expect(safetyStatus(mark, { state: "ready", number: mine + other, mine, theirs: other })).toMatchObject({ kind: "changed", theirs: true, mine: false });
    expect(safetyStatus(mark, { state: "ready", number: other + theirs, mine: other, theirs })).toMatchObject({ kind: "changed", theirs: false, mine: true });
    // The contact has no key left at all: changed too.
    expect(safetyStatus(mark, { state: "no-keys", mine: false, theirs: true })).toMatchObject({ kind: "changed", theirs: true, mine: false });
    expect(changeReason("Bob", { theirs: true, mine: false })).toBe("Bob added or removed a device");
    expect(changeReason("Bob", { theirs: false, mine: true })).toBe("you added or removed a device");
    expect(changeReason("Bob", { theirs: true, mine: true })).toBe("both of you added or removed devices");
  });
});

describe("the QR code of a safety number", () => {
  it("encodes exactly the 60 digits (read back by an independent decoder)", () => {
    const matrix = qrMatrix(DIGITS);
    // Numeric mode at level M: 60 digits fit version 2, 25 modules a side.
    expect(matrix).toHaveLength(25);
    // Draw it as the panel does (dark modules on white with the quiet zone), 6 pixels a module.
    const { d, side } = qrPath(matrix);
    expect(side).toBe(25 + 2 * QUIET_ZONE);
    const scale = 6;
    const width = side * scale;
    const pixels = new Uint8ClampedArray(width * width * 4).fill(255);
    for (const [, x, y] of d.matchAll(/M(\d+) (\d+)h1v1h-1z/g)) {
      for (let dy = 0; dy < scale; dy++) {
        for (let dx = 0; dx < scale; dx++) {
          const at = ((Number(y) * scale + dy) * width + Number(x) * scale + dx) * 4;
          pixels[at] = pixels[at + 1] = pixels[at + 2] = 0;
        }
      }
    }
    const read = jsQR(pixels, width, width);
    expect(read?.data).toBe(DIGITS);
    expect(read?.version).toBe(2);
    // Another number draws another code.
    expect(qrPath(qrMatrix(DIGITS.replace(/^0/, "1"))).d).not.toBe(d);
  });
});

describe("the safety-number slice", () => {
  /** The server's devices per user, which a test changes. */
  function serveDevices(s: Setup, devices: Map<string, ReturnType<typeof device>[]>): void {
    for (const id of [ME.id, YOU.id, "other"]) {
      s.browser.server.on(`GET /users/${id}/devices`, () => {
        const list = devices.get(id);
        return list ? { json: { devices: list } } : { status: 404, json: { error: { code: "not_found", message: "no such user" } } };
      });
    }
  }

  it("computes the number both users see from their registered keys, and keeps the verified mark across a reload", async () => {
    const s = await startSignedIn();
    const devices = new Map([
      [ME.id, [device("me-d", 1)]],
      [YOU.id, [device("you-d1", 7), device("you-d2", null)]],
    ]);
    serveDevices(s, devices);
    await s.store.showSafetyNumber(YOU.id);
    const view = s.store.safetyNumber(YOU.id);
    const expected = await safetyNumber({ userId: ME.id, keys: [key(1)] }, { userId: YOU.id, keys: [key(7)] });
    expect(view).toEqual({ state: "ready", number: expected, mine: await fingerprintHalf(ME.id, [key(1)]), theirs: await fingerprintHalf(YOU.id, [key(7)]) });
    expect(s.store.safetyStatus(YOU.id).kind).toBe("unverified");

    await s.store.markVerified(YOU.id);
    expect(s.store.safetyStatus(YOU.id).kind).toBe("verified");
    const stored = await s.browser.localStores.stores.get(ME.id)!.get(VERIFIED_KEY);
    expect(stored).toEqual([{ userId: YOU.id, number: expected, mine: expect.any(String), theirs: expect.any(String), verifiedAt: s.browser.clock.now() }]);

    // A reload: the mark is there before anything is fetched.
    const reload = await startSignedIn({ browser: s.browser, list: s.list });
    expect(reload.store.safetyStatus(YOU.id).kind).toBe("verified");
  });

  it("re-checks only verified contacts; a new device of theirs turns the mark into a change, and verifying again takes the new number", async () => {
    const s = await startSignedIn();
    const devices = new Map([
      [ME.id, [device("me-d", 1)]],
      [YOU.id, [device("you-d1", 7)]],
      ["other", [device("other-d", 9)]],
    ]);
    serveDevices(s, devices);
    await s.store.showSafetyNumber(YOU.id);
    await s.store.markVerified(YOU.id);
    const verified = s.store.safetyNumber(YOU.id);
    const before = s.browser.server.requests.length;
    await s.store.checkSafetyNumbers([ME.id, YOU.id, "other"]);
    // "other" is not verified: nothing is fetched for them.
    expect(s.browser.server.requests.slice(before).map((r) => r.path).sort()).toEqual([`/users/${ME.id}/devices`, `/users/${YOU.id}/devices`]);
    expect(s.store.safetyStatus(YOU.id).kind).toBe("verified");

    // They sign in on a second device, which registers its key.
    devices.set(YOU.id, [device("you-d1", 7), device("you-d2", 8)]);
    await s.store.checkSafetyNumbers([YOU.id]);
    expect(s.store.safetyStatus(YOU.id)).toMatchObject({ kind: "changed", theirs: true, mine: false });
    const changed = s.store.safetyNumber(YOU.id);
    expect(changed?.state === "ready" && verified?.state === "ready" && changed.number !== verified.number).toBe(true);

    await s.store.markVerified(YOU.id);
    expect(s.store.safetyStatus(YOU.id).kind).toBe("verified");
    expect(await s.browser.localStores.stores.get(ME.id)!.get(VERIFIED_KEY)).toMatchObject([{ userId: YOU.id, number: changed?.state === "ready" ? changed.number : "" }]);

    // A device of our own changes it too, and says so.
    devices.set(ME.id, [device("me-d", 1), device("me-d2", 2)]);
    await s.store.checkSafetyNumbers([YOU.id]);
    expect(s.store.safetyStatus(YOU.id)).toMatchObject({ kind: "changed", theirs: false, mine: true });

    await s.store.clearVerified(YOU.id);
    expect(s.store.safetyStatus(YOU.id).kind).toBe("unverified");
    expect(await s.browser.localStores.stores.get(ME.id)!.get(VERIFIED_KEY)).toEqual([]);
  });

  it("says there is no number while either side has no registered key, and never marks that verified", async () => {
    const s = await startSignedIn();
    const devices = new Map([
      [ME.id, [device("me-d", 1)]],
      [YOU.id, [device("you-d1", null)]],
    ]);
    serveDevices(s, devices);
    await s.store.showSafetyNumber(YOU.id);
    expect(s.store.safetyNumber(YOU.id)).toEqual({ state: "no-keys", mine: false, theirs: true });
    await s.store.markVerified(YOU.id);
    expect(s.store.safetyStatus(YOU.id).kind).toBe("unverified");
    expect(await s.browser.localStores.stores.get(ME.id)!.get(VERIFIED_KEY)).toBeUndefined();
    devices.set(ME.id, []);
    devices.set(YOU.id, [device("you-d1", 7)]);
    await s.store.showSafetyNumber(YOU.id);
    expect(s.store.safetyNumber(YOU.id)).toEqual({ state: "no-keys", mine: true, theirs: false });
  });

  it("an unknown user is an error; a failed re-check keeps the number last shown", async () => {
    const s = await startSignedIn();
    const devices = new Map([
      [ME.id, [device("me-d", 1)]],
      [YOU.id, [device("you-d1", 7)]],
    ]);
    serveDevices(s, devices);
    await s.store.showSafetyNumber("other");
    expect(s.store.safetyNumber("other")).toEqual({ state: "error", message: "no such user" });
    await s.store.showSafetyNumber(YOU.id);
    await s.store.markVerified(YOU.id);
    s.browser.server.on(`GET /users/${YOU.id}/devices`, () => "network error");
    await s.store.checkSafetyNumbers([YOU.id]);
    expect(s.store.safetyNumber(YOU.id)?.state).toBe("ready");
    expect(s.store.safetyStatus(YOU.id).kind).toBe("verified");
  });

  it("the page shown again re-checks the open chat's verified members", async () => {
    const s = await startSignedIn({ path: "/c/c1" });
    const devices = new Map([
      [ME.id, [device("me-d", 1)]],
      [YOU.id, [device("you-d1", 7)]],
    ]);
    serveDevices(s, devices);
    await s.store.showSafetyNumber(YOU.id);
    await s.store.markVerified(YOU.id);
    devices.set(YOU.id, [device("you-d1", 7), device("you-d2", 8)]);
    const before = s.browser.server.calls(`GET /users/${YOU.id}/devices`).length;
    s.browser.fire("hidden");
    s.browser.fire("visible");
    await settle();
    expect(s.browser.server.calls(`GET /users/${YOU.id}/devices`)).toHaveLength(before + 1);
    // The check hashes 5,200 times in WebCrypto, off this thread: wait for its result.
    await vi.waitFor(() => expect(s.store.safetyStatus(YOU.id).kind).toBe("changed"), { timeout: 10_000 });
  });

  it("sign-out forgets the marks with the account's store", async () => {
    const s = await startSignedIn();
    serveDevices(s, new Map([
      [ME.id, [device("me-d", 1)]],
      [YOU.id, [device("you-d1", 7)]],
    ]));
    s.browser.server.on("POST /auth/logout", () => ({ status: 204 }));
    await s.store.showSafetyNumber(YOU.id);
    await s.store.markVerified(YOU.id);
    await s.store.logout();
    expect(s.store.state.safety.marks.size).toBe(0);
    expect(s.store.state.safety.numbers.size).toBe(0);
    expect(s.browser.localStores.stores.has(ME.id)).toBe(false);
  });
});

describe("the safety-number route", () => {
  it("is a real URL under its conversation, and round-trips", () => {
    const route = parseRoute("/c/c1/safety/u%3A1", "");
    expect(route).toEqual({ name: "chat", id: "c1", thread: null, info: false, safety: "u:1" });
    expect(routePath(route)).toBe("/c/c1/safety/u%3A1");
    expect(parseRoute("/c/c1/info", "")).toEqual({ name: "chat", id: "c1", thread: null, info: true });
    expect(parseRoute("/c/c1/safety/", "")).toEqual({ name: "list" });
  });
});
