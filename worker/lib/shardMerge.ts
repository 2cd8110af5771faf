// Paging newest first across D1 shards: each shard is read in its own order from its own position,
// and the pages are merged by time. A cursor holds one position per shard, so every hit is handed
// out once, whatever the clocks of the shards' rows say.

/** A shard's hit: where it stands in that shard's order (descending) and when it was made. */
export interface ShardHit<T> {
  position: number;
  at: number;
  item: T;
}

export interface MergedPage<T> {
  items: T[];
  /** Per shard: the position of the last hit taken from it, or the one it was read from. */
  positions: number[];
  hasMore: boolean;
}

/**
 * Merges the shards' hits (each list newest first in its shard's order, read from `from[i]`, at
 * most `limit + 1` of them) into a page of at most `limit`, newest first by `at` (ties: the lower
 * shard first).
 */
export function mergeNewestFirst<T>(perShard: readonly ShardHit<T>[][], from: readonly number[], limit: number): MergedPage<T> {
  const taken = perShard.map(() => 0);
  const positions = [...from];
  const items: T[] = [];
  while (items.length < limit) {
    let best = -1;
    for (let i = 0; i < perShard.length; i++) {
      const head = perShard[i]![taken[i]!];
      if (head && (best < 0 || head.at > perShard[best]![taken[best]!]!.at)) best = i;
    }
    if (best < 0) break;
    const hit = perShard[best]![taken[best]!++]!;
    positions[best] = hit.position;
    items.push(hit.item);
  }
  return { items, positions, hasMore: perShard.some((hits, i) => taken[i]! < hits.length) };
}

/** A cursor of `positions` (one per shard). */
export function encodePositions(positions: readonly number[]): string {
  return positions.join(".");
}

/** The positions a cursor names for `count` shards, or null when it names another number of shards. */
export function decodePositions(cursor: string, count: number): number[] | null {
  const parts = cursor.split(".").map(Number);
  return parts.length === count && parts.every(Number.isSafeInteger) ? parts : null;
}
