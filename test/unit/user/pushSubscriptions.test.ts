// The push subscriptions a user's object keeps: idempotent per endpoint, capped (the least
// recently subscribed goes first), removed one by one or with their device, and still there after
// a new wake-up.
import { afterEach, describe, expect, it } from "vitest";
import { migrate } from "../../../durable-objects/lib/migrate";
import { PUSH_MIGRATIONS, PUSH_MIGRATIONS_TRACK, PushSubscriptions, type PushSubscriptionRecord } from "../../../durable-objects/user/pushSubscriptions";
import { userSql } from "../support/user";

const closers: Array<() => void> = [];
afterEach(() => closers.splice(0).forEach((close) => close()));

function setup(max = 3) {
  const sql = userSql();
  closers.push(() => sql.close());
  migrate(sql, PUSH_MIGRATIONS, PUSH_MIGRATIONS_TRACK);
  return { sql, subscriptions: new PushSubscriptions(sql, max) };
}

const record = (endpoint: string, deviceId: string, createdAt: number, p256dh = "key"): PushSubscriptionRecord => ({
  endpoint: `https://push.example.test/${endpoint}`,
  deviceId,
  p256dh,
  auth: "secret",
  createdAt,
});

describe("PushSubscriptions", () => {
  it("keeps one subscription per endpoint, the latest device and keys winning, and finds it by endpoint", () => {
    const { sql, subscriptions } = setup();
    subscriptions.subscribe(record("a", "laptop", 1));
    subscriptions.subscribe(record("a", "phone", 2, "new key"));
    expect(subscriptions.records()).toEqual([record("a", "phone", 2, "new key")]);
    expect(subscriptions.find("https://push.example.test/a")).toEqual({ endpoint: "https://push.example.test/a", p256dh: "new key", auth: "secret" });
    expect(subscriptions.find("https://push.example.test/b")).toBeNull();
    expect(new PushSubscriptions(sql, 3).all()).toEqual([{ endpoint: "https://push.example.test/a", p256dh: "new key", auth: "secret" }]);
  });

  it("drops the least recently subscribed beyond the cap, a renewal counting as recent", () => {
    const { subscriptions } = setup(3);
    subscriptions.subscribe(record("a", "d1", 1));
    subscriptions.subscribe(record("b", "d1", 2));
    subscriptions.subscribe(record("c", "d1", 3));
    subscriptions.subscribe(record("a", "d1", 4));
    subscriptions.subscribe(record("d", "d1", 5));
    expect(subscriptions.records().map((r) => r.endpoint.slice(-1))).toEqual(["c", "a", "d"]);
  });

  it("removes one endpoint, or every subscription of a device that signed out", () => {
    const { subscriptions } = setup();
    subscriptions.subscribe(record("a", "laptop", 1));
    subscriptions.subscribe(record("b", "phone", 2));
    subscriptions.subscribe(record("c", "phone", 3));
    subscriptions.remove("https://push.example.test/a");
    subscriptions.remove("https://push.example.test/unknown");
    expect(subscriptions.records().map((r) => r.endpoint.slice(-1))).toEqual(["b", "c"]);
    subscriptions.dropDevice("phone");
    expect(subscriptions.all()).toEqual([]);
  });
});
