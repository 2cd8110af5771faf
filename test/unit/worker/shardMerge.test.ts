import { describe, expect, it } from "vitest";
import { decodePositions, encodePositions, mergeNewestFirst, type ShardHit } from "../../../worker/lib/shardMerge";

/** A shard's hits as [position, at] pairs, newest first; the item names shard and position. */
const hits = (shard: number, pairs: [number, number][]): ShardHit<string>[] => pairs.map(([position, at]) => ({ position, at, item: `${shard}:${position}` }));

describe("paging newest first across shards", () => {
  it("merges by time and keeps each shard's position", () => {
    const page = mergeNewestFirst([hits(0, [[9, 100], [7, 80], [5, 20]]), hits(1, [[4, 90], [3, 10]])], [10, 10], 3);
    expect(page.items).toEqual(["0:9", "1:4", "0:7"]);
    expect(page.positions).toEqual([7, 4]);
    expect(page.hasMore).toBe(true);
  });

  it("hands out every hit exactly once over pages, even when a shard's times are out of order", () => {
    // Shard 0's clock runs behind: its order (positions) disagrees with times across shards.
    const all = [
      hits(0, [[60, 5], [50, 95], [40, 3], [30, 70], [20, 2], [10, 1]]),
      hits(1, [[6, 100], [5, 90], [4, 80], [3, 4], [2, 3], [1, 0]]),
    ];
    const seen: string[] = [];
    let from = [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER];
    for (let pages = 0; pages < 20; pages++) {
      // Each shard answers limit + 1 hits before its position, as the query does.
      const perShard = all.map((list, i) => list.filter((h) => h.position < from[i]!).slice(0, 3));
      const page = mergeNewestFirst(perShard, from, 2);
      seen.push(...page.items);
      const cursor = encodePositions(page.positions);
      from = decodePositions(cursor, 2)!;
      if (!page.hasMore) break;
    }
    expect(seen.sort()).toEqual(all.flat().map((h) => h.item).sort());
    expect(new Set(seen).size).toBe(12);
  });

  it("says there is no more only when every shard is spent", () => {
    const page = mergeNewestFirst([hits(0, [[2, 5]]), hits(1, [])], [9, 9], 5);
    expect(page).toEqual({ items: ["0:2"], positions: [2, 9], hasMore: false });
  });

  it("reads a cursor for this many shards only", () => {
    expect(decodePositions("12.7", 2)).toEqual([12, 7]);
    expect(decodePositions("12", 2)).toBeNull();
    expect(decodePositions("1.2.3", 2)).toBeNull();
    expect(decodePositions("12", 1)).toEqual([12]);
  });
});
