// The user's settings of their conversations: each change alone or together, all or nothing;
// mutes that run out; pins in the order made, at most CONVERSATION_SETTINGS_LIMITS.pinsMax.
import { afterEach, describe, expect, it } from "vitest";
import { migrate } from "../../../durable-objects/lib/migrate";
import { ConversationPrefs, PREFS_MIGRATIONS, PREFS_MIGRATIONS_TRACK } from "../../../durable-objects/user/conversationPrefs";
import { CONVERSATION_SETTINGS_LIMITS, DEFAULT_CONVERSATION_SETTINGS, MUTED_ALWAYS } from "../../../protocol";
import { userSql } from "../support/user";

const T = 1_800_000_000_000;
const HOUR = 3600_000;

const closers: Array<() => void> = [];
afterEach(() => closers.splice(0).forEach((close) => close()));

function setup() {
  const sql = userSql();
  closers.push(() => sql.close());
  migrate(sql, PREFS_MIGRATIONS, PREFS_MIGRATIONS_TRACK);
  return { sql, prefs: new ConversationPrefs(sql) };
}

function settingsOf(result: ReturnType<ConversationPrefs["change"]>) {
  if (!result.ok) throw new Error(`refused: ${result.message}`);
  return result.settings;
}

describe("conversation settings", () => {
  it("starts with nothing set and keeps no row for a conversation back at the defaults", () => {
    const { sql, prefs } = setup();
    expect(prefs.get("c1", T)).toEqual(DEFAULT_CONVERSATION_SETTINGS);
    expect(prefs.all(T)).toEqual({});
    settingsOf(prefs.change("c1", { archived: true }, T));
    expect(prefs.all(T)).toEqual({ c1: { mutedUntil: null, archived: true, pinnedAt: null } });
    settingsOf(prefs.change("c1", { archived: false }, T));
    expect(sql.exec<{ n: number }>("SELECT count(*) AS n FROM conversation_prefs").one().n).toBe(0);
  });

  it("mutes until a time, and reads a mute that has run out as none", () => {
    const { prefs } = setup();
    expect(settingsOf(prefs.change("c1", { mutedUntil: T + 8 * HOUR }, T))).toEqual({ mutedUntil: T + 8 * HOUR, archived: false, pinnedAt: null });
    expect(prefs.muted("c1", T + 8 * HOUR - 1)).toBe(true);
    expect(prefs.muted("c1", T + 8 * HOUR)).toBe(false);
    expect(prefs.get("c1", T + 8 * HOUR).mutedUntil).toBeNull();
    expect(prefs.all(T + 9 * HOUR)).toEqual({ c1: DEFAULT_CONVERSATION_SETTINGS });
    expect(prefs.muted("c2", T)).toBe(false);
  });

  it("mutes always, unmutes with null, and takes a time already past as unmuting", () => {
    const { prefs } = setup();
    settingsOf(prefs.change("c1", { mutedUntil: MUTED_ALWAYS }, T));
    expect(prefs.muted("c1", T + 100 * 365 * 24 * HOUR)).toBe(true);
    expect(settingsOf(prefs.change("c1", { mutedUntil: null }, T)).mutedUntil).toBeNull();
    expect(prefs.muted("c1", T)).toBe(false);
    expect(settingsOf(prefs.change("c1", { mutedUntil: T - 1 }, T)).mutedUntil).toBeNull();
  });

  it("changes only the fields given, and says whether anything changed", () => {
    const { prefs } = setup();
    settingsOf(prefs.change("c1", { mutedUntil: MUTED_ALWAYS, archived: true }, T));
    const result = prefs.change("c1", { pinned: true }, T + 1);
    expect(result).toEqual({ ok: true, changed: true, settings: { mutedUntil: MUTED_ALWAYS, archived: true, pinnedAt: T + 1 } });
    expect(prefs.change("c1", { archived: true }, T + 2)).toMatchObject({ ok: true, changed: false });
  });

  it("keeps pins in the order made, keeps a pin's place when pinned again, and refuses one beyond the limit, changing nothing", () => {
    const { prefs } = setup();
    const ids = Array.from({ length: CONVERSATION_SETTINGS_LIMITS.pinsMax }, (_, i) => `c${i}`);
    // All in one millisecond: each still pins after the one before.
    for (const id of ids) settingsOf(prefs.change(id, { pinned: true }, T));
    const order = Object.entries(prefs.all(T)).sort(([, a], [, b]) => (a.pinnedAt ?? 0) - (b.pinnedAt ?? 0)).map(([id]) => id);
    expect(order).toEqual(ids);
    expect(settingsOf(prefs.change("c0", { pinned: true }, T + 5)).pinnedAt).toBe(T);
    const refused = prefs.change("extra", { pinned: true, archived: true }, T);
    expect(refused).toMatchObject({ ok: false, code: "bad_request" });
    expect(prefs.get("extra", T)).toEqual(DEFAULT_CONVERSATION_SETTINGS);
    settingsOf(prefs.change("c2", { pinned: false }, T));
    expect(settingsOf(prefs.change("extra", { pinned: true }, T + 10)).pinnedAt).toBe(T + 10);
  });

  it("keeps settings when the object wakes up again over the same storage", () => {
    const { sql, prefs } = setup();
    settingsOf(prefs.change("c1", { archived: true, pinned: true }, T));
    migrate(sql, PREFS_MIGRATIONS, PREFS_MIGRATIONS_TRACK);
    expect(new ConversationPrefs(sql).get("c1", T)).toEqual({ mutedUntil: null, archived: true, pinnedAt: T });
  });
});
