// A user's presence as their object stores it, and the debounce it supports: a status is
// published once it has held for the window, so a flap shorter than the window publishes nothing.
import { describe, expect, it } from "vitest";
import { PresenceStore, type Status } from "../../../durable-objects/user/presenceState";
import { migrate } from "../../../durable-objects/lib/migrate";
import { USER_MIGRATIONS } from "../../../durable-objects/user/schema";
import { memorySql } from "../support/sql";

const WINDOW = 3000;

function presenceStore() {
  const sql = memorySql();
  migrate(sql, USER_MIGRATIONS);
  return { sql, presence: new PresenceStore(sql) };
}

/** The user object's alarm at `now`: publishes a status that has held for the window. */
function alarm(presence: PresenceStore, now: number): Status | null {
  return presence.publishDue(now, WINDOW)?.status ?? null;
}

/** When the alarm is due for presence, or null. */
function due(presence: PresenceStore): number | null {
  return presence.nextPublishAt(WINDOW);
}

/** What the alarm publishes, and when, as the statuses change at the given times. */
function publishedDuring(events: [number, Status][]): [number, Status][] {
  const { presence } = presenceStore();
  const published: [number, Status][] = [];
  const runAlarmBefore = (t: number) => {
    const at = due(presence);
    const status = at !== null && at < t ? alarm(presence, at) : null;
    if (status) published.push([at!, status]);
  };
  for (const [at, status] of events) {
    runAlarmBefore(at);
    presence.update(status, at);
  }
  runAlarmBefore(Number.POSITIVE_INFINITY);
  return published;
}

describe("presence debounce", () => {
  it.each<[string, [number, Status][], [number, Status][]]>([
    ["coming online is published after the window", [[0, "online"]], [[3000, "online"]]],
    ["a first visit shorter than the window publishes nothing", [[0, "online"], [1000, "offline"]], []],
    ["an offline-online flap shorter than the window publishes nothing", [[0, "online"], [10_000, "offline"], [11_000, "online"]], [[3000, "online"]]],
    ["going offline for longer is published", [[0, "online"], [10_000, "offline"]], [[3000, "online"], [13_000, "offline"]]],
    [
      "the window runs from the last change",
      [[0, "online"], [10_000, "offline"], [10_500, "online"], [11_000, "offline"]],
      [[3000, "online"], [14_000, "offline"]],
    ],
    [
      "repeated flaps publish nothing",
      [[0, "online"], [5000, "offline"], [6000, "online"], [7000, "offline"], [8000, "online"], [9000, "offline"], [9500, "online"]],
      [[3000, "online"]],
    ],
  ])("%s", (_, events, published) => {
    expect(publishedDuring(events)).toEqual(published);
  });
});

describe("presence debounce, the alarm", () => {
  it("publishes nothing when it runs before the window has passed (for a keep-alive expiry)", () => {
    const { presence } = presenceStore();
    presence.update("online", 0);
    expect(alarm(presence, WINDOW - 1)).toBeNull();
    expect(alarm(presence, WINDOW)).toBe("online");
    expect([alarm(presence, WINDOW * 2), due(presence)]).toEqual([null, null]);
  });
});

describe("PresenceStore", () => {
  it("knows nothing before the first update", () => {
    expect(presenceStore().presence.get()).toBeNull();
  });

  it("records each change with its time, keeps what was published, and ignores a repeat", () => {
    const { presence } = presenceStore();
    expect(presence.update("online", 100)).toEqual({ status: "online", lastSeen: null, changedAt: 100, publishedStatus: "offline" });
    expect(presence.update("online", 200)).toMatchObject({ changedAt: 100 });
    presence.markPublished(presence.get()!);
    expect(presence.update("offline", 300)).toEqual({ status: "offline", lastSeen: 300, changedAt: 300, publishedStatus: "online" });
    expect(presence.update("offline", 400)).toMatchObject({ lastSeen: 300, changedAt: 300 });
    // Online again keeps the last time they went offline.
    expect(presence.update("online", 500)).toEqual({ status: "online", lastSeen: 300, changedAt: 500, publishedStatus: "online" });
    expect(presence.get()).toEqual({ status: "online", lastSeen: 300, changedAt: 500, publishedStatus: "online" });
  });

  it("keeps its state across a wake-up", () => {
    const { sql, presence } = presenceStore();
    presence.update("online", 100);
    presence.markPublished(presence.get()!);
    presence.update("offline", 200);
    presence.rememberUser("bob");
    const again = new PresenceStore(sql);
    expect(again.get()).toEqual({ status: "offline", lastSeen: 200, changedAt: 200, publishedStatus: "online" });
    expect(again.userId()).toBe("bob");
  });

  it("stores its owner's id once", () => {
    const { presence } = presenceStore();
    expect(presence.userId()).toBeNull();
    presence.rememberUser("bob");
    presence.rememberUser("mallory");
    expect(presence.userId()).toBe("bob");
  });
});
