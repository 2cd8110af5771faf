// Creating a conversation and changing its members: who may, what the members see, and what a
// member removed can no longer do.
import { describe, expect, it } from "vitest";
import { MAX_MEMBERS } from "../../../durable-objects/conversation/conversation";
import { CLOSE, ERROR_STATUS, type Message, type SystemEvent } from "../../../protocol";
import { ConversationHarness, expectFailure, expectOk, identity } from "../support/conversation";
import { framesOf } from "../support/sockets";

const systemEvents = (h: ConversationHarness): SystemEvent[] =>
  expectOk(h.conversation.history(h.store.members.keys().next().value!, { limit: 100 }))
    .messages.filter((m: Message) => m.kind === "system")
    .map((m) => JSON.parse(m.body!) as SystemEvent);

const roles = (h: ConversationHarness) => Object.fromEntries([...h.store.members.values()].map((m) => [m.userId, m.role]));

describe("create", () => {
  it("creates a direct conversation once: the second create of the pair, by either side, returns it", () => {
    const h = new ConversationHarness();
    const first = expectOk(h.create("direct", "alice", ["bob"]));
    expect(first.created).toBe(true);
    expect(roles(h)).toEqual({ alice: "member", bob: "member" });
    h.clock.advance(1000);
    for (const [creator, other] of [
      ["alice", "bob"],
      ["bob", "alice"],
    ] as const) {
      const again = expectOk(h.create("direct", creator, [other]));
      expect(again.created).toBe(false);
      expect(again.conversation).toMatchObject({ id: first.conversation.id, createdAt: first.conversation.createdAt, lastSeq: 1 });
    }
    expect(h.storedMessages()).toBe(1);
  });

  it.each([
    ["a direct conversation, by someone outside the pair", "direct", "carol"],
    ["a group, by its own creator", "group", "alice"],
    ["a group, by a member", "group", "bob"],
  ] as const)("refuses to create %s again (conflict)", (_, type, creator) => {
    const h = new ConversationHarness();
    expectOk(h.create(type, "alice", ["bob"]));
    expectFailure(h.create(type, creator, ["alice"]), "conflict");
    expect(h.storedMessages()).toBe(1);
  });

  it("makes the creator of a group its admin and everyone else a member, once each", () => {
    const h = new ConversationHarness();
    const { conversation } = expectOk(h.create("group", "alice", ["bob", "carol", "bob", "alice"]));
    expect(roles(h)).toEqual({ alice: "admin", bob: "member", carol: "member" });
    expect(conversation.members).toHaveLength(3);
    expect(conversation.lastMessage).toMatchObject({ seq: 1, kind: "system", senderId: "alice" });
    expect(systemEvents(h)).toEqual([{ event: "created", actorId: "alice", userIds: ["bob", "carol"] }]);
  });

  it.each([
    [MAX_MEMBERS - 1, true],
    [MAX_MEMBERS, false],
  ])("with %i others (the creator counts too) is allowed: %s", (others, allowed) => {
    const h = new ConversationHarness();
    const result = h.create("group", "alice", Array.from({ length: others }, (_, i) => `u${i}`));
    if (allowed) expect(expectOk(result).conversation.members).toHaveLength(MAX_MEMBERS);
    else {
      expectFailure(result, "bad_request");
      expect(h.store.meta).toBeNull();
    }
  });
});

describe("add members", () => {
  it("lets an admin add members, recording only those who are new", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    const { conversation } = expectOk(h.conversation.addMembers(identity("alice"), ["carol", "bob", "carol"], h.clock.now()));
    expect(conversation.members.map((m) => m.userId).sort()).toEqual(["alice", "bob", "carol"]);
    expect(roles(h).carol).toBe("member");
    expect(systemEvents(h).at(-1)).toEqual({ event: "added", actorId: "alice", userIds: ["carol"] });
  });

  it("adds nothing and records nothing when everyone is already a member", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    const deferred = h.deferred;
    expectOk(h.conversation.addMembers(identity("alice"), ["bob", "alice"], h.clock.now()));
    expect(h.storedMessages()).toBe(1);
    expect(h.deferred).toBe(deferred);
  });

  it("refuses to grow a group past the member limit", () => {
    const h = new ConversationHarness();
    h.group("alice", Array.from({ length: MAX_MEMBERS - 2 }, (_, i) => `u${i}`));
    expectFailure(h.conversation.addMembers(identity("alice"), ["x", "y"], h.clock.now()), "bad_request");
    expectOk(h.conversation.addMembers(identity("alice"), ["x", "u0"], h.clock.now()));
    expect(h.store.members.size).toBe(MAX_MEMBERS);
  });
});

describe("remove and leave", () => {
  it.each([
    ["an admin removes a member", "alice", "bob", "removed"],
    ["a member leaves", "bob", "bob", "left"],
  ] as const)("%s: the member is gone and the others are told", (_, actor, target, event) => {
    const h = new ConversationHarness();
    h.group("alice", ["bob", "carol"]);
    const carol = h.room.connect("carol");
    expectOk(h.conversation.removeMember(identity(actor), target, h.clock.now()));
    expect(h.store.members.has(target)).toBe(false);
    expect(systemEvents(h).at(-1)).toEqual({ event, actorId: actor, userIds: [target] });
    expect(framesOf(carol, "message").map((f) => (f.message as Message).seq)).toEqual([2]);
  });

  it("closes every socket of the removed member with 4003, and only theirs", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob", "carol"]);
    const bobPhone = h.room.connect("bob", "phone");
    const bobLaptop = h.room.connect("bob", "laptop");
    const carol = h.room.connect("carol");
    expectOk(h.conversation.removeMember(identity("alice"), "bob", h.clock.now()));
    for (const ws of [bobPhone, bobLaptop]) expect(ws.closed).toEqual({ code: CLOSE.removed, reason: expect.any(String) });
    expect(carol.closed).toBeNull();
    // Later broadcasts skip the closed sockets without failing.
    expectOk(h.send("carol", { clientMsgId: "after" }));
    expect(framesOf(bobPhone, "message")).toHaveLength(1);
    expect(framesOf(carol, "message")).toHaveLength(2);
  });

  // alice creates the group with bob at t0 and adds carol at t0 + 1 s.
  it.each([
    ["the earliest member takes over when the last admin leaves", [["alice", "alice"]], { bob: "admin", carol: "member" }],
    [
      "the next earliest takes over when the earliest is gone",
      [
        ["alice", "bob"],
        ["alice", "alice"],
      ],
      { carol: "admin" },
    ],
    ["nobody is promoted while an admin remains", [["alice", "carol"]], { alice: "admin", bob: "member" }],
    [
      "nobody is left to promote when the last member leaves",
      [
        ["alice", "bob"],
        ["alice", "carol"],
        ["alice", "alice"],
      ],
      {},
    ],
  ] as const)("heir: %s", (_, removals, expected) => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    h.clock.advance(1000);
    expectOk(h.conversation.addMembers(identity("alice"), ["carol"], h.clock.now()));
    for (const [actor, target] of removals) expectOk(h.conversation.removeMember(identity(actor), target, h.clock.advance(1000)));
    expect(roles(h)).toEqual(expected);
    // The promotion is stored, not only remembered.
    h.reopen();
    expect(roles(h)).toEqual(expected);
  });

  it("lets the heir act as admin", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob", "carol"]);
    expectOk(h.conversation.removeMember(identity("alice"), "alice", h.clock.now()));
    expectOk(h.conversation.addMembers(identity("bob"), ["dave"], h.clock.now()));
    expectOk(h.conversation.removeMember(identity("bob"), "carol", h.clock.now()));
    expect(roles(h)).toEqual({ bob: "admin", dave: "member" });
  });
});

describe("a refused membership change", () => {
  const add = (actor: string, userId: string) => (h: ConversationHarness) => h.conversation.addMembers(identity(actor), [userId], h.clock.now());
  const remove = (actor: string, target: string) => (h: ConversationHarness) =>
    h.conversation.removeMember(identity(actor), target, h.clock.now());
  // alice (admin), bob and carol; dave is not a member.
  it.each([
    ["a member who is not an admin adds", "group", add("bob", "dave"), "forbidden"],
    ["someone outside the group adds", "group", add("dave", "dave"), "not_found"],
    ["a member of a direct conversation adds", "direct", add("alice", "dave"), "bad_request"],
    ["a member who is not an admin removes another", "group", remove("bob", "carol"), "forbidden"],
    ["an admin removes someone who is not a member", "group", remove("alice", "dave"), "not_found"],
    ["someone outside the group removes a member", "group", remove("dave", "bob"), "not_found"],
    ["a member of a direct conversation leaves", "direct", remove("bob", "bob"), "bad_request"],
    ["a member of a direct conversation removes the other", "direct", remove("alice", "bob"), "bad_request"],
  ] as const)("%s (%s conversation): refused, nothing changes", (_, type, change, code) => {
    const h = new ConversationHarness();
    expectOk(h.create(type, "alice", type === "group" ? ["bob", "carol"] : ["bob"]));
    const before = roles(h);
    const failure = expectFailure(change(h), code);
    expect(ERROR_STATUS[failure.code]).toBe({ forbidden: 403, not_found: 404, bad_request: 400 }[code]);
    expect(roles(h)).toEqual(before);
    expect(h.storedMessages()).toBe(1);
  });
});

const seqs = (messages: Message[]) => messages.map((m) => m.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("membership spans: what a member added later, a former member and a member added back read", () => {
  /** alice's group with bob; alice says 3 things (seq 2-4) and adds carol (the `added` message is seq 5). */
  function carolAddedLater() {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    h.sendMany("alice", 3, "before");
    expectOk(h.conversation.addMembers(identity("alice"), ["carol"], h.clock.now()));
    return h;
  }

  it("a member added later reads from the message that added them, in every direction, and nothing before", () => {
    const h = carolAddedLater();
    h.sendMany("bob", 2, "after");
    for (const query of [{ limit: 100 }, { after: 0, limit: 100 }, { before: 100, limit: 100 }, { after: 2, limit: 100 }]) {
      const page = expectOk(h.conversation.history("carol", query));
      expect(seqs(page.messages)).toEqual([5, 6, 7]);
      expect(page.hasMore).toBe(false);
    }
    // Paging back stops at the joining: hasMore says so at the edge, and below it there is nothing.
    expect(expectOk(h.conversation.history("carol", { before: 7, limit: 2 }))).toMatchObject({ hasMore: false });
    expect(expectOk(h.conversation.history("carol", { before: 5, limit: 10 })).messages).toEqual([]);
    expect(expectOk(h.conversation.history("carol", { after: 0, limit: 1 })).hasMore).toBe(true);
    // The others still read everything.
    expect(seqs(expectOk(h.conversation.history("bob", { after: 0, limit: 100 })).messages)).toEqual(range(1, 7));
    expect(h.conversation.replayFloor("carol")).toBe(4);
    expect(h.conversation.replayFloor("bob")).toBe(0);
  });

  it("a member added later has nothing unread from before and does not turn others' read ticks back", () => {
    const h = carolAddedLater();
    const alice = h.room.connect("alice");
    expectOk(h.conversation.addMembers(identity("alice"), ["dave"], h.clock.now()));
    const carol = expectOk(h.conversation.view("carol")).conversation;
    expect(carol).toMatchObject({ joinedSeq: 5, readSeq: 4, unread: 0, threadUnread: 0 });
    expect(expectOk(h.conversation.receipts("alice")).receipts).toContainEqual(expect.objectContaining({ userId: "dave", readSeq: 5, deliveredSeq: 5 }));
    // Told to the open sockets, so their read ticks stay.
    expect(framesOf(alice, "receipt")).toContainEqual(expect.objectContaining({ userId: "dave", readSeq: 5 }));
    h.sendMany("bob", 2, "after");
    expect(expectOk(h.conversation.view("carol")).conversation.unread).toBe(2);
  });

  it("a member added later cannot reply in a thread they cannot see", () => {
    const h = carolAddedLater();
    expectFailure(h.send("carol", { clientMsgId: "r1", threadRootSeq: 2 }), "bad_request");
    expectOk(h.send("bob", { clientMsgId: "r2", threadRootSeq: 2 }));
  });

  it.each([
    ["removed", "alice"],
    ["who left", "bob"],
  ] as const)("a member %s reads through the message that recorded it, and nothing after it", (_, actor) => {
    const h = new ConversationHarness();
    h.group("alice", ["bob", "carol"]);
    h.sendMany("carol", 2, "before");
    expectOk(h.conversation.removeMember(identity(actor), "bob", h.clock.advance(1000)));
    h.sendMany("carol", 2, "after");
    for (const hh of [h, (h.reopen(), h)]) {
      for (const query of [{ limit: 100 }, { after: 0, limit: 100 }, { before: 100, limit: 100 }, { after: 1, limit: 100 }]) {
        const page = expectOk(hh.conversation.history("bob", query));
        expect(seqs(page.messages)).toEqual(range(query.after === 1 ? 2 : 1, 4));
        expect(page.hasMore).toBe(false);
      }
      expect(expectOk(hh.conversation.history("bob", { after: 4, limit: 10 })).messages).toEqual([]);
      expect(expectOk(hh.conversation.history("bob", { after: 0, limit: 3 })).hasMore).toBe(true);
      const { conversation } = expectOk(hh.conversation.view("bob"));
      expect(conversation).toMatchObject({ leftSeq: 4, lastSeq: 4, readSeq: 4, unread: 0, threadUnread: 0, members: [], joinedSeq: 1 });
      expect(conversation.lastMessage).toMatchObject({ seq: 4, kind: "system" });
      expect(conversation.lastMessageAt).toBe(conversation.lastMessage!.createdAt);
      // What a member may see is unchanged.
      expect(expectOk(hh.conversation.view("carol")).conversation).toMatchObject({ lastSeq: 6, joinedSeq: 1 });
      expect(expectOk(hh.conversation.view("carol")).conversation.leftSeq).toBeUndefined();
    }
  });

  it("a member removed and added back reads from their new joining: what was said while they were out stays hidden", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    h.sendMany("alice", 1, "first");
    expectOk(h.read("bob", 2));
    expectOk(h.conversation.removeMember(identity("alice"), "bob", h.clock.now()));
    h.sendMany("alice", 2, "while-out");
    expectOk(h.conversation.addMembers(identity("alice"), ["bob"], h.clock.now()));
    h.sendMany("alice", 1, "back");
    h.reopen();
    expect(seqs(expectOk(h.conversation.history("bob", { limit: 100 })).messages)).toEqual([6, 7]);
    const { conversation } = expectOk(h.conversation.view("bob"));
    expect(conversation).toMatchObject({ joinedSeq: 6, readSeq: 5, unread: 1 });
    expect(conversation.leftSeq).toBeUndefined();
    expect(h.store.formerMember("bob")).toBeNull();
    // Removed again: the span is the second one.
    expectOk(h.conversation.removeMember(identity("alice"), "bob", h.clock.now()));
    expect(seqs(expectOk(h.conversation.history("bob", { limit: 100 })).messages)).toEqual([6, 7, 8]);
  });
});

describe("a non-member", () => {
  const calls = {
    send: (h: ConversationHarness, u: string) => h.send(u, { clientMsgId: "x" }),
    receipts: (h: ConversationHarness, u: string) => h.conversation.receipts(u),
    "a receipt": (h: ConversationHarness, u: string) => h.read(u, 1),
    "adding members": (h: ConversationHarness, u: string) => h.conversation.addMembers(identity(u), [u], h.clock.now()),
  };
  // A former member still reads their span (above); someone who never was a member reads nothing.
  const reads = {
    view: (h: ConversationHarness, u: string) => h.conversation.view(u),
    history: (h: ConversationHarness, u: string) => h.conversation.history(u, { after: 0, limit: 10 }),
  };
  const cases = [
    ...Object.entries(calls).flatMap(([call, run]) => [
      ["never a member", call, run] as const,
      ["removed", call, run] as const,
      ["who left", call, run] as const,
    ]),
    ...Object.entries(reads).map(([call, run]) => ["never a member", call, run] as const),
  ];

  it.each(cases)("(%s) gets not_found for %s, and changes nothing", (who, _, run) => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    if (who === "removed") expectOk(h.conversation.removeMember(identity("alice"), "bob", h.clock.now()));
    if (who === "who left") expectOk(h.conversation.removeMember(identity("bob"), "bob", h.clock.now()));
    const user = who === "never a member" ? "mallory" : "bob";
    const stored = h.storedMessages();
    const members = h.store.members.size;
    expectFailure(run(h, user), "not_found");
    expect(h.storedMessages()).toBe(stored);
    expect(h.store.members.size).toBe(members);
  });

  it.each(Object.entries({ ...calls, ...reads }))("gets not_found for %s before the conversation exists", (_, run) => {
    const h = new ConversationHarness();
    expectFailure(run(h, "alice"), "not_found");
    expect(h.store.meta).toBeNull();
  });
});

describe("who was a member when (media shared here at a time)", () => {
  it("answers for members since they joined, former members between joining and leaving, and no one else", () => {
    const h = new ConversationHarness();
    expectOk(h.create("group", "alice", ["bob"]));
    const start = h.clock.now();
    h.clock.advance(1000);
    expectOk(h.conversation.addMembers(identity("alice"), ["carol"], h.clock.now()));
    const carolJoined = h.clock.now();
    h.clock.advance(1000);
    expectOk(h.conversation.removeMember(identity("alice"), "bob", h.clock.now()));
    const bobLeft = h.clock.now();
    h.clock.advance(1000);
    const times = [start, carolJoined - 1, carolJoined, bobLeft, bobLeft + 1, h.clock.now()];
    expect(h.store.wasMemberAt("alice", times)).toEqual([true, true, true, true, true, true]);
    expect(h.store.wasMemberAt("carol", times)).toEqual([false, false, true, true, true, true]);
    expect(h.store.wasMemberAt("bob", times)).toEqual([true, true, true, true, false, false]);
    expect(h.store.wasMemberAt("mallory", times)).toEqual(times.map(() => false));
  });
});
