// A group's settings: its title and description, and its members' roles. Who may change them,
// the system messages a change appends (and a non-change does not), the last admin kept, and
// what survives a new wake-up and goes to D1.
import { describe, expect, it } from "vitest";
import type { Message, SystemEvent } from "../../../protocol";
import { ConversationHarness, expectFailure, expectOk, identity } from "../support/conversation";
import { framesOf } from "../support/sockets";

const systemEvents = (h: ConversationHarness, reader = "alice"): SystemEvent[] =>
  expectOk(h.conversation.history(reader, { limit: 100 }))
    .messages.filter((m: Message) => m.kind === "system")
    .map((m) => JSON.parse(m.body!) as SystemEvent);

const info = (h: ConversationHarness, actor: string, change: { title?: string; description?: string | null }) =>
  h.conversation.updateGroupInfo(identity(actor), change, h.clock.now());
const setRole = (h: ConversationHarness, actor: string, target: string, role: "admin" | "member") =>
  h.conversation.setRole(identity(actor), target, role, h.clock.now());
const roles = (h: ConversationHarness) => Object.fromEntries([...h.store.members.values()].map((m) => [m.userId, m.role]));

describe("title and description", () => {
  it("an admin's change is one system message per field, in the view, broadcast, and kept across a wake-up", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    const bob = h.room.connect("bob");
    const { conversation } = expectOk(info(h, "alice", { title: "Walkers", description: "Sundays" }));
    expect(conversation).toMatchObject({ title: "Walkers", description: "Sundays", lastSeq: 3 });
    expect(systemEvents(h).slice(1)).toEqual([
      { event: "renamed", actorId: "alice", userIds: [], title: "Walkers" },
      { event: "descriptionChanged", actorId: "alice", userIds: [], description: "Sundays" },
    ]);
    expect(framesOf(bob, "message").map((f) => (f.message as Message).seq)).toEqual([2, 3]);
    h.reopen();
    expect(h.conversation.viewFor("bob")).toMatchObject({ title: "Walkers", description: "Sundays" });
  });

  it("queues the new title and description for D1", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    expectOk(info(h, "alice", { description: "About us" }));
    const rows = h.store.outboxBatch(100).filter((r) => r.kind === "conversation");
    expect(rows.at(-1)).toMatchObject({ payload: { title: "a group", description: "About us" }, atSeq: 1 });
  });

  it("stores nothing for a value as it is; an empty description removes it", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    expectOk(info(h, "alice", { title: "a group", description: null }));
    expect(h.storedMessages()).toBe(1);
    expectOk(info(h, "alice", { description: "x" }));
    const { conversation } = expectOk(info(h, "alice", { description: "" }));
    expect(conversation.description).toBeNull();
    expect(systemEvents(h).at(-1)).toMatchObject({ event: "descriptionChanged", description: null });
  });

  it.each([
    ["a member", "bob", "forbidden"],
    ["a stranger", "eve", "not_found"],
  ] as const)("refuses %s (%s), storing nothing", (_, actor, code) => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    expectFailure(info(h, actor, { title: "Mine" }), code);
    expect(h.store.meta?.title).toBe("a group");
    expect(h.storedMessages()).toBe(1);
  });

  it("refuses a direct conversation", () => {
    const h = new ConversationHarness();
    expectOk(h.create("direct", "alice", ["bob"]));
    expectFailure(info(h, "alice", { title: "Us" }), "bad_request");
    expect(h.conversation.viewFor("alice").description).toBeUndefined();
  });
});

describe("roles", () => {
  it("an admin promotes a member, who may then demote the first admin; each is a system message", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob", "carol"]);
    expectOk(setRole(h, "alice", "bob", "admin"));
    expectOk(setRole(h, "bob", "alice", "member"));
    expect(roles(h)).toEqual({ alice: "member", bob: "admin", carol: "member" });
    expect(systemEvents(h).slice(1)).toEqual([
      { event: "promoted", actorId: "alice", userIds: ["bob"] },
      { event: "demoted", actorId: "bob", userIds: ["alice"] },
    ]);
    h.reopen();
    expect(roles(h)).toEqual({ alice: "member", bob: "admin", carol: "member" });
    expect(h.store.outboxBatch(100).filter((r) => r.kind === "member_put").at(-1)).toMatchObject({ payload: { userId: "alice", role: "member" } });
  });

  it("keeps the last admin (conflict), and stores nothing for a role as it is", () => {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    expectFailure(setRole(h, "alice", "alice", "member"), "conflict");
    expectOk(setRole(h, "alice", "bob", "member"));
    expectOk(setRole(h, "alice", "alice", "admin"));
    expect(h.storedMessages()).toBe(1);
    expect(roles(h)).toEqual({ alice: "admin", bob: "member" });
  });

  it.each([
    ["a member changing a role", "bob", "carol", "forbidden"],
    ["a stranger", "eve", "bob", "not_found"],
    ["an admin naming a non-member", "alice", "eve", "not_found"],
  ] as const)("refuses %s (%s)", (_, actor, target, code) => {
    const h = new ConversationHarness();
    h.group("alice", ["bob", "carol"]);
    expectFailure(setRole(h, actor, target, "admin"), code);
    expect(roles(h)).toEqual({ alice: "admin", bob: "member", carol: "member" });
    expect(h.storedMessages()).toBe(1);
  });
});
