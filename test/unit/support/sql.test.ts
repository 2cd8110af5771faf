import { describe, expect, it } from "vitest";
import { migrate } from "../../../durable-objects/lib/migrate";
import { memorySql } from "./sql";

describe("memorySql", () => {
  it("runs migrations once and answers like SqlStorage", () => {
    const sql = memorySql();
    migrate(sql, ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]);
    migrate(sql, ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]);
    expect(sql.exec("INSERT INTO t (v) VALUES (?), (?)", "a", "b").rowsWritten).toBe(2);
    expect(sql.exec<{ v: string }>("SELECT v FROM t ORDER BY id").toArray().map((r) => r.v)).toEqual(["a", "b"]);
    expect(sql.exec<{ n: number }>("SELECT count(*) AS n FROM t").one().n).toBe(2);
    expect(() => sql.exec("SELECT v FROM t").one()).toThrow();
    sql.close();
  });
});
