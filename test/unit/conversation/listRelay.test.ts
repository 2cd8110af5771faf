// Membership notices for the users' conversation lists: queued with the change for exactly the
// users whose membership changed, sent until each user's object took its own, the latest change
// of a user replacing an unsent one.
import { describe, expect, it } from "vitest";
import { migrate } from "../../../durable-objects/lib/migrate";
import { LIST_RELAY_MIGRATIONS, LIST_RELAY_MIGRATIONS_TRACK, ListRelay } from "../../../durable-objects/conversation/listRelay";
import type { ListNotice } from "../../../durable-objects/contract";
import { ConversationHarness, expectOk, identity } from "../support/conversation";

function setup() {
  const h = new ConversationHarness();
  migrate(h.sql, LIST_RELAY_MIGRATIONS, LIST_RELAY_MIGRATIONS_TRACK);
  const told: Array<{ userId: string; notice: ListNotice }> = [];
  const down = new Set<string>();
  const relay = new ListRelay(h.sql, h.store, (userId) => ({
    listMembership: async (to, notices) => {
      if (down.has(userId)) throw new Error(`${userId}'s object is unreachable`);
      for (const notice of notices) told.push({ userId: to, notice });
    },
  }));
  const members = () => new Set(h.store.members.keys());
  return { h, relay, told, down, members };
}

describe("list relay", () => {
  it("tells every member of a new conversation, then the added and the removed ones only", async () => {
    const { h, relay, told, members } = setup();
    let before = members();
    h.group("alice", ["bob"]);
    expect(relay.changed(before)).toBe(2);
    expect(await relay.send()).toBe(true);
    const createdAt = h.clock.now();
    expect(told.map((t) => t.userId).sort()).toEqual(["alice", "bob"]);
    expect(told[0]!.notice).toEqual({ conversationId: "c1", joinedSeq: 1, leftSeq: null, at: createdAt, version: 1 });
    told.length = 0;

    h.clock.advance(1000);
    before = members();
    expectOk(h.conversation.addMembers(identity("alice"), ["carol", "bob"], h.clock.now()));
    expect(relay.changed(before)).toBe(1);
    await relay.send();
    expect(told).toEqual([{ userId: "carol", notice: { conversationId: "c1", joinedSeq: 2, leftSeq: null, at: h.clock.now(), version: 2 } }]);
    told.length = 0;

    h.clock.advance(1000);
    before = members();
    expectOk(h.conversation.removeMember(identity("bob"), "bob", h.clock.now()));
    expect(relay.changed(before)).toBe(1);
    await relay.send();
    expect(told).toEqual([{ userId: "bob", notice: { conversationId: "c1", joinedSeq: 1, leftSeq: 3, at: h.clock.now(), version: 3 } }]);
    expect(relay.pending()).toBe(0);
  });

  it("keeps what a user's object did not take and sends it again, the latest change of that user only", async () => {
    const { h, relay, told, down, members } = setup();
    h.group("alice", ["bob"]);
    relay.changed(new Set());
    down.add("bob");
    expect(await relay.send()).toBe(false);
    expect(relay.failures).toBe(1);
    expect(relay.pending()).toBe(1);
    // Removed while the first notice waits: only the removal is owed now.
    const before = members();
    expectOk(h.conversation.removeMember(identity("alice"), "bob", h.clock.now()));
    relay.changed(before);
    expect(await relay.send()).toBe(false);
    down.delete("bob");
    expect(await relay.send()).toBe(true);
    expect(relay.failures).toBe(0);
    expect(told.filter((t) => t.userId === "bob").map((t) => t.notice)).toEqual([{ conversationId: "c1", joinedSeq: 1, leftSeq: 2, at: h.clock.now(), version: 2 }]);
    expect(relay.pending()).toBe(0);
    // Nothing owed, nothing sent.
    expect(await relay.send()).toBe(true);
    expect(told.filter((t) => t.userId === "bob")).toHaveLength(1);
  });
});
