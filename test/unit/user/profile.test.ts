// What GET /me answers from the user's object: the profile and the device's name as last written,
// nothing for a device it never heard of or one signed out, and the same after a new wake-up.
import { afterEach, describe, expect, it } from "vitest";
import { migrate } from "../../../durable-objects/lib/migrate";
import { Profile, PROFILE_MIGRATIONS, PROFILE_MIGRATIONS_TRACK } from "../../../durable-objects/user/profile";
import { userSql } from "../support/user";

const closers: Array<() => void> = [];
afterEach(() => closers.splice(0).forEach((close) => close()));

function setup() {
  const sql = userSql();
  closers.push(() => sql.close());
  migrate(sql, PROFILE_MIGRATIONS, PROFILE_MIGRATIONS_TRACK);
  return { sql, profile: new Profile(sql) };
}

const ann = { id: "u1", username: "ann", displayName: "Ann", createdAt: 1 };

describe("Profile", () => {
  it("answers the profile and the device as last written, and nothing for a device unknown or signed out", () => {
    const { sql, profile } = setup();
    expect(profile.me("d1")).toBeNull();
    profile.setUser(ann);
    expect(profile.me("d1")).toBeNull();
    profile.setDevice({ id: "d1", name: "laptop", createdAt: 5 });
    profile.setDevice({ id: "d2", name: "phone", createdAt: 6 });
    profile.setUser({ ...ann, displayName: "Ann B", photoId: "p1" });
    profile.setDevice({ id: "d1", name: "work laptop", createdAt: 99 });
    const again = new Profile(sql);
    expect(again.me("d1")).toEqual({ user: { ...ann, displayName: "Ann B", photoId: "p1" }, device: { id: "d1", name: "work laptop", createdAt: 5 } });
    again.dropDevice("d1");
    expect(again.me("d1")).toBeNull();
    expect(again.me("d2")?.device).toEqual({ id: "d2", name: "phone", createdAt: 6 });
  });
});
