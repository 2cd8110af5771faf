// Group settings and the profile in the client: the sentences of the new system events, a group's
// title, description and roles as its system messages change them (live, before the user socket's
// conversation frame), the calls an admin makes, names and photos fetched again with the list,
// and the profile saved into the session.
import { describe, expect, it } from "vitest";
import type { Conversation, Message } from "../../protocol";
import { groupChanges, isAdmin } from "../src/state/groupEvents";
import { systemSentence } from "../src/state/messageText";
import { conversation, message, settle, user } from "./fakes";
import { ME, YOU, startSignedIn } from "./storeSetup";

const names: Record<string, string> = { ann: "Ann", bob: "Bob" };
const name = (id: string) => names[id] ?? "?";
const system = (conversationId: string, seq: number, actorId: string, event: Record<string, unknown>): Message =>
  message(conversationId, seq, actorId, { kind: "system", body: JSON.stringify({ actorId, userIds: [], ...event }) });

describe("group event sentences", () => {
  it("read naturally, with You and you", () => {
    const say = (event: Record<string, unknown>, me = "cy") => systemSentence(JSON.stringify({ userIds: [], ...event }), me, name, true);
    expect(say({ event: "renamed", actorId: "ann", title: "Hill walkers" })).toBe("Ann renamed the group to “Hill walkers”");
    expect(say({ event: "renamed", actorId: "ann", title: "Hill walkers" }, "ann")).toBe("You renamed the group to “Hill walkers”");
    expect(say({ event: "descriptionChanged", actorId: "ann", description: "Sundays" })).toBe("Ann changed the group description");
    expect(say({ event: "descriptionChanged", actorId: "ann", description: null })).toBe("Ann removed the group description");
    expect(say({ event: "promoted", actorId: "ann", userIds: ["bob"] })).toBe("Ann made Bob an admin");
    expect(say({ event: "promoted", actorId: "ann", userIds: ["bob"] }, "bob")).toBe("Ann made you an admin");
    expect(say({ event: "demoted", actorId: "ann", userIds: ["bob"] })).toBe("Ann dismissed Bob as admin");
    expect(say({ event: "demoted", actorId: "ann", userIds: ["ann"] })).toBe("Ann stepped down as admin");
    expect(say({ event: "demoted", actorId: "ann", userIds: ["ann"] }, "ann")).toBe("You stepped down as admin");
  });
});

describe("group changes from system messages", () => {
  const g = (extra: Partial<Conversation> = {}) =>
    conversation("g", ["ann", "bob", "cy"], { lastSeq: 1, members: ["ann", "bob", "cy"].map((userId) => ({ userId, role: userId === "ann" ? "admin" : "member", joinedAt: 1 })), ...extra });

  it("applies renames, descriptions and roles in seq order, the latest winning", () => {
    const changes = groupChanges(g(), [
      system("g", 4, "bob", { event: "renamed", title: "Third" }),
      system("g", 2, "ann", { event: "renamed", title: "Second" }),
      system("g", 3, "ann", { event: "promoted", userIds: ["bob"] }),
      system("g", 5, "bob", { event: "demoted", userIds: ["ann"] }),
      system("g", 6, "bob", { event: "descriptionChanged", description: "About" }),
    ]);
    expect(changes?.title).toBe("Third");
    expect(changes?.description).toBe("About");
    expect(changes?.members?.map((m) => [m.userId, m.role])).toEqual([
      ["ann", "member"],
      ["bob", "admin"],
      ["cy", "member"],
    ]);
  });

  it("changes nothing for messages the state already includes, other events, other conversations or a direct chat", () => {
    expect(groupChanges(g({ lastSeq: 5 }), [system("g", 5, "ann", { event: "renamed", title: "Old" })])).toBeNull();
    expect(groupChanges(g(), [system("g", 2, "ann", { event: "added", userIds: ["dee"] }), message("g", 3, "ann")])).toBeNull();
    expect(groupChanges(g(), [system("other", 2, "ann", { event: "renamed", title: "No" })])).toBeNull();
    expect(groupChanges(conversation("d", ["ann", "bob"]), [system("d", 2, "ann", { event: "renamed", title: "No" })])).toBeNull();
    expect(groupChanges(g(), [message("g", 2, "ann", { kind: "system", body: "not json" })])).toBeNull();
  });

  it("tells who is an admin", () => {
    expect(isAdmin(g(), "ann")).toBe(true);
    expect(isAdmin(g(), "bob")).toBe(false);
    expect(isAdmin(conversation("d", ["ann", "bob"]), "ann")).toBe(false);
  });
});

describe("group settings in the store", () => {
  const group = conversation("g1", [ME.id, YOU.id, "cy"], {
    members: [
      { userId: ME.id, role: "admin", joinedAt: 1 },
      { userId: YOU.id, role: "member", joinedAt: 1 },
      { userId: "cy", role: "member", joinedAt: 1 },
    ],
    lastSeq: 1,
  });

  it("a rename and a promotion on the chat socket change the conversation as they arrive", async () => {
    const s = await startSignedIn({ path: "/c/g1", list: [group] });
    const chat = s.chatSocket("g1");
    chat.open();
    chat.deliver({ type: "ready", lastSeq: 1, protocolVersion: 13 });
    await settle();
    chat.deliver({ type: "message", message: system("g1", 2, YOU.id, { event: "renamed", title: "Renamed" }) });
    chat.deliver({ type: "message", message: system("g1", 3, ME.id, { event: "promoted", userIds: [YOU.id] }) });
    await settle();
    const conv = s.store.state.conversations.get("g1")!;
    expect(s.store.title(conv)).toBe("Renamed");
    expect(isAdmin(conv, YOU.id)).toBe(true);
    expect(conv.lastSeq).toBe(3);
  });

  it("an admin's rename, description and role change go to the server, and its answer is the state", async () => {
    const s = await startSignedIn({ list: [group] });
    const after = (extra: Partial<Conversation>) => ({ json: { conversation: { ...group, ...extra } } });
    s.browser.server
      .on("PATCH /conversations/g1", (req) => after({ title: "New name", description: "About", lastSeq: 3, ...(req.body as object) }))
      .on(`PUT /conversations/g1/members/${YOU.id}`, () =>
        after({ members: group.members.map((m) => (m.userId === YOU.id ? { ...m, role: "admin" as const } : m)), lastSeq: 4 }),
      );
    await s.store.updateGroupInfo("g1", { title: "New name", description: "About" });
    expect(s.browser.server.calls("PATCH /conversations/g1").map((r) => r.body)).toEqual([{ title: "New name", description: "About" }]);
    expect(s.store.state.conversations.get("g1")).toMatchObject({ title: "New name", description: "About" });
    await s.store.setRole("g1", YOU.id, "admin");
    expect(s.browser.server.calls(`PUT /conversations/g1/members/${YOU.id}`).map((r) => r.body)).toEqual([{ role: "admin" }]);
    expect(isAdmin(s.store.state.conversations.get("g1")!, YOU.id)).toBe(true);
  });

  it("a refused change says why and changes nothing", async () => {
    const s = await startSignedIn({ list: [group] });
    s.browser.server.on("PATCH /conversations/g1", () => ({ status: 403, json: { error: { code: "forbidden", message: "only admins change the group's title and description" } } }));
    await expect(s.store.updateGroupInfo("g1", { title: "Nope" })).rejects.toThrow("only admins");
    expect(s.store.state.conversations.get("g1")?.title).toBe(group.title);
  });
});

describe("profile", () => {
  it("a new display name and photo replace the session's user, kept for the next start", async () => {
    const s = await startSignedIn();
    s.browser.server.on("PATCH /me", (req) => ({ json: { user: { ...ME, ...(req.body as { displayName?: string }), photoId: "photo1" } } }));
    await s.store.updateProfile({ displayName: "Me Myself", photo: "photo1" });
    expect(s.browser.server.calls("PATCH /me").map((r) => r.body)).toEqual([{ displayName: "Me Myself", photo: "photo1" }]);
    expect(s.store.state.session?.user).toMatchObject({ displayName: "Me Myself", photoId: "photo1" });
    expect(s.store.photoOf(ME.id)).toBe("photo1");
    const stored = JSON.parse(s.browser.storage.getItem("edge-chat:session") ?? "{}") as { user?: { displayName?: string; photoId?: string } };
    expect(stored.user).toMatchObject({ displayName: "Me Myself", photoId: "photo1" });
  });

  it("another user's new name and photo show after a list refresh", async () => {
    const s = await startSignedIn();
    expect(s.store.userName(YOU.id)).toBe("You There");
    const renamed = { ...user(YOU.id, "Yolanda"), photoId: "p9" };
    s.browser.server.on("GET /users", () => ({ json: { users: [renamed] } }));
    await s.store.chats.refreshList();
    await settle();
    expect(s.store.userName(YOU.id)).toBe("Yolanda");
    expect(s.store.photoOf(YOU.id)).toBe("p9");
  });
});
