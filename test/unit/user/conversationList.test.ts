// The user's conversation list: what orders it (the fan-out's messages, membership notices, the
// watched conversations' views), paging each conversation exactly once while the list moves, and
// bad or expired cursors.
import { afterEach, describe, expect, it } from "vitest";
import { migrate } from "../../../durable-objects/lib/migrate";
import { ConversationList, LIST_CURSOR_TTL_MS, LIST_MIGRATIONS, LIST_MIGRATIONS_TRACK, LIST_PAGE_SQL, type ListQuery } from "../../../durable-objects/user/conversationList";
import { QUIET_HINT_MS, type ConversationPeer, type InboxEvent, type ListNotice } from "../../../durable-objects/contract";
import type { Conversation } from "../../../protocol";
import { messageEvent, userSql } from "../support/user";

const T = 1_800_000_000_000;

const closers: Array<() => void> = [];
afterEach(() => closers.splice(0).forEach((close) => close()));

function setup() {
  const sql = userSql();
  closers.push(() => sql.close());
  migrate(sql, LIST_MIGRATIONS, LIST_MIGRATIONS_TRACK);
  return { sql, list: new ConversationList(sql) };
}

/** A message of `conversationId` at `at`, as the fan-out carries it. */
const at = (conversationId: string, seq: number, time: number, kind: "text" | "system" | "action" | "mls.commit" = "text"): InboxEvent =>
  messageEvent(seq, { conversationId, createdAt: time, kind });

const notice = (conversationId: string, over: Partial<ListNotice> = {}): ListNotice => ({ conversationId, joinedSeq: 1, leftSeq: null, at: T, version: 1, ...over });

type Peers = (conversationId: string) => Pick<ConversationPeer, "viewForNotification">;

const noPeers: Peers = () => ({
  viewForNotification: () => Promise.reject(new Error("no conversation should be asked")),
});

async function page(list: ConversationList, query: ListQuery, peers: Peers = noPeers, now = T) {
  const result = await list.page("me", query, peers, () => now);
  if (!result.ok) throw new Error(`${result.code}: ${result.message}`);
  return result;
}

const ids = async (list: ConversationList) => (await page(list, { limit: null, cursor: null })).entries.map((e) => e.id);

function view(id: string, over: Partial<Conversation> = {}): Conversation {
  return {
    id,
    type: "group",
    title: id,
    e2ee: false,
    createdAt: T,
    members: [{ userId: "me", role: "member", joinedAt: T }],
    lastSeq: 1,
    lastMessageAt: T,
    readSeq: 0,
    unread: 0,
    threadUnread: 0,
    lastMessage: null,
    joinedSeq: 1,
    ...over,
  };
}

describe("conversation list: what orders it", () => {
  it("orders by each conversation's latest message that counts; commits and actions move nothing", async () => {
    const { list } = setup();
    list.apply([notice("a", { at: T }), notice("b", { at: T + 1 })]);
    expect(await ids(list)).toEqual(["b", "a"]);
    list.record([at("a", 2, T + 5)], T + 10);
    expect(await ids(list)).toEqual(["a", "b"]);
    list.record([at("b", 2, T + 20, "action"), at("b", 3, T + 21, "mls.commit")], T + 30);
    expect(await ids(list)).toEqual(["a", "b"]);
    list.record([at("b", 4, T + 22, "system")], T + 30);
    expect(await ids(list)).toEqual(["b", "a"]);
    // A message of a conversation it did not know yet (one from before this version) adds it.
    list.record([at("c", 7, T + 40)], T + 41);
    const entries = (await page(list, { limit: null, cursor: null })).entries;
    expect(entries[0]).toEqual({ id: "c", joinedSeq: null, leftSeq: null, activityAt: T + 40 });
  });

  it("applies membership notices by version: a late retry undoes nothing; a former member stays where they left", async () => {
    const { list } = setup();
    list.apply([notice("g", { joinedSeq: 1, at: T, version: 1 })]);
    list.record([at("g", 2, T + 10), at("g", 3, T + 20)], T + 20);
    list.apply([notice("g", { joinedSeq: 1, leftSeq: 4, at: T + 30, version: 4 })]);
    // Relayed with the removal, and after it: nothing of it moves the entry.
    list.record([at("g", 5, T + 40)], T + 40);
    list.apply([notice("g", { joinedSeq: 1, at: T, version: 1 })]);
    list.apply([notice("other", { at: T + 35 })]);
    expect((await page(list, { limit: null, cursor: null })).entries).toEqual([
      { id: "other", joinedSeq: 1, leftSeq: null, activityAt: T + 35 },
      { id: "g", joinedSeq: 1, leftSeq: 4, activityAt: T + 30 },
    ]);
    // Added back: a member again from the message that added them, and moving again.
    list.apply([notice("g", { joinedSeq: 6, at: T + 50, version: 6 })]);
    list.apply([notice("g", { joinedSeq: 6, at: T + 50, version: 6 })]);
    expect((await page(list, { limit: null, cursor: null })).entries[0]).toEqual({ id: "g", joinedSeq: 6, leftSeq: null, activityAt: T + 50 });
  });
});

describe("conversation list: paging", () => {
  it("returns every conversation of the first page's list exactly once, in its order then, however the list moves between pages and across wake-ups", async () => {
    for (let run = 0; run < 20; run++) {
      const setUp = setup();
      let list = setUp.list;
      let seed = run + 1;
      const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const n = 40 + Math.floor(random() * 40);
      let clock = T;
      for (let i = 0; i < n; i++) list.apply([notice(`c${i}`, { at: clock++ })]);
      // Ties on activity are ordered by id.
      list.record([at("c3", 9, T + 10), at("c4", 9, T + 10)], clock);
      const expected = await ids(list);
      const seen: string[] = [];
      let cursor: string | null = null;
      for (let pages = 0; ; pages++) {
        const result = await page(list, { limit: 1 + Math.floor(random() * 9), cursor }, noPeers, clock);
        seen.push(...result.entries.map((e) => e.id));
        if (!result.hasMore) {
          expect(result.cursor).toBeNull();
          break;
        }
        cursor = result.cursor;
        // Between pages: messages move some conversations (some twice), new ones arrive, a member leaves.
        for (let k = 0; k < 3; k++) list.record([at(`c${Math.floor(random() * n)}`, 100 + pages, (clock += 1))], clock);
        if (pages % 3 === 0) list.apply([notice(`new${pages}`, { at: (clock += 1) })]);
        if (pages % 4 === 1) list.apply([notice(`c${Math.floor(random() * n)}`, { leftSeq: 50, at: T - 1000, version: 50 })]);
        // Evicted now and then: a new wake-up over the same storage, its memory empty.
        if (pages % 2 === 0) list = new ConversationList(setUp.sql);
        expect(pages).toBeLessThan(200);
      }
      expect(seen).toEqual(expected);
    }
  });

  it("reads a page through the order index from its cursor: no scan of the rows above it, no sort", async () => {
    const { sql, list } = setup();
    for (let i = 0; i < 500; i++) list.apply([notice(`c${String(i).padStart(3, "0")}`, { at: T + i })]);
    const first = await page(list, { limit: 10, cursor: null });
    expect(first.entries.map((e) => e.id)).toEqual(Array.from({ length: 10 }, (_, i) => `c${499 - i}`));
    const second = await page(list, { limit: 10, cursor: first.cursor });
    expect(second.entries.map((e) => e.id)).toEqual(Array.from({ length: 10 }, (_, i) => `c${489 - i}`));
    const plan = (query: string, ...bindings: unknown[]) =>
      sql
        .exec<{ detail: string }>(`EXPLAIN QUERY PLAN ${query}`, ...bindings)
        .toArray()
        .map((r) => r.detail)
        .join("; ");
    expect(plan(LIST_PAGE_SQL.after, 1, T, "c", 11)).toBe("SEARCH conversation_list USING INDEX conversation_list_order ((activity_at,conversation_id)<(?,?))");
    expect(plan(LIST_PAGE_SQL.first, 1, 11)).toBe("SCAN conversation_list USING INDEX conversation_list_order");
  });

  it("refuses a cursor it did not make, and one past its lifetime", async () => {
    const { list } = setup();
    for (let i = 0; i < 5; i++) list.apply([notice(`c${i}`, { at: T + i })]);
    for (const cursor of ["nope", "1.2", "x.1.c1", "999.1.c1", `1.${T}.${"x".repeat(129)}`]) {
      const result = await list.page("me", { limit: 2, cursor }, noPeers, () => T);
      expect(result).toMatchObject({ ok: false, code: "bad_request" });
    }
    const first = await page(list, { limit: 2, cursor: null });
    expect(first.cursor).toMatch(/^1\./);
    // A first page after the lifetime prunes the snapshot the old cursor names.
    await page(list, { limit: 2, cursor: null }, noPeers, T + LIST_CURSOR_TTL_MS + 1);
    expect(await list.page("me", { limit: 2, cursor: first.cursor }, noPeers, () => T + LIST_CURSOR_TTL_MS + 2)).toMatchObject({ ok: false, code: "bad_request" });
  });
});

describe("conversation list: quiet members", () => {
  it("asks the conversations that may skip calling before a first page, orders them by their views and hands the views over", async () => {
    const { list } = setup();
    list.apply([notice("open", { at: T }), notice("other", { at: T + 10 })]);
    list.watch("open", T);
    const asked: string[] = [];
    const peers = (id: string): Pick<ConversationPeer, "viewForNotification"> => ({
      viewForNotification: async (userId) => {
        asked.push(`${id}:${userId}`);
        return view(id, { lastSeq: 9, lastMessageAt: T + 20 });
      },
    });
    const first = await page(list, { limit: 1, cursor: null }, peers, T + 1);
    expect(asked).toEqual(["open:me"]);
    expect(first.entries.map((e) => e.id)).toEqual(["open"]);
    expect(Object.keys(first.views)).toEqual(["open"]);
    // The next page reads the list as the first page's snapshot had it: it asks nobody, however
    // many conversations are watched.
    for (let i = 0; i < 50; i++) list.watch(`busy${i}`, T);
    const second = await page(list, { limit: 1, cursor: first.cursor }, noPeers, T + 2);
    expect(second.entries.map((e) => e.id)).toEqual(["other"]);
    expect(second.views).toEqual({});
    expect(list.watched()).toContain("open");
    // A first page asks again; asked after its answer lapsed, a watch ends.
    await page(list, { limit: null, cursor: null }, peers, T + 3 * QUIET_HINT_MS + 1);
    expect(list.watched()).toEqual([]);
    expect(asked).toHaveLength(52);
  });

  it("fails the page when a watched conversation cannot be asked, and orders nothing by a stranger's view", async () => {
    const { list } = setup();
    list.apply([notice("open", { at: T })]);
    list.watch("open", T);
    const down = () => ({ viewForNotification: () => Promise.reject(new Error("unreachable")) });
    expect(await list.page("me", { limit: 5, cursor: null }, down, () => T)).toMatchObject({ ok: false, code: "unavailable" });
    const stranger = () => ({ viewForNotification: async () => view("open", { members: [], lastMessageAt: T + 99 }) });
    const result = await page(list, { limit: 5, cursor: null }, stranger, T);
    expect(result.entries).toEqual([{ id: "open", joinedSeq: 1, leftSeq: null, activityAt: T }]);
    expect(result.views).toEqual({});
  });
});
