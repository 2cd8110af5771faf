// The objects' shared pieces: the token buckets behind the send rate limit, and the append-only
// migrations of an object's SQLite.
import { describe, expect, it } from "vitest";
import { migrate } from "../../../durable-objects/lib/migrate";
import { TokenBuckets } from "../../../durable-objects/lib/rateLimit";
import { memorySql } from "../support/sql";

const T = 1_000_000;

/** How many takes succeed at `now` before the first refusal. */
function drain(buckets: TokenBuckets, key: string, now: number): number {
  let taken = 0;
  while (buckets.take(key, now) === 0) taken++;
  return taken;
}

describe("TokenBuckets", () => {
  it.each([
    [20, 40],
    [1, 2],
    [5, 1],
  ])("at %i/s with burst %i: allows the burst at once, then one token per 1/rate s", (perSecond, burst) => {
    const buckets = new TokenBuckets(perSecond, burst);
    expect(drain(buckets, "u", T)).toBe(burst);
    expect(buckets.available("u", T)).toBe(false);
    expect(buckets.take("u", T)).toBeCloseTo(1 / perSecond);
    const step = 1000 / perSecond;
    expect(buckets.available("u", T + step - 1)).toBe(false);
    expect(buckets.available("u", T + step)).toBe(true);
    expect(drain(buckets, "u", T + step)).toBe(1);
  });

  it("says how long until the next token, from what has refilled", () => {
    const buckets = new TokenBuckets(2, 2);
    drain(buckets, "u", T);
    expect(buckets.take("u", T + 250)).toBeCloseTo(0.25);
    expect(buckets.take("u", T + 400)).toBeCloseTo(0.1);
  });

  it("refills no further than the burst", () => {
    const buckets = new TokenBuckets(20, 40);
    drain(buckets, "u", T);
    expect(drain(buckets, "u", T + 3_600_000)).toBe(40);
  });

  it("keeps a bucket per key, and `available` takes nothing", () => {
    const buckets = new TokenBuckets(1, 2);
    for (let i = 0; i < 5; i++) expect(buckets.available("a", T)).toBe(true);
    drain(buckets, "a", T);
    expect(buckets.available("a", T)).toBe(false);
    expect(drain(buckets, "b", T)).toBe(2);
  });

  it("stays correct past the size where it prunes idle buckets", () => {
    const buckets = new TokenBuckets(1, 1);
    for (let i = 0; i < 10_005; i++) buckets.take(`k${i}`, T);
    // A refusal prunes the idle buckets; the busy one is kept, empty, and an idle key starts full.
    expect(buckets.take("busy", T + 5000)).toBe(0);
    expect(buckets.take("busy", T + 5000)).toBeGreaterThan(0);
    expect(buckets.take("busy", T + 5000)).toBeGreaterThan(0);
    expect(buckets.take("k0", T + 5000)).toBe(0);
  });
});

describe("migrate", () => {
  const STEPS = ["CREATE TABLE a (id INTEGER PRIMARY KEY)", "ALTER TABLE a ADD COLUMN v TEXT", "CREATE TABLE b (id INTEGER)"];
  const version = (sql: SqlStorage) => sql.exec<{ version: number }>("SELECT version FROM _schema").one().version;
  const tables = (sql: SqlStorage) =>
    sql.exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name != '_schema' ORDER BY name").toArray().map((r) => r.name);

  it("runs every step on a new database, and nothing on the next wake-up", () => {
    const sql = memorySql();
    migrate(sql, STEPS);
    expect([version(sql), tables(sql)]).toEqual([3, ["a", "b"]]);
    // Re-running a step would fail (the table exists), so this passing means none ran.
    migrate(sql, STEPS);
    expect(version(sql)).toBe(3);
  });

  it("runs only the steps appended since an object's last wake-up, in order", () => {
    const sql = memorySql();
    migrate(sql, STEPS.slice(0, 1));
    sql.exec("INSERT INTO a (id) VALUES (1)");
    migrate(sql, STEPS);
    expect(version(sql)).toBe(3);
    expect(sql.exec("SELECT id, v FROM a").toArray()).toEqual([{ id: 1, v: null }]);
  });

  it("stops at a failing step, keeps the steps before it, and resumes there", () => {
    const sql = memorySql();
    const broken = [STEPS[0]!, "ALTER TABLE missing ADD COLUMN v TEXT", STEPS[2]!];
    expect(() => migrate(sql, broken)).toThrow();
    expect([version(sql), tables(sql)]).toEqual([1, ["a"]]);
    migrate(sql, STEPS);
    expect([version(sql), tables(sql)]).toEqual([3, ["a", "b"]]);
  });
});
