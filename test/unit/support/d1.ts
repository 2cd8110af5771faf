// A `D1Database` over Node's built-in SQLite with the project's D1 migrations applied, for unit
// tests of the code that writes the directory (the conversation's outbox). It can be made to fail
// to simulate an outage: every call, or the next N calls, throws as a D1 network error would.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DatabaseSync } from "node:sqlite";
import { toSqlite } from "./sql";

const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), "../../../migrations");

/** The statements of the D1 migrations in the order they apply (drizzle's `--> statement-breakpoint` separates them). */
export function d1MigrationStatements(): string[] {
  return readdirSync(MIGRATIONS_DIR)
    .filter((name) => /^\d+_.*\.sql$/.test(name))
    .sort()
    .flatMap((name) => readFileSync(join(MIGRATIONS_DIR, name), "utf8").split("--> statement-breakpoint"))
    .map((statement) => statement.trim())
    .filter((statement) => statement.length > 0);
}

/** One statement as D1 received it. */
export interface Executed {
  sql: string;
  params: unknown[];
}

type Row = Record<string, unknown>;

/** The error a call throws while the database is made to fail. */
export class D1Outage extends Error {
  constructor() {
    super("D1_ERROR: Network connection lost.");
  }
}

class Statement {
  constructor(
    private readonly d1: MemoryD1,
    readonly sql: string,
    readonly params: unknown[] = [],
  ) {}

  bind(...values: unknown[]): Statement {
    for (const v of values) {
      // D1 refuses undefined rather than storing NULL.
      if (v === undefined) throw new TypeError("D1_TYPE_ERROR: Type 'undefined' not supported for value 'undefined'");
    }
    return new Statement(this.d1, this.sql, values);
  }

  async first<T = Row>(column?: string): Promise<T | null> {
    const { results } = this.d1.call(() => this.d1.execute(this));
    const row = results[0];
    if (!row) return null;
    return (column === undefined ? row : row[column]) as T;
  }

  async all<T = Row>(): Promise<D1Result<T>> {
    return this.d1.call(() => this.d1.execute(this)) as D1Result<T>;
  }

  async run<T = Row>(): Promise<D1Result<T>> {
    return this.d1.call(() => this.d1.execute(this)) as D1Result<T>;
  }

  async raw(): Promise<unknown[][]> {
    const { results } = this.d1.call(() => this.d1.execute(this));
    return results.map((r) => Object.values(r));
  }
}

export class MemoryD1 {
  readonly db = new DatabaseSync(":memory:");
  /** The batches that committed, each as its statements, in order. */
  readonly batches: Executed[][] = [];
  /** Calls that reached the database (first, all, run, raw, batch, exec), failed ones included. */
  calls = 0;
  private failAll = false;
  private failCount = 0;
  private passCount = 0;
  private loseCount = 0;
  /** Runs as each batch arrives, before it applies: for a test to act while a write is in flight. */
  beforeBatch: (() => void) | null = null;

  constructor() {
    for (const statement of d1MigrationStatements()) this.db.exec(statement);
  }

  /** Every call throws until `failing(false)`. */
  failing(on = true): void {
    this.failAll = on;
  }

  /** After `after` more calls that answer, the next `n` calls throw; those after answer. */
  failNext(n: number, after = 0): void {
    this.failCount = n;
    this.passCount = after;
  }

  /**
   * The next `n` calls run, then throw as if their answer was lost on the way back: D1 has
   * the writes, the caller believes they failed.
   */
  loseNext(n: number): void {
    this.loseCount = n;
  }

  /** Reads the database directly, for assertions: not a call, never fails. */
  query<T = Row>(sql: string, ...params: unknown[]): T[] {
    return this.db.prepare(sql).all(...params.map(toSqlite)) as T[];
  }

  prepare(sql: string): Statement {
    return new Statement(this, sql);
  }

  async batch<T = unknown>(statements: Statement[]): Promise<D1Result<T>[]> {
    this.beforeBatch?.();
    return this.call(() => {
      // A batch is one transaction: it all applies, or none of it.
      this.db.exec("BEGIN");
      try {
        const results = statements.map((s) => this.execute(s));
        this.db.exec("COMMIT");
        this.batches.push(statements.map((s) => ({ sql: s.sql, params: s.params })));
        return results as D1Result<T>[];
      } catch (err) {
        this.db.exec("ROLLBACK");
        throw err;
      }
    });
  }

  async exec(sql: string): Promise<D1ExecResult> {
    return this.call(() => {
      this.db.exec(sql);
      return { count: 1, duration: 0 };
    });
  }

  /** This fake as the type the code under test takes. */
  get binding(): D1Database {
    return this as unknown as D1Database;
  }

  /** Counts a call, and throws instead of running it while failing. */
  call<R>(run: () => R): R {
    this.calls++;
    if (this.failAll) throw new D1Outage();
    if (this.failCount > 0) {
      if (this.passCount > 0) this.passCount--;
      else {
        this.failCount--;
        throw new D1Outage();
      }
    }
    const answer = run();
    if (this.loseCount > 0) {
      this.loseCount--;
      throw new D1Outage();
    }
    return answer;
  }

  execute(statement: Statement): D1Result<Row> {
    const prepared = this.db.prepare(statement.sql);
    const params = statement.params.map(toSqlite);
    if (prepared.columns().length === 0) {
      const { changes, lastInsertRowid } = prepared.run(...params);
      return result([], Number(changes), Number(lastInsertRowid));
    }
    const rows = prepared.all(...params) as Row[];
    return result(rows, 0, 0);
  }
}

function result(results: Row[], changes: number, lastRowId: number): D1Result<Row> {
  return {
    success: true,
    results,
    meta: {
      duration: 0,
      size_after: 0,
      rows_read: results.length,
      rows_written: changes,
      last_row_id: lastRowId,
      changed_db: changes > 0,
      changes,
    },
  };
}

/** A fresh D1 with the migrations applied. */
export function memoryD1(): MemoryD1 {
  return new MemoryD1();
}
