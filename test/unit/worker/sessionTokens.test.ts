// Bearer tokens: signed, checked without any database. A token verifies only as minted, under a key
// of SESSION_SECRET that its key id names, before its expiry and within the lifetime allowed now.
import { describe, expect, it } from "vitest";
import { bearerToken, keyIdOf, mintSessionToken, sessionKeys, verifySessionToken } from "../../../worker/lib/sessionTokens";
import { issueTicket } from "../../../worker/lib/tickets";

const NOW = 1_800_000_000_000;
const DAY = 86_400_000;
const KEY = "the signing key";
const OLD_KEY = "the key before it";
const identity = { userId: "01JUSER0000000000000000000", deviceId: "01JDEVICE000000000000000000" };

const mint = (keys = [KEY], expiresAt = NOW + 30 * DAY) => mintSessionToken(identity, expiresAt, keys);
const verify = (token: string, keys = [KEY], now = NOW, maxLifetime = 365 * DAY) => verifySessionToken(token, keys, now, maxLifetime);

/** `text` with its first character changed (a base64url one changes the first byte it encodes). */
const flip = (text: string) => (text[0] === "A" ? "B" : "A") + text.slice(1);
const part = (index: number, change: (p: string) => string) => (token: string) =>
  token
    .split(".")
    .map((p, i) => (i === index ? change(p) : p))
    .join(".");

describe("session tokens", () => {
  it("verify as minted: who, which session, until when; opaque base64url fields joined by dots", async () => {
    const { token, claims } = await mint();
    expect(claims).toMatchObject({ ...identity, expiresAt: NOW + 30 * DAY });
    expect(claims.sessionId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(await verify(token)).toEqual(claims);
    expect(token).toMatch(/^s1\.[A-Za-z0-9_-]{8}\.[^.]+\.[^.]+\.[A-Za-z0-9_-]{22}\.\d+\.[A-Za-z0-9_-]{43}$/);
    expect(bearerToken(`Bearer ${token}`)).toBe(token);
  });

  it("gives each session its own id", async () => {
    const ids = new Set(await Promise.all([1, 2, 3].map(async () => (await mint()).claims.sessionId)));
    expect(ids.size).toBe(3);
  });

  it.each([
    ["just minted", 0, 365 * DAY, true],
    ["a moment before it expires", 30 * DAY - 1, 365 * DAY, true],
    ["at its expiry", 30 * DAY, 365 * DAY, false],
    ["after its expiry", 30 * DAY + 1, 365 * DAY, false],
    ["signed for longer than the lifetime allowed now", 0, 7 * DAY, false],
  ])("%s: valid %s", async (_, elapsed, maxLifetime, valid) => {
    const { token } = await mint();
    expect((await verify(token, [KEY], NOW + elapsed, maxLifetime)) !== null).toBe(valid);
  });

  it.each<[string, (token: string) => string]>([
    ["another version", part(0, () => "s2")],
    ["another key id", part(1, flip)],
    ["another user", part(2, () => "mallory")],
    ["another device", part(3, () => "01JDEVICE000000000000000001")],
    ["another session", part(4, flip)],
    ["a later expiry", part(5, (p) => String(Number(p) + 1))],
    ["a leading zero in the expiry", part(5, (p) => `0${p}`)],
    ["another MAC", part(6, flip)],
    ["a field dropped", (t) => t.split(".").filter((_, i) => i !== 4).join(".")],
    ["a field added", (t) => `${t}.x`],
    ["a dot in the user id", part(2, (p) => `a.${p}`)],
    ["spaces around it", (t) => ` ${t} `],
    ["nothing", () => ""],
  ])("refuses a token with %s", async (_, tamper) => {
    const { token } = await mint();
    expect(await verify(tamper(token))).toBeNull();
  });

  it("refuses a token signed under a key it does not have, and one whose key id names another of its keys", async () => {
    const { token } = await mint(["a key nobody configured"]);
    expect(await verify(token)).toBeNull();
    const old = await mint([OLD_KEY]);
    const namingTheNewKey = part(1, () => "")(old.token).replace("s1..", `s1.${await keyIdOf(KEY)}.`);
    expect(namingTheNewKey).not.toBe(old.token);
    expect(await verify(namingTheNewKey, [KEY, OLD_KEY])).toBeNull();
    expect(await verify(old.token, [KEY, OLD_KEY])).toEqual(old.claims);
  });

  it("signs with the first key and verifies under every key listed: a rotation keeps old tokens", async () => {
    const old = await mint([OLD_KEY]);
    const rotated = [KEY, OLD_KEY];
    const fresh = await mint(rotated);
    expect(fresh.token.split(".")[1]).toBe(await keyIdOf(KEY));
    expect(old.token.split(".")[1]).toBe(await keyIdOf(OLD_KEY));
    expect(await verify(fresh.token, rotated)).toEqual(fresh.claims);
    expect(await verify(old.token, rotated)).toEqual(old.claims);
    // Dropping the old key signs its sessions out.
    expect(await verify(old.token, [KEY])).toBeNull();
  });

  it("reads the keys of SESSION_SECRET, and refuses to mint without one", async () => {
    expect(sessionKeys(` ${KEY} ,${OLD_KEY},,`)).toEqual([KEY, OLD_KEY]);
    expect(sessionKeys(null)).toEqual([]);
    await expect(mint([])).rejects.toThrow(/SESSION_SECRET/);
    expect(await verify((await mint()).token, [])).toBeNull();
  });

  it("refuses a WebSocket ticket offered as a bearer token, and reads only well-formed bearer headers", async () => {
    const ticket = await issueTicket(identity, NOW + 30_000, KEY);
    expect(await verify(ticket)).toBeNull();
    expect(bearerToken(undefined)).toBeNull();
    expect(bearerToken("Basic abcdefghijklmnopqrstuvwxyz")).toBeNull();
    expect(bearerToken("Bearer short")).toBeNull();
    expect(bearerToken(`Bearer ${"a".repeat(513)}`)).toBeNull();
    expect(bearerToken("Bearer abc/defghijklmnopqrstu")).toBeNull();
  });
});
