import { describe, expect, it } from "vitest";
import { D1Shards, d1Shards, groupByShard, idOnShardOf, shardIndex } from "../../../kernel/d1/shards";

describe("D1 shards", () => {
  it("hashes a key to the same shard every time: FNV-1a of its code units, modulo the count", () => {
    // Fixed values: a change of hash would move every row of a deployment.
    expect(shardIndex("", 1000)).toBe(0x811c9dc5 % 1000);
    expect(shardIndex("a", 1000)).toBe(0xe40c292c % 1000);
    expect(shardIndex("foobar", 1000)).toBe(0xbf9cf968 % 1000);
    expect(shardIndex("alice", 1)).toBe(0);
  });

  it("spreads ids over the shards", () => {
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[shardIndex(`user-${i}`, 4)]!++;
    for (const n of counts) expect(n).toBeGreaterThan(800);
  });

  it("draws ids that land on the shard of a given key", () => {
    for (const key of ["alice", "bob", "carol_99"]) {
      for (let i = 0; i < 20; i++) expect(shardIndex(idOnShardOf(key, 5), 5)).toBe(shardIndex(key, 5));
    }
    expect(new D1Shards(["zero", "one", "two"]).idBeside("alice")).toMatch(/^[0-9A-Z]{26}$/);
  });

  it("routes keys and groups them by shard", () => {
    const shards = new D1Shards(["zero", "one"]);
    const keys = ["a", "b", "c", "d", "e", "f"];
    for (const key of keys) expect(shards.of(key)).toBe(shards.all[shardIndex(key, 2)]);
    const groups = shards.group(keys);
    expect([...groups.values()].flat().sort()).toEqual(keys);
    for (const [shard, onShard] of groups) for (const key of onShard) expect(shards.of(key)).toBe(shard);
    expect(groupByShard(["x", "y", "x2"], (key) => key[0])).toEqual(new Map([["x", ["x", "x2"]], ["y", ["y"]]]));
  });

  it("queries each shard for its own keys, at most 90 a call, each key once", async () => {
    const shards = new D1Shards(["zero", "one"]);
    const keys = Array.from({ length: 300 }, (_, i) => `k${i}`);
    const calls: Array<{ shard: string; keys: string[] }> = [];
    const rows = await shards.query([...keys, ...keys], async (shard, onShard) => {
      calls.push({ shard, keys: onShard });
      return onShard;
    });
    expect(rows.sort()).toEqual([...keys].sort());
    for (const call of calls) {
      expect(call.keys.length).toBeLessThanOrEqual(90);
      for (const key of call.keys) expect(shards.of(key)).toBe(call.shard);
    }
  });

  it("reads D1_SHARDS bindings DB_0 ... DB_<n-1>, and refuses a missing one or a bad count", () => {
    const binding = () => ({ prepare() {}, batch() {} });
    const [zero, one] = [binding(), binding()];
    const two = { D1_SHARDS: "2", DB_0: zero, DB_1: one };
    expect(d1Shards(two).all).toEqual([zero, one]);
    expect(d1Shards(two).all[1]).toBe(one);
    const missing = { D1_SHARDS: "3", DB_0: zero, DB_1: one };
    expect(() => d1Shards(missing)).toThrow(/DB_2/);
    const bad = { D1_SHARDS: "two", DB_0: zero };
    expect(() => d1Shards(bad)).toThrow(/D1_SHARDS/);
  });
});
