// What the Worker signs instead of storing: WebSocket tickets and media URLs. Each verifies only
// as issued, under its secret, before its expiry and within the lifetime allowed now.
import { describe, expect, it } from "vitest";
import { ApiError } from "../../../worker/lib/apiError";
import { contentPath, mediaOrigin, signMediaUrl, verifyMediaUrl } from "../../../worker/lib/signing";
import { issueTicket, verifyTicket } from "../../../worker/lib/tickets";

const NOW = 1_800_000_000_000;
const SECRET = "a long random secret";
const MINUTE = 60_000;

/** `text` with its first character changed (a base64url one changes the first byte it encodes). */
const flip = (text: string) => (text[0] === "A" ? "B" : "A") + text.slice(1);

describe("tickets", () => {
  const identity = { userId: "user_1-A", deviceId: "device-2_b" };
  const issue = (expiresAt = NOW + MINUTE, secret = SECRET) => issueTicket(identity, expiresAt, secret);

  it("verifies as issued: who it is for, its expiry and its nonce", async () => {
    const ticket = await issue();
    const [userId, deviceId, expiresAt, nonce] = ticket.split(".");
    expect(await verifyTicket(ticket, SECRET, NOW, MINUTE)).toEqual({ userId, deviceId, expiresAt: Number(expiresAt), nonce });
    expect({ userId, deviceId }).toEqual(identity);
  });

  it("gives each ticket its own nonce", async () => {
    const nonces = new Set(await Promise.all([1, 2, 3].map(async () => (await issue()).split(".")[3])));
    expect(nonces.size).toBe(3);
  });

  it.each([
    ["just issued", 0, MINUTE, true],
    ["a moment before it expires", MINUTE - 1, MINUTE, true],
    ["at its expiry", MINUTE, MINUTE, false],
    ["after its expiry", MINUTE + 1, MINUTE, false],
    ["signed for longer than the lifetime allowed now", 0, MINUTE / 2, false],
  ])("%s: valid %s", async (_, elapsed, maxLifetime, valid) => {
    const ticket = await issue();
    expect((await verifyTicket(ticket, SECRET, NOW + elapsed, maxLifetime)) !== null).toBe(valid);
  });

  const part = (index: number, change: (p: string) => string) => (ticket: string) =>
    ticket
      .split(".")
      .map((p, i) => (i === index ? change(p) : p))
      .join(".");
  it.each<[string, (ticket: string) => string]>([
    ["another user", part(0, () => "mallory")],
    ["another device", part(1, () => "device-3")],
    ["a later expiry", part(2, (p) => String(Number(p) + 1))],
    ["another nonce", part(3, flip)],
    ["another MAC", part(4, flip)],
    ["a field dropped", (t) => t.split(".").slice(1).join(".")],
    ["a field added", (t) => `${t}.x`],
    ["a dot in the user id", (t) => `a.${t}`],
    ["nothing", () => ""],
  ])("refuses a ticket with %s", async (_, tamper) => {
    expect(await verifyTicket(tamper(await issue()), SECRET, NOW, MINUTE)).toBeNull();
  });

  it("refuses a ticket signed under another secret", async () => {
    expect(await verifyTicket(await issue(NOW + MINUTE, "another secret"), SECRET, NOW, MINUTE)).toBeNull();
  });
});

describe("signed media URLs", () => {
  const DAY = 24 * 3600_000;
  const sign = async (mediaId = "m1", expiresAt = NOW + 3600_000, secret = SECRET) =>
    new URL(await signMediaUrl("https://chat.example", mediaId, expiresAt, secret));
  const verify = (mediaId: string, url: URL | URLSearchParams, now = NOW, maxLifetime = 7 * DAY) =>
    verifyMediaUrl(mediaId, url instanceof URL ? url.searchParams : url, SECRET, now, maxLifetime);

  it("signs the content path with exp and sig, and verifies as signed", async () => {
    const url = await sign("a/b c");
    expect(url.pathname).toBe(contentPath("a/b c"));
    expect(url.pathname).toBe("/media/a%2Fb%20c/content");
    expect([...url.searchParams.keys()]).toEqual(["exp", "sig"]);
    expect(url.searchParams.get("exp")).toBe(String(NOW + 3600_000));
    expect(await verify("a/b c", url)).toEqual({ expiresAt: NOW + 3600_000 });
  });

  const query = (exp: string | null, sig: string | null, extra: Record<string, string> = {}) => {
    const q = new URLSearchParams(extra);
    if (exp !== null) q.append("exp", exp);
    if (sig !== null) q.append("sig", sig);
    return q;
  };
  it.each<[string, (exp: string, sig: string) => URLSearchParams, string?]>([
    ["another sig", (exp, sig) => query(exp, flip(sig))],
    ["a later exp", (exp, sig) => query(String(Number(exp) + 1), sig)],
    ["an earlier exp", (exp, sig) => query(String(Number(exp) - 1), sig)],
    ["another media id", (exp, sig) => query(exp, sig), "m2"],
    ["a parameter added", (exp, sig) => query(exp, sig, { download: "1" })],
    ["exp given twice", (exp, sig) => query(exp, sig, { exp })],
    ["no sig", (exp) => query(exp, null)],
    ["no exp", (_, sig) => query(null, sig)],
    ["an exp that is not a number", (_, sig) => query("soon", sig)],
    ["a sig that is not base64url", (exp, sig) => query(exp, `${sig.slice(0, -1)}=`)],
  ])("refuses a URL with %s (403)", async (_, tamper, mediaId = "m1") => {
    const url = await sign();
    const tampered = tamper(url.searchParams.get("exp")!, url.searchParams.get("sig")!);
    await expect(verify(mediaId, tampered)).rejects.toMatchObject({ code: "forbidden", status: 403, message: "invalid signed URL" });
  });

  it("refuses a URL signed under another secret", async () => {
    await expect(verify("m1", await sign("m1", NOW + 3600_000, "another secret"))).rejects.toBeInstanceOf(ApiError);
  });

  it.each([
    ["a moment before it expires", 3600_000 - 1, 7 * DAY, true],
    ["at its expiry", 3600_000, 7 * DAY, false],
    ["after its expiry", 3600_000 + 1, 7 * DAY, false],
    ["signed for longer than the lifetime allowed now", 0, 3600_000 - 1, false],
  ])("%s: valid %s", async (_, elapsed, maxLifetime, valid) => {
    const result = verify("m1", await sign(), NOW + elapsed, maxLifetime);
    if (valid) await expect(result).resolves.toEqual({ expiresAt: NOW + 3600_000 });
    else await expect(result).rejects.toMatchObject({ code: "forbidden", message: "signed URL expired" });
  });
});

describe("mediaOrigin", () => {
  it("is PUBLIC_ORIGIN whatever the Host, but for another loopback name of the same local server", () => {
    expect(mediaOrigin("https://chat.example.com", "https://evil.example/media/x")).toBe("https://chat.example.com");
    expect(mediaOrigin("https://chat.example.com", "http://localhost:8787/media/x")).toBe("https://chat.example.com");
    expect(mediaOrigin("http://127.0.0.1:8787", "http://evil.example:8787/media/x")).toBe("http://127.0.0.1:8787");
    expect(mediaOrigin("http://127.0.0.1:8787", "http://localhost:8787/media/x")).toBe("http://localhost:8787");
    expect(mediaOrigin("http://127.0.0.1:8787", "http://localhost:9999/media/x")).toBe("http://127.0.0.1:8787");
  });
});
