// A Durable Object's `SqlStorage` over Node's built-in SQLite, for unit tests of the modules that
// take `ctx.storage.sql`: the same SQL dialect and the cursor methods those modules use.
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";

type Row = Record<string, SqlStorageValue>;

class Cursor<T extends Row> {
  private index = 0;
  constructor(
    private readonly rows: T[],
    readonly rowsWritten: number,
  ) {}
  toArray(): T[] {
    const rest = this.rows.slice(this.index);
    this.index = this.rows.length;
    return rest;
  }
  one(): T {
    if (this.rows.length !== 1) throw new Error(`Expected exactly one result from SQL query, got ${this.rows.length}`);
    return this.rows[0]!;
  }
  next(): IteratorResult<T> {
    return this.index < this.rows.length ? { done: false, value: this.rows[this.index++]! } : { done: true, value: undefined };
  }
  [Symbol.iterator]() {
    return this;
  }
}

/** An in-memory database shaped like `ctx.storage.sql`; `close()` when done. */
export function memorySql(): SqlStorage & { close(): void } {
  const db = new DatabaseSync(":memory:");
  // Prepared once per text, as SqlStorage caches them: preparing took most of a query's time.
  const prepared = new Map<string, { statement: StatementSync; returnsRows: boolean }>();
  const exec = <T extends Row>(query: string, ...bindings: unknown[]) => {
    let entry = prepared.get(query);
    if (!entry) {
      const statement = db.prepare(query);
      prepared.set(query, (entry = { statement, returnsRows: statement.columns().length > 0 }));
    }
    const { statement } = entry;
    const params = bindings.map(toSqlite);
    if (!entry.returnsRows) {
      const { changes } = statement.run(...params);
      return new Cursor<T>([], Number(changes));
    }
    const rows = statement.all(...params) as T[];
    // RETURNING statements write as they return.
    return new Cursor<T>(rows, /^\s*(insert|update|delete|replace)/i.test(query) ? rows.length : 0);
  };
  return {
    exec,
    get databaseSize() {
      return 0;
    },
    close: () => db.close(),
  } as unknown as SqlStorage & { close(): void };
}

/** A binding as Node's SQLite takes it: booleans as 0/1, undefined as NULL, buffers as bytes. */
export function toSqlite(value: unknown): SQLInputValue {
  if (value === undefined) return null;
  if (typeof value === "boolean") return value ? 1 : 0;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return value as SQLInputValue;
}
