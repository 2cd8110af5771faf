// Which members the fan-out may skip: those whose object answered with devices that all hold a
// live dedupe socket here, while the answer holds and no device came online since.
import { describe, expect, it } from "vitest";
import { QUIET_HINT_MS, type DeliveryAnswer } from "../../../durable-objects/contract";
import { QuietMembers, type LiveCopy } from "../../../durable-objects/conversation/quiet";

const T = 1_000_000;
const answer = (devices: string[], epoch = 1): DeliveryAnswer => ({ devices, epoch });

describe("QuietMembers", () => {
  it("holds an answer for QUIET_HINT_MS after the call", () => {
    const quiet = new QuietMembers(0);
    quiet.answered("bob", answer(["phone", "laptop"], 3), T);
    expect(quiet.answerFor("bob", T + QUIET_HINT_MS - 1)).toEqual({ devices: ["phone", "laptop"], epoch: 3, until: T + QUIET_HINT_MS, watched: true });
    expect(quiet.answerFor("bob", T + QUIET_HINT_MS)).toBeNull();
    expect(quiet.answerFor("alice", T)).toBeNull();
  });

  it.each([
    ["no answer", null],
    ["an undefined answer", undefined],
    ["no device online", answer([])],
  ])("forgets the previous answer on %s", (_, next) => {
    const quiet = new QuietMembers(0);
    quiet.answered("bob", answer(["phone"]), T);
    quiet.answered("bob", next, T + 1);
    expect(quiet.answerFor("bob", T + 1)).toBeNull();
  });

  it.each([
    ["an answer older than the announced epoch is ignored", 5, 4, false],
    ["an answer of the announced epoch is taken", 5, 5, true],
    ["an answer of a later epoch is taken", 5, 6, true],
  ])("%s", (_, announced, answered, taken) => {
    const quiet = new QuietMembers(0);
    quiet.memberOnline("bob", announced);
    quiet.answered("bob", answer(["phone"], answered), T);
    expect(quiet.answerFor("bob", T) !== null).toBe(taken);
  });

  it.each([
    ["a later epoch forgets it", 4, false],
    ["the same epoch keeps it", 3, true],
    ["an earlier epoch keeps it", 2, true],
  ])("a device coming online: %s", (_, epoch, kept) => {
    const quiet = new QuietMembers(0);
    quiet.answered("bob", answer(["phone"], 3), T);
    quiet.memberOnline("bob", epoch);
    expect(quiet.answerFor("bob", T) !== null).toBe(kept);
    // The epoch known never goes back: an answer below the highest announced stays ignored.
    quiet.memberOnline("bob", 1);
    quiet.answered("bob", answer(["phone"], epoch - 1), T);
    expect(quiet.answerFor("bob", T)).toBeNull();
  });

  it("keeps the answer to the latest call when an earlier call's answer is reported after it", () => {
    const quiet = new QuietMembers(0);
    quiet.answered("bob", { ...answer(["phone"]), watched: true }, T + 10);
    quiet.answered("bob", { ...answer(["phone"]), watched: false }, T);
    quiet.answered("bob", null, T + 5);
    expect(quiet.answerFor("bob", T + 10)).toEqual({ devices: ["phone"], epoch: 1, until: T + 10 + QUIET_HINT_MS, watched: true });
    quiet.answered("bob", null, T + 10);
    expect(quiet.answerFor("bob", T + 10)).toBeNull();
  });

  describe("covers", () => {
    const copy = (after: number, order = 0): LiveCopy => ({ after, order });
    // bob's object named phone and laptop at T; the pass sends messages from seq 10.
    it.each<[string, Record<string, LiveCopy> | undefined, number[], number, boolean]>([
      ["every named device got the messages live", { phone: copy(9), laptop: copy(3) }, [], T, true],
      ["a device of the answer holds no dedupe socket", { phone: copy(9) }, [], T, false],
      ["no dedupe socket at all", undefined, [], T, false],
      ["a socket opened after the first message", { phone: copy(9), laptop: copy(10) }, [], T, false],
      ["every socket was open for each receipt", { phone: copy(9, 2), laptop: copy(9, 5) }, [5, 7], T, true],
      ["a socket opened after a receipt went out", { phone: copy(9, 2), laptop: copy(9, 6) }, [5, 7], T, false],
      ["an extra device that the answer did not name does not matter", { phone: copy(9), laptop: copy(9), tablet: copy(50) }, [], T, true],
      ["the answer has lapsed", { phone: copy(9), laptop: copy(9) }, [], T + QUIET_HINT_MS, false],
    ])("%s: %s", (_, copies, receiptOrders, now, covered) => {
      const quiet = new QuietMembers(0);
      quiet.answered("bob", answer(["phone", "laptop"]), T);
      expect(quiet.covers("bob", copies, 10, receiptOrders, now)).toBe(covered);
    });

    it("is true only on an answer that says the object watches the conversation (or, from an earlier object, says nothing)", () => {
      const copies = { phone: copy(9), laptop: copy(9) };
      for (const [watched, covered] of [[true, true], [undefined, true], [false, false]] as const) {
        const quiet = new QuietMembers(0);
        quiet.answered("bob", { ...answer(["phone", "laptop"]), ...(watched === undefined ? {} : { watched }) }, T);
        expect(quiet.covers("bob", copies, 10, [], T)).toBe(covered);
      }
    });

    it("is false for a member whose object never answered", () => {
      expect(new QuietMembers(0).covers("bob", { phone: copy(0) }, 10, [], T)).toBe(false);
    });
  });

  describe("reported answers (queued fan-out)", () => {
    it("takes answers to calls made since this wake-up began, holding each from when it was asked", () => {
      const quiet = new QuietMembers(T);
      quiet.reported({ bob: answer(["phone"]), carol: answer(["tablet"]), dave: null }, T + 100);
      expect(quiet.answerFor("bob", T + 100)?.until).toBe(T + 100 + QUIET_HINT_MS);
      expect(quiet.answerFor("carol", T + 100)?.devices).toEqual(["tablet"]);
      expect(quiet.answerFor("dave", T + 100)).toBeNull();
    });

    it("ignores answers to calls made before this wake-up: the epochs announced since are lost", () => {
      const quiet = new QuietMembers(T);
      quiet.reported({ bob: answer(["phone"]) }, T - 1);
      expect(quiet.answerFor("bob", T)).toBeNull();
    });

    it("ignores a report older than a device that came online since", () => {
      const quiet = new QuietMembers(T);
      quiet.memberOnline("bob", 2);
      quiet.reported({ bob: answer(["phone"], 1) }, T + 5);
      expect(quiet.answerFor("bob", T + 5)).toBeNull();
    });
  });
});
