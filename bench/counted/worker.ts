// The app with every D1 query it makes written down: the bench's "counted" target (bench/run.ts,
// S9 and S10). It answers how many D1 queries a message sent or an authenticated request waits
// for, counted rather than read off the code, so that it gives the same answer before and after
// the code moves work out of D1.
//
// Every D1 binding of the environment (`DB`, and any shard bindings added beside it) is wrapped
// before the app sees it: in the Worker's fetch, queue and scheduled handlers, and in each Durable
// Object's constructor, which builds its connections from the environment it is given (the same
// place bench/alone injects its answers). The wrapper passes every call through unchanged and
// records, per query or batch, which part of the app made it, on which binding, its SQL, the rows
// D1 reported reading and writing (local D1 returns SQLite's counters in `meta`), and when it began
// and settled. The runtime's own metrics were the other choice; local D1 reports none per
// invocation, and they would not say which part of the app waited. Under `wrangler dev` the Worker
// and every object share one isolate, so one module-level list holds it all; GET /__bench/d1 hands
// over what has settled and forgets it, with when the app answered each request and conversation
// frame. Times are Date.now(), which the runtime advances at I/O, so a query's start is no earlier
// than the event that caused it.
//
// It also serves the auth comparison of S9: the app's own authentication (the signed token, its
// session checked in the user's object: `requireAuth`) alone, against the lookup it replaced (the
// SHA-256 of the token looked up in D1 by a unique key, as `devices.token_hash` was), and a request
// that authenticates nothing, all three behind the app's own `base` middleware. The lookup reads a
// table of the bench's own, `bench_sessions`, in the app's first D1 database, so that it does not
// depend on the app's schema: POST /__bench/auth/d1 (with a token the app accepts) enrols a token.
//
// Started by the bench as `npm run dev -- bench/counted/worker.ts` in place of the app's entry.
import app, { ConversationDO as AppConversationDO, ThrottleDO as AppThrottleDO, UserDO as AppUserDO } from "../../worker/index";
import { base, newApp, onError, requireAuth } from "../../worker/app";
import { ApiError } from "../../worker/lib/apiError";
import { sha256 } from "../../worker/lib/crypto";
import { bearerToken } from "../../worker/lib/sessionTokens";

/** Which part of the app made a query. */
type Origin = "worker" | "queue" | "scheduled" | "conversation" | "user" | "throttle" | "bench";

/** One query or batch, as GET /__bench/d1 hands it over. */
interface D1Entry {
  origin: Origin;
  binding: string;
  /** first, all, run, raw, batch or exec. */
  kind: string;
  /** Statements in it (a batch has many). */
  statements: number;
  /** Of them, the ones that write (INSERT, UPDATE, DELETE, REPLACE). */
  writes: number;
  /** What D1's meta reported; null where the call returns no meta (`raw`, `exec`). */
  rowsRead: number | null;
  rowsWritten: number | null;
  rowsReturned: number | null;
  startedAt: number;
  settledAt: number | null;
  failed: boolean;
  /** The first statement's SQL, whitespace folded, cut at 160 characters. */
  sql: string;
}

/**
 * When the app answered: each request the Worker handled (until its handler returned the
 * response) and each frame a conversation object took (until its handler was done: a send's ack
 * is sent by then). A query that settled inside an answer's span is one that answer may have
 * waited for; one that settled after it was not waited for.
 */
interface Answer {
  what: string;
  startedAt: number;
  settledAt: number | null;
}

/** Bounded, so that a long seeding left counting cannot grow without limit. */
const LOG_MAX = 500_000;
const log: D1Entry[] = [];
const answers: Answer[] = [];

function answering(what: string): Answer {
  const answer: Answer = { what, startedAt: Date.now(), settledAt: null };
  if (answers.length < LOG_MAX) answers.push(answer);
  return answer;
}

/** Hands over what has settled of `list` and keeps the rest, which is handed over once settled. */
function settled<T extends { settledAt: number | null }>(list: T[]): { done: T[]; pending: number } {
  const pending = list.filter((e) => e.settledAt === null);
  const done = list.filter((e) => e.settledAt !== null);
  list.splice(0, list.length, ...pending);
  return { done, pending: pending.length };
}

const WRITE = /^\s*(?:--[^\n]*\n\s*)*(insert|update|delete|replace)\b/i;
const isWrite = (sql: string) => WRITE.test(sql);
const head = (sql: string) => sql.replace(/\s+/g, " ").trim().slice(0, 160);

function begin(origin: Origin, binding: string, kind: string, sqls: string[]): D1Entry {
  const entry: D1Entry = {
    origin,
    binding,
    kind,
    statements: sqls.length,
    writes: sqls.filter(isWrite).length,
    rowsRead: null,
    rowsWritten: null,
    rowsReturned: null,
    startedAt: Date.now(),
    settledAt: null,
    failed: false,
    sql: head(sqls[0] ?? ""),
  };
  if (log.length < LOG_MAX) log.push(entry);
  return entry;
}

/** Runs `call`, then stamps the entry with when it settled and what `meta` said. */
async function timed<T>(entry: D1Entry, call: () => Promise<T>, metaOf: (value: T) => D1Meta[] = () => []): Promise<T> {
  try {
    const value = await call();
    const metas = metaOf(value);
    if (metas.length > 0) {
      entry.rowsRead = metas.reduce((a, m) => a + (m.rows_read ?? 0), 0);
      entry.rowsWritten = metas.reduce((a, m) => a + (m.rows_written ?? 0), 0);
    }
    return value;
  } catch (err) {
    entry.failed = true;
    throw err;
  } finally {
    entry.settledAt = Date.now();
  }
}

/** A statement that records each run; `bind` gives another, as D1's does. */
class CountedStatement implements D1PreparedStatement {
  constructor(
    readonly real: D1PreparedStatement,
    readonly sql: string,
    private readonly origin: Origin,
    private readonly binding: string,
  ) {}

  bind(...values: unknown[]): D1PreparedStatement {
    return new CountedStatement(this.real.bind(...values), this.sql, this.origin, this.binding);
  }

  // `first` runs the whole statement and keeps its first row (as D1's own does), through `all`,
  // whose answer carries the meta that `first` drops.
  first<T = unknown>(colName: string): Promise<T | null>;
  first<T = Record<string, unknown>>(): Promise<T | null>;
  async first<T>(colName?: string): Promise<T | null> {
    const entry = begin(this.origin, this.binding, "first", [this.sql]);
    if (colName === undefined) {
      const result = await timed(entry, () => this.real.all<T>(), (r) => [r.meta]);
      entry.rowsReturned = result.results.length;
      return result.results[0] ?? null;
    }
    const result = await timed(entry, () => this.real.all<Record<string, T>>(), (r) => [r.meta]);
    entry.rowsReturned = result.results.length;
    const row = result.results[0];
    if (row === undefined) return null;
    if (!(colName in row)) throw new Error(`D1_COLUMN_NOTFOUND: Column not found (${colName})`);
    return row[colName] ?? null;
  }

  async run<T = Record<string, unknown>>(): Promise<D1Result<T>> {
    const entry = begin(this.origin, this.binding, "run", [this.sql]);
    const result = await timed(entry, () => this.real.run<T>(), (r) => [r.meta]);
    entry.rowsReturned = result.results?.length ?? 0;
    return result;
  }

  async all<T = Record<string, unknown>>(): Promise<D1Result<T>> {
    const entry = begin(this.origin, this.binding, "all", [this.sql]);
    const result = await timed(entry, () => this.real.all<T>(), (r) => [r.meta]);
    entry.rowsReturned = result.results.length;
    return result;
  }

  // `raw` answers rows as arrays (what drizzle reads a select with) and no meta: its entry counts
  // the rows it returned, and its rows read stay unknown.
  raw<T = unknown[]>(options: { columnNames: true }): Promise<[string[], ...T[]]>;
  raw<T = unknown[]>(options?: { columnNames?: false }): Promise<T[]>;
  async raw<T = unknown[]>(options?: { columnNames?: boolean }): Promise<T[] | [string[], ...T[]]> {
    const entry = begin(this.origin, this.binding, "raw", [this.sql]);
    if (options?.columnNames === true) {
      const rows = await timed(entry, () => this.real.raw<T>({ columnNames: true }));
      entry.rowsReturned = rows.length - 1;
      return rows;
    }
    const rows = await timed(entry, () => this.real.raw<T>());
    entry.rowsReturned = rows.length;
    return rows;
  }
}

/** The statement D1 itself made, for a batch: ours unwrapped, any other as it is. */
const realOf = (s: D1PreparedStatement): D1PreparedStatement => (s instanceof CountedStatement ? s.real : s);
const sqlOf = (s: D1PreparedStatement): string => (s instanceof CountedStatement ? s.sql : "?");

/** A batch through `real` (a database or a session), recorded as one entry of all its statements. */
async function countedBatch<T>(real: Pick<D1Database, "batch">, statements: D1PreparedStatement[], origin: Origin, binding: string): Promise<D1Result<T>[]> {
  const entry = begin(origin, binding, "batch", statements.map(sqlOf));
  const results = await timed(entry, () => real.batch<T>(statements.map(realOf)), (rs) => rs.map((r) => r.meta));
  entry.rowsReturned = results.reduce((a, r) => a + (r.results?.length ?? 0), 0);
  return results;
}

/** What a database and a session (read replicas) share: statements and batches, recorded alike. */
class CountedQueries<Real extends Pick<D1Database, "prepare" | "batch">> {
  constructor(
    protected readonly real: Real,
    protected readonly origin: Origin,
    protected readonly binding: string,
  ) {}

  prepare(query: string): D1PreparedStatement {
    return new CountedStatement(this.real.prepare(query), query, this.origin, this.binding);
  }

  batch<T = unknown>(statements: D1PreparedStatement[]): Promise<D1Result<T>[]> {
    return countedBatch(this.real, statements, this.origin, this.binding);
  }
}

class CountedD1 extends CountedQueries<D1Database> implements D1Database {
  exec(query: string): Promise<D1ExecResult> {
    return timed(begin(this.origin, this.binding, "exec", [query]), () => this.real.exec(query));
  }

  withSession(constraintOrBookmark?: D1SessionBookmark | D1SessionConstraint): D1DatabaseSession {
    return new CountedSession(this.real.withSession(constraintOrBookmark), this.origin, this.binding);
  }

  dump(): Promise<ArrayBuffer> {
    return this.real.dump();
  }
}

class CountedSession extends CountedQueries<D1DatabaseSession> implements D1DatabaseSession {
  getBookmark(): D1SessionBookmark | null {
    return this.real.getBookmark();
  }
}

/** D1's meta, as far as the counts read it. */
interface D1Meta {
  rows_read?: number;
  rows_written?: number;
}

const isD1 = (value: unknown): value is D1Database =>
  typeof value === "object" && value !== null && "prepare" in value && "batch" in value && "exec" in value && typeof value.prepare === "function";

/** One wrapper per binding and origin, so drizzle's per-binding instance (kernel/d1/db.ts) is made once. */
const wrappers = new WeakMap<object, Map<Origin, CountedD1>>();

/** `env` with each D1 binding recording the queries made through it as `origin`. */
function counted(env: Env, origin: Origin): Env {
  const props: PropertyDescriptorMap = {};
  for (const [name, value] of Object.entries(env)) {
    if (!isD1(value)) continue;
    const byOrigin = wrappers.get(value) ?? new Map<Origin, CountedD1>();
    wrappers.set(value, byOrigin);
    const wrapped = byOrigin.get(origin) ?? new CountedD1(value, origin, name);
    byOrigin.set(origin, wrapped);
    props[name] = { value: wrapped, enumerable: true };
  }
  // Every other binding reached through the prototype, unchanged.
  const out: Env = Object.create(env, props);
  return out;
}

export class ConversationDO extends AppConversationDO {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, counted(env, "conversation"));
  }

  // A frame answered in the same step stays so (no promise added to the runtime's event).
  override webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): void | Promise<void> {
    const answer = answering("frame");
    const done = super.webSocketMessage(ws, data);
    if (done instanceof Promise) {
      return done.finally(() => {
        answer.settledAt = Date.now();
      });
    }
    answer.settledAt = Date.now();
    return done;
  }
}

export class UserDO extends AppUserDO {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, counted(env, "user"));
  }
}

export class ThrottleDO extends AppThrottleDO {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, counted(env, "throttle"));
  }
}

// The auth comparison: the same request three ways, each behind the app's `base` middleware (its
// settings and request id), answering 204.
const bench = newApp();
bench.use(base);
bench.get("/__bench/auth/none", (c) => c.body(null, 204));
bench.get("/__bench/auth/signed", requireAuth, (c) => c.body(null, 204));
/** The D1 database the token lookup reads: `DB_0`, or the first D1 binding when there is none of that name. */
function tokenDb(env: Env): D1Database {
  const dbs = Object.entries(counted(env, "bench")).filter((entry): entry is [string, D1Database] => isD1(entry[1]));
  const db = (dbs.find(([name]) => name === "DB_0") ?? dbs[0])?.[1];
  if (!db) throw new Error("no D1 binding");
  return db;
}

let tokenTable: Promise<unknown> | null = null;
const tokenTableReady = (db: D1Database) =>
  (tokenTable ??= db
    .prepare("CREATE TABLE IF NOT EXISTS bench_sessions (token_hash TEXT PRIMARY KEY, device_id TEXT NOT NULL, user_id TEXT NOT NULL, created_at INTEGER NOT NULL)")
    .run());

bench.post("/__bench/auth/d1", requireAuth, async (c) => {
  const token = bearerToken(c.req.header("authorization"));
  if (!token) throw new ApiError("unauthorized", "missing or malformed bearer token");
  const db = tokenDb(c.env);
  await tokenTableReady(db);
  const { userId, deviceId } = c.get("auth");
  await db
    .prepare("INSERT OR REPLACE INTO bench_sessions (token_hash, device_id, user_id, created_at) VALUES (?, ?, ?, ?)")
    .bind(await sha256(token), deviceId, userId, Date.now())
    .run();
  return c.body(null, 204);
});
bench.get("/__bench/auth/d1", async (c) => {
  // How a request was authenticated before tokens were signed: one D1 read of the token's hash
  // by its unique key, and the token's age against TOKEN_TTL_DAYS.
  const token = bearerToken(c.req.header("authorization"));
  if (!token) throw new ApiError("unauthorized", "missing or malformed bearer token");
  const row = await tokenDb(c.env)
    .prepare("SELECT device_id, user_id, created_at FROM bench_sessions WHERE token_hash = ?")
    .bind(await sha256(token))
    .first<{ device_id: string; user_id: string; created_at: number }>();
  if (!row || row.created_at + c.get("settings").tokenTtlMs < Date.now()) throw new ApiError("unauthorized", "unknown, expired or revoked token");
  return c.body(null, 204);
});
// A query or an answer still running stays in its list until it settles, so it is handed over whole.
bench.get("/__bench/d1", (c) => {
  const queries = settled(log);
  const spans = settled(answers);
  return c.json({ now: Date.now(), entries: queries.done, answers: spans.done, pending: queries.pending + spans.pending });
});
bench.onError(onError);

export default {
  async fetch(request, env, ctx) {
    const { pathname } = new URL(request.url);
    if (pathname === "/__bench/d1") return bench.fetch(request, env, ctx);
    const answer = answering(`${request.method} ${pathname}`);
    try {
      if (pathname.startsWith("/__bench/")) return await bench.fetch(request, env, ctx);
      return await app.fetch(request, counted(env, "worker"), ctx);
    } finally {
      answer.settledAt = Date.now();
    }
  },
  queue(batch, env) {
    return app.queue(batch, counted(env, "queue"));
  },
  scheduled(controller, env) {
    return app.scheduled(controller, counted(env, "scheduled"));
  },
} satisfies ExportedHandler<Env>;
