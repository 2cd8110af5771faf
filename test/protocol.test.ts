// The wire protocol: schemas parse what they should, and a schema change cannot ship without a
// PROTOCOL_VERSION bump.
import * as z from "zod";
import { describe, expect, it } from "vitest";
import * as protocol from "../protocol";
import { newId } from "../kernel/ids";
import { cursorOf, parseSince } from "../worker/routes/messages";

/** The fingerprint of every exported schema at each protocol version. Append; never edit. */
const FINGERPRINTS: Record<number, string> = {
  1: "6dda12eae5d476795a55e04c93739e5109b337d11ba759d48efa652ddc422851",
  2: "719a753de9d2f7975f705458a243220da2601ed080d25f0da5bb982fcc1ad9b4",
  3: "703727933fedb3f8474e2dd07b32bab72e8802bf73903701ada891a52e1aad12",
  4: "38566028c45267ff6ec9a06c94261a3ed9320a719f98d32a1c0ee62a218b4c5f",
  5: "e25f44f4ba8aede487fb1a03b5b3158e37ee41f6560baf6876d8b5259f0541e2",
  6: "d887c7d6db073d5b6299929ad5f008b9fc720ee10b16f000e1f42a4e9d3048e2",
  7: "6095177c2e26a9c42d78f0850414da09ebd355845d2a776ebe30ec1c246a4ea6",
  8: "cb6585ee0d66595e2de336e64723168349d6db22e0fe598340247f180034075d",
  9: "8023790f05e1b8447a4e2ade4a360b8586d8ea520b3c4d0bc3d8f603b84c93a3",
  10: "84e343d3e5e0c1ded5a7b0487b05d2c0adf44dec0631105343674abe5988f763",
  11: "2c1d5912c4df2ddd13101d16f77bdc67d578456e5a7b012febab08f47dcb4296",
  12: "15e3e1edeac27a6482738877d756770551273ef2cc4b4bce961a8896fc711db1",
  13: "105f0904207ce337baccdb7b86c72daaabfa5898bb7dce6d2f5e0308d06dff4f",
  14: "3d31b3914e109e29756b6449175d239952b754133073372fe75884ff2fcaad80",
  15: "6f83cf4a4f13f7ec1a0f2674413ea3c5a40f2a3ddcea66eb004df4380c003dbc",
  16: "b3c3ca189a1cd114299a266d29e0d6a6da4c22c55aaf4f194a9c28db8a434941",
  17: "95e5a388f6249d2e72ad7bd6bc04ec5e0e3a8991eea50d4e91761afaf25af6c1",
};

async function fingerprint(): Promise<string> {
  const schemas = Object.entries(protocol)
    .filter(([, value]) => value instanceof z.ZodType)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, schema]) => [name, z.toJSONSchema(schema as z.ZodType, { unrepresentable: "any", io: "input" })]);
  const text = JSON.stringify({ schemas, limits: protocol.LIMITS, errors: protocol.ERROR_STATUS, close: protocol.CLOSE });
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

describe("protocol", () => {
  it("has a recorded fingerprint for the current version (bump PROTOCOL_VERSION when schemas change)", async () => {
    const current = await fingerprint();
    if (FINGERPRINTS[protocol.PROTOCOL_VERSION] !== current) {
      console.error(`protocol fingerprint is now ${current}: bump PROTOCOL_VERSION and record it`);
    }
    expect(FINGERPRINTS[protocol.PROTOCOL_VERSION]).toBe(current);
  });

  it("parses client frames into one discriminated union", () => {
    expect(protocol.ConversationClientFrame.parse({ type: "send", clientMsgId: "a", body: "hi" })).toEqual({ type: "send", clientMsgId: "a", body: "hi" });
    expect(protocol.ConversationClientFrame.safeParse({ type: "send", clientMsgId: "a" }).success).toBe(false);
    expect(protocol.ConversationClientFrame.safeParse({ type: "typing", on: "yes" }).success).toBe(false);
    expect(protocol.ConversationClientFrame.safeParse({ type: "read", seq: -1 }).success).toBe(false);
    expect(protocol.ConversationClientFrame.safeParse({ type: "nope" }).success).toBe(false);
    expect(protocol.UserClientFrame.safeParse({ type: "presence.watch", userIds: new Array(201).fill("u") }).success).toBe(false);
  });

  it("reads since as 0, a time or a cursor (and a cursor of the D1 index as a start over from its time)", () => {
    expect(parseSince("0")).toEqual({ ingestId: 0, seq: 0, minTime: 0, resume: false });
    expect(parseSince("1700000000000")).toEqual({ ingestId: 0, seq: 0, minTime: 1700000000000, resume: false });
    expect(parseSince("uz.a.1")).toEqual({ ingestId: 35, seq: 10, minTime: 1, resume: true });
    expect(cursorOf({ ingestId: 35, seq: 10, minTime: 1 })).toBe("uz.a.1");
    expect(parseSince("cz.1")).toEqual({ ingestId: 0, seq: 0, minTime: 1, resume: false });
    for (const bad of ["c", "uz.a", "uz.a.1.2", "u.a.1", "uzzzzzzzzzzz.0.0", "-1"]) expect(() => parseSince(bad), bad).toThrow();
  });

  it("makes ids as ULIDs: time first, distinct across many draws of the random pool", () => {
    const at = 1_700_000_000_000;
    // 1,000 ids take four refills of the 4 KiB pool (16 bytes each).
    const ids = Array.from({ length: 1_000 }, () => newId(at));
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(new Set(ids.map((id) => id.slice(0, 10))).size).toBe(1);
    // The random part is not stuck: every symbol shows up across them.
    expect(new Set(ids.flatMap((id) => [...id.slice(10)])).size).toBe(32);
    expect(newId(at + 1) > newId(at)).toBe(true);
    expect(newId(0).slice(0, 10)).toBe("0000000000");
  });
});
