// The presence privacy rule as the users' objects answer it: the viewer's current conversations
// (its list), the asked user's membership of any of them (theirs), chunked calls that stop at the
// first shared conversation, and what GET /presence makes of it (self, unknown, order).
import { afterEach, describe, expect, it } from "vitest";
import { migrate } from "../../../durable-objects/lib/migrate";
import { ConversationList, CURRENT_SQL, LIST_MIGRATIONS, LIST_MIGRATIONS_TRACK, MEMBER_OF_ANY_SQL } from "../../../durable-objects/user/conversationList";
import { KNOWN_USERS_MAX, PRIVACY_CHUNK, PresencePrivacy } from "../../../durable-objects/user/presencePrivacy";
import type { ListNotice } from "../../../durable-objects/contract";
import type { Presence } from "../../../protocol";
import { messageEvent, userSql } from "../support/user";

const T = 1_800_000_000_000;

const closers: Array<() => void> = [];
afterEach(() => closers.splice(0).forEach((close) => close()));

function newList() {
  const sql = userSql();
  closers.push(() => sql.close());
  migrate(sql, LIST_MIGRATIONS, LIST_MIGRATIONS_TRACK);
  return { sql, list: new ConversationList(sql) };
}

const joined = (conversationId: string, at = T): ListNotice => ({ conversationId, joinedSeq: 1, leftSeq: null, at, version: 1 });
const left = (conversationId: string, at = T): ListNotice => ({ conversationId, joinedSeq: 1, leftSeq: 5, at, version: 5 });

/**
 * Users' objects in memory, each with its own list: `presenceIfMember` answers as UserDO does.
 * An id with no list is no one's (its object would hold an empty list).
 */
function world() {
  const lists = new Map<string, ConversationList>();
  const calls: Array<{ userId: string; ids: string[] }> = [];
  const unreachable = new Set<string>();
  const user = (userId: string) => {
    if (!lists.has(userId)) lists.set(userId, newList().list);
    return lists.get(userId)!;
  };
  const presenceOf = (userId: string): Presence => ({ userId, status: "online", lastSeen: null });
  /** What the directory was asked; ids starting with "ghost" are nobody's. */
  const lookups: string[][] = [];
  const privacyOf = (viewerId: string) =>
    new PresencePrivacy({
      current: () => user(viewerId).current(),
      existing: async (userIds) => {
        lookups.push(userIds);
        return new Set(userIds.filter((id) => !id.startsWith("ghost")));
      },
      users: (id) => ({
        presenceIfMember: async (userId, conversationIds) => {
          calls.push({ userId, ids: conversationIds });
          if (unreachable.has(id)) throw new Error(`${id}'s object unreachable`);
          return lists.get(id)?.memberOfAny(conversationIds) ? presenceOf(userId) : null;
        },
      }),
    });
  return { user, calls, lookups, unreachable, privacyOf, presenceOf };
}

describe("a user's side of the rule (their conversation list)", () => {
  it("lists the conversations the user is a member of now, most active first", () => {
    const { list } = newList();
    list.apply([joined("old", T), joined("new", T + 2), joined("gone", T + 1)]);
    list.apply([left("gone", T + 3)]);
    // Known only from its messages (its notice not yet taken): the fan-out reaches members.
    list.record([messageEvent(1, { conversationId: "heard", createdAt: T + 1 })], T);
    expect(list.current()).toEqual(["new", "heard", "old"]);
    list.apply([{ ...joined("gone", T + 4), version: 7 }]);
    expect(list.current()).toEqual(["gone", "new", "heard", "old"]);
  });

  it("is a member of any of a set of ids only through a current membership", () => {
    const { list } = newList();
    expect(list.memberOfAny(["a"])).toBe(false);
    list.apply([joined("a"), joined("b")]);
    list.apply([left("b")]);
    expect(list.memberOfAny([])).toBe(false);
    expect(list.memberOfAny(["x", "a"])).toBe(true);
    expect(list.memberOfAny(["b", "x"])).toBe(false);
    // More ids than an object's SQLite binds parameters: they go as one JSON array.
    const many = Array.from({ length: PRIVACY_CHUNK }, (_, i) => `other${i}`);
    expect(list.memberOfAny(many)).toBe(false);
    expect(list.memberOfAny([...many, "a"])).toBe(true);
  });

  it("reads the list through the order index and looks each asked id up by its key", () => {
    const { sql, list } = newList();
    for (let i = 0; i < 200; i++) list.apply([joined(`c${i}`, T + i)]);
    const plan = (query: string, ...bindings: unknown[]) =>
      sql
        .exec<{ detail: string }>(`EXPLAIN QUERY PLAN ${query}`, ...bindings)
        .toArray()
        .map((r) => r.detail);
    expect(plan(CURRENT_SQL)).toEqual(["SCAN conversation_list USING INDEX conversation_list_order"]);
    const lookup = plan(MEMBER_OF_ANY_SQL, JSON.stringify(["c1", "c2"]));
    expect(lookup).toContain("SEARCH conversation_list USING PRIMARY KEY (conversation_id=?)");
    expect(lookup.some((step) => step.startsWith("SCAN conversation_list"))).toBe(false);
  });
});

describe("the viewer's side of the rule", () => {
  it("finds the users who share a current conversation, with their presence", async () => {
    const w = world();
    w.user("me").apply([joined("direct"), joined("group"), joined("formerGroup")]);
    w.user("me").apply([left("formerGroup")]);
    w.user("friend").apply([joined("direct")]);
    w.user("member").apply([joined("group")]);
    w.user("stranger").apply([joined("elsewhere")]);
    w.user("leftTheGroup").apply([joined("group")]);
    w.user("leftTheGroup").apply([left("group")]);
    // A former member of the viewer's former group: no longer shared by either.
    w.user("formerPeer").apply([joined("formerGroup")]);
    const shared = await w.privacyOf("me").shared(["friend", "member", "stranger", "leftTheGroup", "formerPeer", "nobody", "friend"]);
    expect(shared).toEqual(
      new Map([
        ["friend", w.presenceOf("friend")],
        ["member", w.presenceOf("member")],
      ]),
    );
    // One call per user asked (duplicates collapsed), each with the viewer's current conversations.
    expect(w.calls.map((c) => c.userId).sort()).toEqual(["formerPeer", "friend", "leftTheGroup", "member", "nobody", "stranger"]);
    for (const c of w.calls) expect([...c.ids].sort()).toEqual(["direct", "group"]);
  });

  it("asks no object of an id the directory does not know, and reads the directory once per id", async () => {
    const w = world();
    w.user("me").apply([joined("direct")]);
    w.user("friend").apply([joined("direct")]);
    const privacy = w.privacyOf("me");
    expect(await privacy.shared(["friend", "ghost1", "ghost2"])).toEqual(new Map([["friend", w.presenceOf("friend")]]));
    expect(w.calls.map((c) => c.userId)).toEqual(["friend"]);
    await privacy.shared(["friend", "ghost1"]);
    // The friend is known by now; a made-up id is looked up again, and never asked.
    expect(w.lookups).toEqual([["friend", "ghost1", "ghost2"], ["ghost1"]]);
    expect(w.calls.map((c) => c.userId)).toEqual(["friend", "friend"]);
  });

  it("still asks a known user in the call that makes it forget what it knew", async () => {
    const w = world();
    w.user("me").apply([joined("direct")]);
    w.user("friend").apply([joined("direct")]);
    const privacy = w.privacyOf("me");
    await privacy.shared(["friend"]);
    const many = Array.from({ length: KNOWN_USERS_MAX }, (_, i) => `u${i}`);
    expect((await privacy.shared(["friend", ...many])).has("friend")).toBe(true);
  });

  it("asks no one for a viewer in no conversation, or who left every one", async () => {
    const w = world();
    w.user("friend").apply([joined("direct")]);
    expect(await w.privacyOf("me").shared(["friend"])).toEqual(new Map());
    w.user("me").apply([joined("direct")]);
    expect([...(await w.privacyOf("me").shared(["friend"])).keys()]).toEqual(["friend"]);
    w.user("me").apply([left("direct")]);
    w.calls.length = 0;
    expect(await w.privacyOf("me").shared(["friend"])).toEqual(new Map());
    expect(w.calls).toEqual([]);
    expect(await w.privacyOf("me").shared([])).toEqual(new Map());
  });

  it("sends a long list in bounded chunks, most active first, and stops at the first shared one", async () => {
    const w = world();
    const n = 2 * PRIVACY_CHUNK + 200;
    for (let i = 0; i < n; i++) w.user("me").apply([joined(`c${i}`, T + i)]);
    w.user("recent").apply([joined(`c${n - 1}`)]);
    w.user("ancient").apply([joined("c0")]);
    w.user("none").apply([joined("elsewhere")]);
    const shared = await w.privacyOf("me").shared(["recent", "ancient", "none"]);
    expect([...shared.keys()].sort()).toEqual(["ancient", "recent"]);
    const sizes = (userId: string) => w.calls.filter((c) => c.userId === userId).map((c) => c.ids.length);
    expect(sizes("recent")).toEqual([PRIVACY_CHUNK]);
    expect(sizes("ancient")).toEqual([PRIVACY_CHUNK, PRIVACY_CHUNK, 200]);
    expect(sizes("none")).toEqual([PRIVACY_CHUNK, PRIVACY_CHUNK, 200]);
    // Every id once, in the list's order.
    expect(w.calls.filter((c) => c.userId === "none").flatMap((c) => c.ids)).toEqual(Array.from({ length: n }, (_, i) => `c${n - 1 - i}`));
  });

  it("asks every user at once", async () => {
    const asked: string[] = [];
    const answers = new Map<string, (p: Presence | null) => void>();
    const privacy = new PresencePrivacy({
      current: () => ["c"],
      existing: async (userIds) => new Set(userIds),
      users: () => ({
        presenceIfMember: (userId) =>
          new Promise((resolve) => {
            asked.push(userId);
            answers.set(userId, resolve);
          }),
      }),
    });
    const result = privacy.shared(["a", "b", "c"]);
    // Every pending step but the answers runs (the directory's, then the calls).
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(asked).toEqual(["a", "b", "c"]);
    for (const [userId, answer] of answers) answer(userId === "b" ? { userId, status: "offline", lastSeen: T } : null);
    expect(await result).toEqual(new Map([["b", { userId: "b", status: "offline", lastSeen: T }]]));
  });

  it("fails when a user's object cannot be asked: the rule has no answer without it", async () => {
    const w = world();
    w.user("me").apply([joined("direct")]);
    w.user("friend").apply([joined("direct")]);
    w.unreachable.add("friend");
    await expect(w.privacyOf("me").shared(["friend"])).rejects.toThrow("unreachable");
  });

  it("answers GET /presence in the order asked: the viewer's own, each sharer's, unknown for anyone else", async () => {
    const w = world();
    w.user("me").apply([joined("direct")]);
    w.user("friend").apply([joined("direct")]);
    w.user("stranger").apply([joined("elsewhere")]);
    const own: Presence = { userId: "me", status: "offline", lastSeen: T };
    const seen = await w.privacyOf("me").visibleTo("me", ["stranger", "me", "friend", "nobody", "friend", "me"], () => own);
    expect(seen).toEqual([
      { userId: "stranger", status: "unknown", lastSeen: null },
      own,
      w.presenceOf("friend"),
      { userId: "nobody", status: "unknown", lastSeen: null },
    ]);
    // The viewer's own object is not asked about the viewer.
    expect(w.calls.map((c) => c.userId)).not.toContain("me");
    // A viewer in no conversation still sees themself.
    w.user("loner");
    expect(await w.privacyOf("loner").visibleTo("loner", ["loner", "friend"], () => ({ ...own, userId: "loner" }))).toEqual([
      { ...own, userId: "loner" },
      { userId: "friend", status: "unknown", lastSeen: null },
    ]);
  });
});
