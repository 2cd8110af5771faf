// The KeyPackage directory of a user's object and the Welcomes it keeps: a one-time package is
// handed out at most once, then the last resort (kept); expired ones are dropped; the claim rate
// limit survives in SQLite; Welcomes are kept once and dropped with their conversation.
import { describe, expect, it } from "vitest";
import { KEY_PACKAGES_MAX, KeyPackageDirectory } from "../../../durable-objects/user/keyPackages";
import { Welcomes } from "../../../durable-objects/user/welcomes";
import { migrate } from "../../../durable-objects/lib/migrate";
import { USER_MIGRATIONS } from "../../../durable-objects/user/schema";
import { memorySql } from "../support/sql";
import { MemorySocket, framesOf } from "../support/sockets";

function userSql() {
  const sql = memorySql();
  migrate(sql, USER_MIGRATIONS);
  return sql;
}

const DAY = 86_400_000;
const kp = (name: string, notAfter = 10 * DAY) => ({ keyPackage: name, notAfter });

describe("KeyPackageDirectory", () => {
  it("hands each one-time package out once, oldest first, then the last resort again and again", () => {
    const directory = new KeyPackageDirectory(userSql());
    expect(directory.upload("d1", [kp("a"), kp("b")], kp("last"), 0)).toBe(2);
    expect(directory.upload("d1", [kp("a")], null, 0)).toBe(2);
    expect(directory.claim(["d1", "d2"], 0)).toEqual([{ deviceId: "d1", keyPackage: "a", lastResort: false, left: 1 }]);
    expect(directory.claim(["d1"], 0)).toEqual([{ deviceId: "d1", keyPackage: "b", lastResort: false, left: 0 }]);
    for (let i = 0; i < 2; i++) expect(directory.claim(["d1"], 0)).toEqual([{ deviceId: "d1", keyPackage: "last", lastResort: true, left: 0 }]);
    expect(directory.count("d1", 0)).toEqual({ count: 0, lastResort: true });
  });

  it("keeps at most KEY_PACKAGES_MAX one-time packages a device, refusing a whole upload beyond", () => {
    const directory = new KeyPackageDirectory(userSql());
    const many = (from: number, n: number) => Array.from({ length: n }, (_, i) => kp(`p${from + i}`));
    expect(directory.upload("d1", many(0, KEY_PACKAGES_MAX - 1), null, 0)).toBe(KEY_PACKAGES_MAX - 1);
    expect(directory.upload("d1", many(KEY_PACKAGES_MAX, 2), kp("last"), 0)).toBeNull();
    expect(directory.count("d1", 0)).toEqual({ count: KEY_PACKAGES_MAX - 1, lastResort: false });
    expect(directory.upload("d1", many(KEY_PACKAGES_MAX, 1), null, 0)).toBe(KEY_PACKAGES_MAX);
  });

  it("replaces the last resort and drops expired packages", () => {
    const directory = new KeyPackageDirectory(userSql());
    directory.upload("d1", [kp("old", DAY), kp("new", 3 * DAY)], kp("r1", DAY), 0);
    directory.upload("d1", [], kp("r2", 3 * DAY), 0);
    expect(directory.count("d1", 2 * DAY)).toEqual({ count: 1, lastResort: true });
    expect(directory.claim(["d1"], 2 * DAY).map((c) => c.keyPackage)).toEqual(["new"]);
    expect(directory.claim(["d1"], 2 * DAY).map((c) => c.keyPackage)).toEqual(["r2"]);
    expect(directory.claim(["d1"], 4 * DAY)).toEqual([]);
  });

  it("drops every package of a device that logged out, and only its", () => {
    const directory = new KeyPackageDirectory(userSql());
    directory.upload("d1", [kp("a")], kp("r1"), 0);
    directory.upload("d2", [kp("b")], kp("r2"), 0);
    directory.dropDevice("d1");
    expect(directory.count("d1", 0)).toEqual({ count: 0, lastResort: false });
    expect(directory.claim(["d1", "d2"], 0).map((c) => c.keyPackage)).toEqual(["b"]);
  });

  it("limits claims per minute, from SQLite, so a new wake-up gets no fresh bucket", () => {
    const sql = userSql();
    const first = new KeyPackageDirectory(sql);
    for (let i = 0; i < 3; i++) expect(first.takeClaim(0, 3)).toBe(0);
    const afterEviction = new KeyPackageDirectory(sql);
    expect(afterEviction.takeClaim(0, 3)).toBeCloseTo(20);
    expect(afterEviction.takeClaim(20_000, 3)).toBe(0);
  });
});

describe("Welcomes", () => {
  it("keeps a Welcome once, tells only its device, and drops a conversation's when its user leaves", () => {
    const [d1, d2] = [new MemorySocket(), new MemorySocket()];
    const welcomes = new Welcomes(userSql(), (deviceId) => (deviceId === "d1" ? [d1.ws] : [d2.ws]));
    const w = { id: "w1", conversationId: "c1", seq: 3, deviceId: "d1", welcome: "AAAA" };
    welcomes.receive([w]);
    welcomes.receive([w]);
    expect(framesOf(d1)).toEqual([{ type: "mls.welcome", id: "w1", conversationId: "c1", seq: 3, welcome: "AAAA" }]);
    expect(framesOf(d2)).toEqual([]);
    expect(welcomes.list("d1")).toEqual([{ id: "w1", conversationId: "c1", seq: 3, welcome: "AAAA" }]);
    expect(welcomes.list("d2")).toEqual([]);
    expect(welcomes.delete("d2", "w1")).toBe(false);
    welcomes.receive([{ ...w, id: "w2", conversationId: "c2" }]);
    welcomes.dropConversation("c1");
    expect(welcomes.list("d1").map((x) => x.id)).toEqual(["w2"]);
    expect(welcomes.delete("d1", "w2")).toBe(true);
    expect(welcomes.list("d1")).toEqual([]);
    // A device that logs out loses its Welcomes; another device's stay.
    welcomes.receive([{ ...w, id: "w3" }, { ...w, id: "w4", deviceId: "d2" }]);
    welcomes.dropDevice("d1");
    expect(welcomes.list("d1")).toEqual([]);
    expect(welcomes.list("d2").map((x) => x.id)).toEqual(["w4"]);
  });
});
