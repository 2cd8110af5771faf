// Receipts (watermarks, who is told) and typing (relayed on a change, lapsing without a refresh).
import { describe, expect, it } from "vitest";
import { TYPING_LAPSE_MS } from "../../../durable-objects/conversation/conversation";
import { ConversationHarness, expectFailure, expectOk } from "../support/conversation";
import { framesOf, takeFrames } from "../support/sockets";

/**
 * alice (admin), bob and carol; seq 1 is alice's "created" message, then 2 by bob, 3 by carol,
 * 4 by alice and 5 by bob.
 */
function fiveMessages(): ConversationHarness {
  const h = new ConversationHarness();
  h.group("alice", ["bob", "carol"]);
  for (const sender of ["bob", "carol", "alice", "bob"]) h.sendMany(sender, 1, `${sender}-${h.store.requireMeta().lastSeq}`);
  return h;
}

type Mark = ["read" | "delivered", number];

describe("receipts", () => {
  it.each<[string, Mark[], [number, number]]>([
    ["read implies delivered", [["read", 3]], [3, 3]],
    ["a lower delivered or read is ignored", [["read", 3], ["delivered", 2], ["read", 1]], [3, 3]],
    ["read below delivered keeps delivered", [["delivered", 4], ["read", 2]], [4, 2]],
    ["read above delivered moves both", [["delivered", 4], ["read", 2], ["read", 5]], [5, 5]],
    ["delivered moves only delivered", [["delivered", 5], ["delivered", 3]], [5, 0]],
    ["seq 0 changes nothing", [["read", 0]], [0, 0]],
  ])("%s: %j ends at [delivered, read] %j and never moves back", (_, marks, [delivered, read]) => {
    const h = fiveMessages();
    let last = { deliveredSeq: 0, readSeq: 0 };
    for (const [type, seq] of marks) {
      const { receipt } = expectOk(type === "read" ? h.read("bob", seq) : h.delivered("bob", seq));
      expect(receipt.deliveredSeq).toBeGreaterThanOrEqual(Math.max(last.deliveredSeq, receipt.readSeq));
      expect(receipt.readSeq).toBeGreaterThanOrEqual(last.readSeq);
      last = receipt;
    }
    expect(last).toMatchObject({ deliveredSeq: delivered, readSeq: read });
    // Stored, not only remembered.
    h.reopen();
    expect(expectOk(h.conversation.receipts("alice")).receipts.find((r) => r.userId === "bob")).toMatchObject(last);
  });

  it.each(["read", "delivered"] as const)("refuses %s above lastSeq (400) and stores nothing", (type) => {
    const h = fiveMessages();
    const mark = type === "read" ? h.read.bind(h) : h.delivered.bind(h);
    expectFailure(mark("bob", 6), "bad_request");
    expect(h.notified).toEqual([]);
    expect(expectOk(mark("bob", 5)).receipt).toMatchObject({ deliveredSeq: 5 });
  });

  it("sends a change to every socket, the reader's own included, and asks for the deferred pass", () => {
    const h = fiveMessages();
    const sockets = [h.room.connect("bob"), h.room.connect("alice"), h.room.connect("carol")];
    const deferred = h.deferred;
    h.clock.advance(7);
    const { receipt } = expectOk(h.read("bob", 3));
    expect(receipt).toEqual({ userId: "bob", deliveredSeq: 3, readSeq: 3, updatedAt: h.clock.now() });
    for (const ws of sockets) expect(ws.frames).toEqual([{ type: "receipt", ...receipt }]);
    expect(h.deferred).toBe(deferred + 1);
  });

  it("answers a mark that moves nothing with the stored receipt, telling nobody", () => {
    const h = fiveMessages();
    const stored = expectOk(h.read("bob", 3)).receipt;
    const socket = h.room.connect("alice");
    const [deferred, notified] = [h.deferred, h.notified.length];
    h.clock.advance(1000);
    for (const result of [h.read("bob", 2), h.delivered("bob", 3), h.read("bob", 3)]) expect(expectOk(result).receipt).toEqual(stored);
    expect([h.deferred, h.notified.length, socket.frames]).toEqual([deferred, notified, []]);
  });

  // Who is told: the reader (their other devices) and the senders of the messages just passed,
  // never the system messages' actor for those alone.
  it.each<[string, string, Mark[], string[]]>([
    ["the senders of the messages read", "carol", [["read", 2]], ["bob", "carol"]],
    ["everyone whose message was delivered, not the reader twice", "carol", [["delivered", 5]], ["alice", "bob", "carol"]],
    ["only senders the watermark newly passed", "carol", [["read", 2], ["read", 4]], ["alice", "carol"]],
    ["nobody else for a system message", "bob", [["read", 1]], ["bob"]],
    ["the reader alone for their own message", "carol", [["read", 2], ["read", 3]], ["carol"]],
    ["only the senders a read passed, when delivered was already ahead", "carol", [["delivered", 5], ["read", 2]], ["bob", "carol"]],
  ])("a receipt tells %s", (_, reader, marks, expected) => {
    const h = fiveMessages();
    for (const [type, seq] of marks) expectOk(type === "read" ? h.read(reader, seq) : h.delivered(reader, seq));
    const last = h.notified.at(-1)!;
    expect(last.userIds[0]).toBe(reader);
    expect([...last.userIds].sort()).toEqual(expected);
    expect(last.receipt.userId).toBe(reader);
    expect(h.notified).toHaveLength(marks.length);
  });

  it.each([
    ["bob", 0, 0, 2],
    ["bob", 3, 3, 1],
    ["bob", 5, 5, 0],
    ["alice", 2, 2, 2],
  ])("shows %s, after reading %i, readSeq %i and unread %i (others' messages, system ones aside)", (reader, seq, readSeq, unread) => {
    const h = fiveMessages();
    if (seq > 0) expectOk(h.read(reader, seq));
    expect(expectOk(h.conversation.view(reader)).conversation).toMatchObject({ readSeq, unread, lastSeq: 5 });
  });

  it("lists one receipt per member, zero for those who sent none", () => {
    const h = fiveMessages();
    expectOk(h.read("bob", 4));
    const { receipts } = expectOk(h.conversation.receipts("carol"));
    expect(receipts.map((r) => [r.userId, r.deliveredSeq, r.readSeq]).sort()).toEqual([
      ["alice", 0, 0],
      ["bob", 4, 4],
      ["carol", 0, 0],
    ]);
  });
});

describe("typing", () => {
  /** alice and bob, each with a socket; bob has a second device. */
  function typists() {
    const h = new ConversationHarness();
    h.group("alice", ["bob"]);
    const alice = h.room.connect("alice");
    const bob = [h.room.connect("bob", "phone"), h.room.connect("bob", "laptop")];
    const relayed = () => takeFrames(alice, "typing").map((f) => [f.userId, f.on]);
    return { h, alice, bob, relayed, t0: h.clock.now() };
  }

  it("relays a start and a stop to the others, never to the typist's own devices", () => {
    const { h, bob, relayed, t0 } = typists();
    h.conversation.typing("bob", true, t0);
    expect(relayed()).toEqual([["bob", true]]);
    h.conversation.typing("bob", false, t0 + 1000);
    expect(relayed()).toEqual([["bob", false]]);
    for (const ws of bob) expect(framesOf(ws, "typing")).toEqual([]);
  });

  it.each<[string, [boolean, number][], unknown[][]]>([
    ["a refresh while typing relays nothing", [[true, 0], [true, 3000]], [["bob", true]]],
    ["a stop when not typing relays nothing", [[false, 0]], []],
    ["a second stop relays nothing", [[true, 0], [false, 100], [false, 200]], [["bob", true], ["bob", false]]],
    ["a start after a stop is relayed again", [[true, 0], [false, 100], [true, 200]], [["bob", true], ["bob", false], ["bob", true]]],
    ["a start after the lapse is relayed again", [[true, 0], [true, TYPING_LAPSE_MS]], [["bob", true], ["bob", true]]],
  ])("%s", (_, events, expected) => {
    const { h, relayed, t0 } = typists();
    for (const [on, at] of events) h.conversation.typing("bob", on, t0 + at);
    expect(relayed()).toEqual(expected);
  });

  it("asks to wake when each start or refresh would lapse", () => {
    const { h, t0 } = typists();
    h.conversation.typing("bob", true, t0);
    h.conversation.typing("bob", true, t0 + 2000);
    h.conversation.typing("bob", false, t0 + 3000);
    expect(h.wakes).toEqual([t0 + TYPING_LAPSE_MS, t0 + 2000 + TYPING_LAPSE_MS]);
  });

  it("lapses TYPING_LAPSE_MS after the last refresh, telling the others, and says when the next lapses", () => {
    const { h, bob, relayed, t0 } = typists();
    h.conversation.typing("bob", true, t0);
    h.conversation.typing("alice", true, t0 + 1000);
    h.conversation.typing("bob", true, t0 + 2000);
    relayed();
    expect(h.conversation.lapseTyping(t0 + TYPING_LAPSE_MS)).toBe(t0 + 1000 + TYPING_LAPSE_MS);
    expect(relayed()).toEqual([]);
    expect(h.conversation.lapseTyping(t0 + 1000 + TYPING_LAPSE_MS)).toBe(t0 + 2000 + TYPING_LAPSE_MS);
    expect(relayed()).toEqual([]);
    expect(framesOf(bob[0]!, "typing").map((f) => [f.userId, f.on])).toEqual([["alice", true], ["alice", false]]);
    expect(h.conversation.lapseTyping(t0 + 2000 + TYPING_LAPSE_MS - 1)).toBe(t0 + 2000 + TYPING_LAPSE_MS);
    expect(relayed()).toEqual([]);
    expect(h.conversation.lapseTyping(t0 + 2000 + TYPING_LAPSE_MS)).toBeNull();
    expect(relayed()).toEqual([["bob", false]]);
  });

  it("relays a stop that arrives after the lapse but before the alarm, and the alarm relays nothing more", () => {
    const { h, relayed, t0 } = typists();
    h.conversation.typing("bob", true, t0);
    relayed();
    h.conversation.typing("bob", false, t0 + TYPING_LAPSE_MS + 10);
    expect(h.conversation.lapseTyping(t0 + TYPING_LAPSE_MS + 20)).toBeNull();
    expect(relayed()).toEqual([["bob", false]]);
  });

  it("lapses after a new wake-up: who is typing is stored", () => {
    const { h, relayed, t0 } = typists();
    h.conversation.typing("bob", true, t0);
    relayed();
    h.reopen();
    expect(h.conversation.lapseTyping(t0 + TYPING_LAPSE_MS)).toBeNull();
    expect(relayed()).toEqual([["bob", false]]);
  });
});
