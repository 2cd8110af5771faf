// Group settings and profiles through the real Worker, objects, D1 and R2 (docs/api.md "Group
// settings" and "Profile"): a group's title and description, members' roles, and a user's display
// name and photo. Each group change is a system message every member sees live and by `since=`
// sync, in order, and is current in GET /conversations/:id, the list and the user socket;
// permissions and bad input are refused with nothing changed. Registered by test/api.test.ts
// (each test file starts a runtime of its own).
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Conversation, Message, SystemEvent, User } from "../protocol";
import { d1Of, call, connect, direct, expectError, group, inD1, json, openConversation, PNG, register, syncAll, unique, upload, waitFor, type Session } from "./helpers";

const patchGroup = (s: Session, id: string, body: unknown) => call(`/conversations/${id}`, { method: "PATCH", token: s.token, body });
const putRole = (s: Session, id: string, userId: string, body: unknown) =>
  call(`/conversations/${id}/members/${userId}`, { method: "PUT", token: s.token, body });
const patchMe = (s: Session, body: unknown) => call("/me", { method: "PATCH", token: s.token, body });

const viewOf = async (s: Session, id: string) => (await json<{ conversation: Conversation }>(`/conversations/${id}`, { token: s.token })).conversation;
const listed = async (s: Session, id: string) =>
  (await json<{ conversations: Conversation[] }>("/conversations", { token: s.token })).conversations.find((c) => c.id === id);
const roleOf = (c: Conversation | undefined, userId: string) => c?.members.find((m) => m.userId === userId)?.role;

const systemEvent = (m: Message) => JSON.parse(m.body!) as SystemEvent;
const systemEventsIn = (messages: Message[]) => messages.filter((m) => m.kind === "system").map((m) => ({ seq: m.seq, ...systemEvent(m) }));

export function groupInfoTests(): void {
  describe("group settings", () => {
    it("an admin renames a group and sets its description: system messages live and by sync, in order, and the fields everywhere", async () => {
      const [ann, bob] = [await register(unique("ann")), await register(unique("bob"))];
      const g = await group(ann, [bob], "Hikers");
      const bobChat = await openConversation(bob, g.id);
      const bobUser = await connect("/ws", bob.token);
      await bobUser.next("ready");

      const renamed = await json<{ conversation: Conversation }>(`/conversations/${g.id}`, { method: "PATCH", token: ann.token, body: { title: "  Hill walkers " } });
      expect(renamed.conversation).toMatchObject({ title: "Hill walkers", description: null });
      const described = await json<{ conversation: Conversation }>(`/conversations/${g.id}`, {
        method: "PATCH",
        token: ann.token,
        body: { description: "Sundays, weather permitting" },
      });
      expect(described.conversation).toMatchObject({ title: "Hill walkers", description: "Sundays, weather permitting" });

      // Live on the conversation socket, in order, after the `created` message.
      await bobChat.until((f) => f.filter((x) => x.type === "message" && x.message?.kind === "system").length >= 2, "two system messages");
      const live = systemEventsIn(bobChat.messages());
      expect(live).toEqual([
        { seq: 2, event: "renamed", actorId: ann.user.id, userIds: [], title: "Hill walkers" },
        { seq: 3, event: "descriptionChanged", actorId: ann.user.id, userIds: [], description: "Sundays, weather permitting" },
      ]);
      // The user socket's conversation frame carries the fields as they are now.
      const frame = await bobUser.next("conversation", (f) => (f.conversation as Conversation).description === "Sundays, weather permitting");
      expect(frame.conversation).toMatchObject({ id: g.id, title: "Hill walkers" });

      // Current for the other member in the object's view and in the D1 list.
      expect(await viewOf(bob, g.id)).toMatchObject({ title: "Hill walkers", description: "Sundays, weather permitting" });
      await inD1(g.id);
      expect(await listed(bob, g.id)).toMatchObject({ title: "Hill walkers", description: "Sundays, weather permitting" });

      // A device that was away gets the same events by sync, in order.
      const synced = systemEventsIn((await syncAll(bob)).filter((m) => m.conversationId === g.id));
      expect(synced.map((e) => [e.seq, e.event])).toEqual([
        [1, "created"],
        [2, "renamed"],
        [3, "descriptionChanged"],
      ]);

      // The same value again changes nothing; an empty description removes it.
      const same = await json<{ conversation: Conversation }>(`/conversations/${g.id}`, { method: "PATCH", token: ann.token, body: { title: "Hill walkers" } });
      expect(same.conversation.lastSeq).toBe(3);
      const cleared = await json<{ conversation: Conversation }>(`/conversations/${g.id}`, { method: "PATCH", token: ann.token, body: { description: "" } });
      expect(cleared.conversation).toMatchObject({ description: null, lastSeq: 4 });
      await bobChat.until((f) => f.some((x) => x.message?.seq === 4), "the description removed");
      expect(systemEvent(bobChat.messages().find((m) => m.seq === 4)!)).toMatchObject({ event: "descriptionChanged", description: null });
      bobChat.close();
      bobUser.close();
    });

    it("only admins change the title and description; a stranger gets 404 and a direct conversation 400, nothing changed", async () => {
      const [ann, bob, eve] = [await register(unique("ann")), await register(unique("bob")), await register(unique("eve"))];
      const g = await group(ann, [bob], "Book club");
      await expectError(await patchGroup(bob, g.id, { title: "Mine now" }), 403, "forbidden");
      await expectError(await patchGroup(eve, g.id, { title: "Mine now" }), 404, "not_found");
      await expectError(await patchGroup(ann, "no-such-conversation", { title: "x" }), 404, "not_found");
      const d = await direct(ann, bob);
      await expectError(await patchGroup(ann, d.id, { title: "Us" }), 400, "bad_request");
      const view = await viewOf(ann, g.id);
      expect(view).toMatchObject({ title: "Book club", description: null, lastSeq: 1 });
      expect((await viewOf(ann, d.id)).description).toBeUndefined();
    });

    it.each([
      ["no field", {}],
      ["an empty title", { title: "   " }],
      ["a title over 100 characters", { title: "x".repeat(101) }],
      ["a description over 500 characters", { description: "x".repeat(501) }],
      ["a lone surrogate", { title: "\ud800" }],
      ["an unknown field", { title: "ok", colour: "red" }],
      ["a title that is not a string", { title: 7 }],
    ])("refuses %s with 400, nothing changed", async (_, body) => {
      const [ann, bob] = [await register(unique("ann")), await register(unique("bob"))];
      const g = await group(ann, [bob], "Unchanged");
      await expectError(await patchGroup(ann, g.id, body), 400, "bad_request");
      expect(await viewOf(ann, g.id)).toMatchObject({ title: "Unchanged", description: null, lastSeq: 1 });
    });

    it("an admin promotes and demotes members: system messages live and by sync, roles current in the view, the list and the user socket", async () => {
      const [ann, bob, cy] = [await register(unique("ann")), await register(unique("bob")), await register(unique("cy"))];
      const g = await group(ann, [bob, cy], "Team");
      const cyChat = await openConversation(cy, g.id);
      const cyUser = await connect("/ws", cy.token);
      await cyUser.next("ready");

      const promoted = await json<{ conversation: Conversation }>(`/conversations/${g.id}/members/${bob.user.id}`, { method: "PUT", token: ann.token, body: { role: "admin" } });
      expect(roleOf(promoted.conversation, bob.user.id)).toBe("admin");
      // Bob, now an admin, may rename and change roles too.
      expect((await patchGroup(bob, g.id, { title: "Team B" })).status).toBe(200);
      const demoted = await json<{ conversation: Conversation }>(`/conversations/${g.id}/members/${ann.user.id}`, { method: "PUT", token: bob.token, body: { role: "member" } });
      expect(roleOf(demoted.conversation, ann.user.id)).toBe("member");

      await cyChat.until((f) => f.filter((x) => x.message?.kind === "system").length >= 3, "three system messages");
      expect(systemEventsIn(cyChat.messages()).map(({ seq, event, actorId, userIds }) => ({ seq, event, actorId, userIds }))).toEqual([
        { seq: 2, event: "promoted", actorId: ann.user.id, userIds: [bob.user.id] },
        { seq: 3, event: "renamed", actorId: bob.user.id, userIds: [] },
        { seq: 4, event: "demoted", actorId: bob.user.id, userIds: [ann.user.id] },
      ]);
      const frame = await cyUser.next("conversation", (f) => roleOf(f.conversation as Conversation, ann.user.id) === "member");
      expect(roleOf(frame.conversation as Conversation, bob.user.id)).toBe("admin");

      const synced = systemEventsIn((await syncAll(cy)).filter((m) => m.conversationId === g.id));
      expect(synced.map((e) => e.event)).toEqual(["created", "promoted", "renamed", "demoted"]);
      expect(roleOf(await viewOf(cy, g.id), bob.user.id)).toBe("admin");
      await inD1(g.id);
      const row = await listed(cy, g.id);
      expect([roleOf(row, ann.user.id), roleOf(row, bob.user.id), roleOf(row, cy.user.id)]).toEqual(["member", "admin", "member"]);

      // Ann is no admin any more: she may change nothing.
      await expectError(await putRole(ann, g.id, cy.user.id, { role: "admin" }), 403, "forbidden");
      await expectError(await patchGroup(ann, g.id, { title: "Back" }), 403, "forbidden");
      cyChat.close();
      cyUser.close();
    });

    it("in an E2EE group the title and description are server metadata: changed by an admin, in plain text in the system messages", async () => {
      const [ann, bob] = [await register(unique("ann")), await register(unique("bob"))];
      const g = (await json<{ conversation: Conversation }>("/group/create", { token: ann.token, body: { title: "Secret", memberIds: [bob.user.id], e2ee: true } }, 201)).conversation;
      const { conversation } = await json<{ conversation: Conversation }>(`/conversations/${g.id}`, { method: "PATCH", token: ann.token, body: { title: "Still secret", description: "Not encrypted" } });
      expect(conversation).toMatchObject({ e2ee: true, title: "Still secret", description: "Not encrypted" });
      expect((await putRole(ann, g.id, bob.user.id, { role: "admin" })).status).toBe(200);
      const events = systemEventsIn((await syncAll(bob)).filter((m) => m.conversationId === g.id));
      expect(events.map((e) => [e.event, e.title ?? e.description ?? null])).toEqual([
        ["created", null],
        ["renamed", "Still secret"],
        ["descriptionChanged", "Not encrypted"],
        ["promoted", null],
      ]);
    });

    it("the last admin cannot be demoted (409); a member cannot change roles (403); nothing changed", async () => {
      const [ann, bob, eve] = [await register(unique("ann")), await register(unique("bob")), await register(unique("eve"))];
      const g = await group(ann, [bob], "Solo admin");
      await expectError(await putRole(ann, g.id, ann.user.id, { role: "member" }), 409, "conflict");
      await expectError(await putRole(bob, g.id, bob.user.id, { role: "admin" }), 403, "forbidden");
      await expectError(await putRole(bob, g.id, ann.user.id, { role: "member" }), 403, "forbidden");
      await expectError(await putRole(eve, g.id, bob.user.id, { role: "admin" }), 404, "not_found");
      await expectError(await putRole(ann, g.id, eve.user.id, { role: "admin" }), 404, "not_found");
      for (const body of [{}, { role: "owner" }, { role: "admin", extra: 1 }, { role: null }]) {
        await expectError(await putRole(ann, g.id, bob.user.id, body), 400, "bad_request");
      }
      const d = await direct(ann, bob);
      await expectError(await putRole(ann, d.id, bob.user.id, { role: "admin" }), 400, "bad_request");
      const view = await viewOf(ann, g.id);
      expect([roleOf(view, ann.user.id), roleOf(view, bob.user.id), view.lastSeq]).toEqual(["admin", "member", 1]);

      // The same role again stores nothing; with a second admin the first may step down.
      const same = await json<{ conversation: Conversation }>(`/conversations/${g.id}/members/${ann.user.id}`, { method: "PUT", token: ann.token, body: { role: "admin" } });
      expect(same.conversation.lastSeq).toBe(1);
      expect((await putRole(ann, g.id, bob.user.id, { role: "admin" })).status).toBe(200);
      expect((await putRole(ann, g.id, ann.user.id, { role: "member" })).status).toBe(200);
      expect(roleOf(await viewOf(bob, g.id), ann.user.id)).toBe("member");
    });
  });

  describe("profile", () => {
    it("a display name and a photo set by PATCH /me: another user sees both and can load the photo", async () => {
      const [ann, bob] = [await register(unique("ann")), await register(unique("bob"))];
      const photo = await upload(ann, PNG, "image/png", "me.png");
      const { user } = await json<{ user: User }>("/me", { method: "PATCH", token: ann.token, body: { displayName: "  Ann Adams ", photo } });
      expect(user).toMatchObject({ id: ann.user.id, displayName: "Ann Adams", photoId: photo });
      expect((await json<{ user: User }>("/me", { token: ann.token })).user).toMatchObject({ displayName: "Ann Adams", photoId: photo });

      // Bob shares no conversation with Ann, and still sees her as she is now, photo included.
      const seen = (await json<{ users: User[] }>(`/users?ids=${ann.user.id}`, { token: bob.token })).users[0];
      expect(seen).toMatchObject({ displayName: "Ann Adams", photoId: photo });
      expect((await json<{ user: User }>(`/users/${ann.user.id}`, { token: bob.token })).user.photoId).toBe(photo);
      const info = await json<{ media: { url: string; contentType: string } }>(`/media/${photo}/info`, { token: bob.token });
      expect(info.media.contentType).toBe("image/png");
      const bytes = await call(new URL(info.media.url).pathname + new URL(info.media.url).search);
      expect(bytes.status).toBe(200);
      expect(new Uint8Array(await bytes.arrayBuffer())).toEqual(PNG);

      // Removed: the user has no photo, and the item is Ann's alone again.
      const removed = await json<{ user: User }>("/me", { method: "PATCH", token: ann.token, body: { photo: null } });
      expect(removed.user.photoId).toBeUndefined();
      expect(removed.user.displayName).toBe("Ann Adams");
      await expectError(await call(`/media/${photo}/info`, { token: bob.token }), 404, "not_found");
    });

    it("refuses a photo that is not the caller's image, and ill-formed input, with 400 and nothing changed", async () => {
      const [ann, bob] = [await register(unique("ann")), await register(unique("bob"))];
      const bobsPhoto = await upload(bob, PNG, "image/png", "bob.png");
      const pdf = await upload(ann, new TextEncoder().encode("%PDF-1.4\n%\u00e2\u00e3\n1 0 obj\n<<>>\nendobj\n"), "application/pdf", "doc.pdf");
      const own = await upload(ann, PNG, "image/png", "ann.png");
      expect((await patchMe(ann, { photo: own })).status).toBe(200);
      for (const body of [
        { photo: "no-such-media" },
        { photo: bobsPhoto },
        { photo: pdf },
        {},
        { displayName: "" },
        { displayName: "x".repeat(65) },
        { displayName: "ok", username: "renamed" },
        { photo: 12 },
      ]) {
        await expectError(await patchMe(ann, body), 400, "bad_request");
      }
      const { user } = await json<{ user: User }>("/me", { token: ann.token });
      expect(user).toMatchObject({ displayName: ann.user.displayName, photoId: own });
      await expectError(await call("/me", { method: "PATCH", body: { displayName: "x" } }), 401, "unauthorized");
    });

    it("a photo also sent in a message survives that message's deletion for everyone", async () => {
      const [ann, bob] = [await register(unique("ann")), await register(unique("bob"))];
      const photo = await upload(ann, PNG, "image/png", "shared.png");
      expect((await patchMe(ann, { photo })).status).toBe(200);
      const d = await direct(ann, bob);
      const sent = await json<{ message: Message }>("/send", { token: ann.token, body: { conversationId: d.id, clientMsgId: unique("m"), mediaIds: [photo] } }, 201);
      const del = await call(`/conversations/${d.id}/actions`, { token: ann.token, body: { clientMsgId: unique("a"), action: { type: "delete", targetSeq: sent.message.seq } } });
      expect(del.status).toBe(201);
      await inD1(d.id);
      // The share is gone; the photo stays, loadable by others.
      await waitFor(async () => (await d1Of(photo).prepare("SELECT count(*) AS n FROM media_shares WHERE media_id = ?").bind(photo).first<{ n: number }>())?.n === 0, "the share removed");
      expect((await call(`/media/${photo}/info`, { token: bob.token })).status).toBe(200);
    });
  });
}
