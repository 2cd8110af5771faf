// The inbox index that GET /messages?since= pages through: exactly once across conversations while
// entries keep arriving, a cursor that stops inside an entry, out-of-order fan-out, the seqs a
// quiet member's conversation skipped (found on demand), epoch-ms pages, and a conversation that
// cannot be reached failing the page instead of skipping it.
import { afterEach, describe, expect, it } from "vitest";
import { migrate } from "../../../durable-objects/lib/migrate";
import { CLOCK_SKEW_MS, INDEX_MIGRATIONS, INDEX_MIGRATIONS_TRACK, InboxIndex } from "../../../durable-objects/user/inboxIndex";
import { QUIET_HINT_MS, type SeqRange, type SyncCursor, type SyncSlice } from "../../../durable-objects/contract";
import { userSql } from "../support/user";

const T = 1_800_000_000_000;
const closers: Array<() => void> = [];
afterEach(() => closers.splice(0).forEach((close) => close()));

/**
 * A conversation as its object answers sync: seq contiguous from 1, a span of what the user may
 * read, and SyncSlice's rules (at most `limit` messages, or `cap` when smaller, and `through` the
 * highest seq looked at).
 */
class FakeConversation {
  createdAt: number[] = [];
  span = { from: 1, through: Number.MAX_SAFE_INTEGER };
  cap = Number.MAX_SAFE_INTEGER;
  down = false;
  slices = 0;
  heads = 0;
  /** The ranges of each syncSlice call, and how many messages it answered. */
  asked: Array<{ ranges: SeqRange[]; answered: number }> = [];
  constructor(readonly id: string) {}
  add(n: number, at = T): number {
    for (let i = 0; i < n; i++) this.createdAt.push(at);
    return this.createdAt.length;
  }
  get last(): number {
    return this.createdAt.length;
  }
  async syncHead(): Promise<number> {
    this.heads++;
    if (this.down) throw new Error("unreachable");
    return Math.min(this.span.through, this.last);
  }
  async syncSlice(_userId: string, ranges: SeqRange[], minTime: number, limit: number): Promise<SyncSlice> {
    this.slices++;
    if (this.down) throw new Error("unreachable");
    const max = Math.min(limit, this.cap);
    const messages: SyncSlice["messages"] = [];
    const call = { ranges: ranges.map((r) => ({ ...r })), answered: 0 };
    this.asked.push(call);
    for (const r of ranges) {
      for (let seq = Math.max(r.from, this.span.from - 1) + 1; seq <= Math.min(r.through, this.span.through, this.last); seq++) {
        if (this.createdAt[seq - 1]! < minTime) continue;
        messages.push({ seq, json: JSON.stringify({ c: this.id, seq }) });
        call.answered++;
        if (messages.length >= max) return { messages, through: seq };
      }
    }
    return { messages, through: Math.max(0, ...ranges.map((r) => r.through)) };
  }
}

function setup(...ids: string[]) {
  const sql = userSql();
  closers.push(() => sql.close());
  migrate(sql, INDEX_MIGRATIONS, INDEX_MIGRATIONS_TRACK);
  const conversations = new Map(ids.map((id) => [id, new FakeConversation(id)]));
  const index = new InboxIndex(sql);
  let now = T;
  const clock = { now: () => now, advance: (ms: number) => (now += ms) };
  const peers = (id: string) => conversations.get(id)!;
  /** Sends n messages in conversation `id` and records them as its fan-out call would. */
  const deliver = (id: string, n: number) => index.record(id, conversations.get(id)!.add(n, now), now);
  const page = async (cursor: SyncCursor, limit: number) => {
    const result = await index.page("u", cursor, limit, peers, clock.now);
    if (!result.ok) throw new Error(`${result.code}: ${result.message}`);
    const messages = result.messages === "" ? [] : (JSON.parse(`[${result.messages}]`) as Array<{ c: string; seq: number }>);
    const next: SyncCursor = { ...result.cursor, resume: true };
    return { messages: messages.map((m) => `${m.c}:${m.seq}`), cursor: next, hasMore: result.hasMore };
  };
  const pageAll = async (cursor: SyncCursor, limit: number) => {
    const seen: string[] = [];
    for (let more = true; more; ) {
      const p = await page(cursor, limit);
      seen.push(...p.messages);
      cursor = p.cursor;
      more = p.hasMore;
    }
    return { seen, cursor };
  };
  return { sql, index, conversations, clock, deliver, page, pageAll };
}

const START: SyncCursor = { ingestId: 0, seq: 0, minTime: 0, resume: false };
const all = (id: string, from: number, through: number) => Array.from({ length: through - from + 1 }, (_, i) => `${id}:${from + i}`);

describe("inbox index", () => {
  it("pages every message of every conversation exactly once while others keep arriving", async () => {
    const { deliver, page } = setup("a", "b", "c");
    let seed = 7;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const expected = new Map<string, number>([["a", 0], ["b", 0], ["c", 0]]);
    const send = () => {
      const id = ["a", "b", "c"][random(3)]!;
      const n = 1 + random(4);
      deliver(id, n);
      expected.set(id, expected.get(id)! + n);
    };
    for (let i = 0; i < 40; i++) send();
    const seen: string[] = [];
    let cursor = START;
    for (let more = true, round = 0; more || round < 30; round++) {
      // Sends land between pages, and the cursor still finds them.
      if (round < 30) for (let i = random(3); i > 0; i--) send();
      const p = await page(cursor, 1 + random(9));
      seen.push(...p.messages);
      cursor = p.cursor;
      more = p.hasMore;
    }
    expect(new Set(seen).size).toBe(seen.length);
    expect(new Set(seen)).toEqual(new Set([...expected].flatMap(([id, n]) => all(id, 1, n))));
    // Each conversation's messages in seq order.
    for (const id of expected.keys()) {
      const seqs = seen.filter((s) => s.startsWith(`${id}:`)).map((s) => Number(s.split(":")[1]));
      expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    }
  });

  it("extends the newest entry while one conversation talks alone, and a cursor at its end sees it grow", async () => {
    const { sql, deliver, page } = setup("a", "b");
    deliver("a", 2);
    deliver("a", 3);
    expect(sql.exec("SELECT * FROM inbox_index").toArray()).toEqual([{ ingest_id: 1, conversation_id: "a", from_seq: 0, through_seq: 5, at: T }]);
    const first = await page(START, 10);
    expect(first).toMatchObject({ messages: all("a", 1, 5), hasMore: false });
    deliver("a", 1);
    deliver("b", 1);
    deliver("a", 1);
    expect(sql.exec<{ n: number }>("SELECT count(*) AS n FROM inbox_index").one().n).toBe(3);
    expect((await page(first.cursor, 10)).messages).toEqual(["a:6", "b:1", "a:7"]);
  });

  it("indexes queued fan-out arriving out of order once, from where the index stood", async () => {
    const { index, conversations, pageAll } = setup("a");
    const a = conversations.get("a")!;
    a.add(60);
    index.record("a", 60, T);
    index.record("a", 49, T);
    index.record("a", 60, T);
    expect((await pageAll(START, 25)).seen).toEqual(all("a", 1, 60));
  });

  it("stops inside an entry where the page fills or a conversation stops, and resumes there", async () => {
    const { conversations, deliver, page, pageAll } = setup("a", "b");
    deliver("a", 10);
    deliver("b", 3);
    const p1 = await page(START, 4);
    expect(p1).toMatchObject({ messages: all("a", 1, 4), hasMore: true });
    expect(p1.cursor).toEqual({ ingestId: 1, seq: 4, minTime: 0, resume: true });
    // A conversation that answers fewer than asked (its size or scan bound) ends the page there.
    conversations.get("a")!.cap = 2;
    const p2 = await page(p1.cursor, 50);
    expect(p2).toMatchObject({ messages: ["a:5", "a:6"], hasMore: true });
    conversations.get("a")!.cap = Number.MAX_SAFE_INTEGER;
    expect((await pageAll(p2.cursor, 50)).seen).toEqual([...all("a", 7, 10), ...all("b", 1, 3)]);
  });

  it("asks each conversation only for the seqs the page can hold, one range per run of its entries", async () => {
    const { conversations, deliver, page, pageAll } = setup("a", "b", "c");
    for (let i = 0; i < 3; i++) for (const id of ["a", "b", "c"]) deliver(id, 10);
    const p1 = await page(START, 25);
    expect(p1).toMatchObject({ messages: [...all("a", 1, 10), ...all("b", 1, 10), ...all("c", 1, 5)], hasMore: true });
    const [a, b, c] = ["a", "b", "c"].map((id) => conversations.get(id)!);
    expect(a!.asked).toEqual([{ ranges: [{ from: 0, through: 10 }], answered: 10 }]);
    expect(c!.asked).toEqual([{ ranges: [{ from: 0, through: 5 }], answered: 5 }]);
    // A conversation's entries on one page touch (each starts where the index stood): one range.
    deliver("a", 10);
    const rest = await pageAll(p1.cursor, 1000);
    expect(rest.seen).toEqual([...all("c", 6, 10), ...[20, 30].flatMap((n) => ["a", "b", "c"].flatMap((id) => all(id, n - 9, n))), ...all("a", 31, 40)]);
    expect(a!.asked.at(-1)!.ranges).toEqual([{ from: 10, through: 40 }]);
    // Every message answered was one the pages kept.
    const answered = [a!, b!, c!].reduce((n, x) => n + x.asked.reduce((m, call) => m + call.answered, 0), 0);
    expect(answered).toBe(p1.messages.length + rest.seen.length);
  });

  it("keeps paging past seqs the user may not read until the page is full", async () => {
    const { conversations, deliver, page } = setup("a", "b");
    conversations.get("a")!.span = { from: 1, through: 2 };
    deliver("a", 6);
    deliver("b", 6);
    // The budget of 4 seqs holds only 2 readable messages: later rounds fill the page.
    expect(await page(START, 4)).toMatchObject({ messages: ["a:1", "a:2", "b:1", "b:2"], hasMore: true });
  });

  it("says there is no more when the page ends exactly at the last message", async () => {
    const { deliver, page } = setup("a", "b");
    deliver("a", 2);
    deliver("b", 2);
    const p = await page(START, 4);
    expect(p).toMatchObject({ messages: ["a:1", "a:2", "b:1", "b:2"], hasMore: false });
    expect(await page(p.cursor, 4)).toMatchObject({ messages: [], hasMore: false, cursor: p.cursor });
  });

  it("passes over entries the user may not read (outside their span) without a gap or a repeat", async () => {
    const { conversations, deliver, pageAll } = setup("a", "b");
    conversations.get("a")!.span = { from: 6, through: 8 };
    deliver("a", 5);
    deliver("b", 1);
    deliver("a", 5);
    deliver("b", 1);
    expect((await pageAll(START, 2)).seen).toEqual(["b:1", "a:6", "a:7", "a:8", "b:2"]);
  });

  it("finds on demand what a watched conversation skipped telling this user, and stops watching once the answer lapsed", async () => {
    const { index, conversations, clock, deliver, page } = setup("a", "b");
    const a = conversations.get("a")!;
    deliver("a", 3);
    index.watch("a", clock.now());
    // The user's devices watched "a" live: the conversation skipped calling for 4 and 5.
    a.add(2);
    const p1 = await page(START, 10);
    expect(p1.messages).toEqual(all("a", 1, 5));
    expect(index.watched()).toEqual(["a"]);
    // A later call starts above what the page already indexed: nothing twice.
    deliver("a", 1);
    a.add(1);
    clock.advance(3 * QUIET_HINT_MS + 1);
    const p2 = await page(p1.cursor, 10);
    expect(p2.messages).toEqual(["a:6", "a:7"]);
    expect(index.watched()).toEqual([]);
    // A renewed answer is watched again.
    index.watch("a", clock.now());
    expect(index.watched()).toEqual(["a"]);
  });

  it("asks the watched conversations only on the page that reaches the end of the index, and fails that page while one cannot be asked", async () => {
    const { index, conversations, deliver, page } = setup("a", "b");
    const b = conversations.get("b")!;
    deliver("a", 7);
    index.watch("b", T);
    b.add(2);
    const p1 = await page(START, 3);
    const p2 = await page(p1.cursor, 3);
    expect([...p1.messages, ...p2.messages]).toEqual(all("a", 1, 6));
    expect(b.heads).toBe(0);
    b.down = true;
    await expect(index.page("u", p2.cursor, 3, (id) => conversations.get(id)!, () => T)).resolves.toMatchObject({ ok: false, code: "unavailable" });
    b.down = false;
    // The last page: a's last message, then what b skipped, in the same page.
    const p3 = await page(p2.cursor, 3);
    expect(p3).toMatchObject({ messages: ["a:7", "b:1", "b:2"], hasMore: false });
    expect(b.heads).toBe(2);
  });

  it("fails the page, moving nothing, while a conversation on it or watched cannot be reached", async () => {
    const { index, conversations, deliver, page } = setup("a", "b");
    deliver("a", 2);
    deliver("b", 2);
    const b = conversations.get("b")!;
    b.down = true;
    await expect(index.page("u", START, 10, (id) => conversations.get(id)!, () => T)).resolves.toMatchObject({ ok: false, code: "unavailable" });
    index.watch("b", T);
    await expect(index.page("u", START, 10, (id) => conversations.get(id)!, () => T)).resolves.toMatchObject({ ok: false, code: "unavailable" });
    b.down = false;
    expect((await page(START, 10)).messages).toEqual(["a:1", "a:2", "b:1", "b:2"]);
  });

  it("from an epoch-ms time: skips entries indexed well before it and messages created before it", async () => {
    const { conversations, clock, deliver, page } = setup("a", "b");
    deliver("a", 3);
    clock.advance(CLOCK_SKEW_MS + 60_000);
    deliver("b", 1);
    const since = clock.now() + 1;
    clock.advance(10);
    deliver("b", 2);
    deliver("a", 1);
    const a = conversations.get("a")!;
    a.slices = 0;
    const p = await page({ ingestId: 0, seq: 0, minTime: since, resume: false }, 10);
    expect(p.messages).toEqual(["b:2", "b:3", "a:4"]);
    expect(p.cursor.minTime).toBe(since);
    // "a"'s first entry, indexed long before, was not even asked about.
    expect(a.slices).toBe(1);
    // Nothing indexed since a time: an empty page that resumes after the newest entry.
    const later = await page({ ingestId: 0, seq: 0, minTime: clock.now() + CLOCK_SKEW_MS + 1, resume: false }, 10);
    expect(later).toMatchObject({ messages: [], hasMore: false });
    deliver("a", 1);
    expect((await page({ ...later.cursor, minTime: 0 }, 10)).messages).toEqual(["a:5"]);
  });

  it("prunes entries past the retention window, and refuses a cursor or a time that had not passed what it pruned", async () => {
    const DAY = 86_400_000;
    const { sql, index, clock, deliver, page } = setup("a", "b");
    deliver("a", 2);
    const before = await page(START, 10);
    deliver("b", 1);
    const sinceThen = clock.now() - CLOCK_SKEW_MS - 1;
    const middle = await page(before.cursor, 10);
    clock.advance(10 * DAY);
    deliver("a", 1);
    const late = await page(middle.cursor, 10);
    expect(late.messages).toEqual(["a:3"]);
    // Nothing is past 30 days yet: the next prune is due when the first entries are.
    expect(index.prune(clock.now(), 30 * DAY)).toBe(T + 30 * DAY);
    clock.advance(25 * DAY);
    expect(index.prune(clock.now(), 30 * DAY)).toBe(T + 40 * DAY);
    expect(sql.exec<{ n: number }>("SELECT count(*) AS n FROM inbox_index").one().n).toBe(1);
    const refused = (cursor: SyncCursor) => index.page("u", cursor, 10, () => {
      throw new Error("no conversation is asked");
    }, clock.now);
    // A cursor that had not passed the pruned entries, and a time they may hold messages after.
    await expect(refused(before.cursor)).resolves.toMatchObject({ ok: false, code: "conflict" });
    await expect(refused({ ingestId: 0, seq: 0, minTime: sinceThen, resume: false })).resolves.toMatchObject({ ok: false, code: "conflict" });
    // A cursor at the end of the newest pruned entry lost nothing; nor did `0` (everything kept) or a time inside the window.
    expect((await page(middle.cursor, 10)).messages).toEqual(["a:3"]);
    expect((await page(late.cursor, 10)).messages).toEqual([]);
    expect((await page(START, 10)).messages).toEqual(["a:3"]);
    expect((await page({ ingestId: 0, seq: 0, minTime: T + DAY, resume: false }, 10)).messages).toEqual(["a:3"]);
    // The conversation pruned whole starts a new entry from where the index stood.
    deliver("b", 1);
    expect((await page(late.cursor, 10)).messages).toEqual(["b:2"]);
  });
});
