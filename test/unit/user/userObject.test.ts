// The user object's modules beside its inbox, on its migrated SQLite and in-memory sockets: device
// liveness, sessions, tickets and logouts, its side of quiet members, and presence between users.
import { afterEach, describe, expect, it } from "vitest";
import type { Identity } from "../../../kernel/identity";
import type { Presence } from "../../../protocol";
import type { PresencePeer } from "../../../durable-objects/contract";
import { QUIET_HINT_MS } from "../../../durable-objects/contract";
import { DeliveryAnswers } from "../../../durable-objects/user/deliveryAnswers";
import { ACTIVITY_RESOLUTION_MS, Sessions, TICKET_CLOCK_SLACK_MS } from "../../../durable-objects/user/sessions";
import { Watchers } from "../../../durable-objects/user/watchers";
import type { SocketState } from "../../../durable-objects/user/deviceSockets";
import { framesOf, type MemorySocket } from "../support/sockets";
import { deviceSockets, TIMEOUT, userSql } from "../support/user";

const T = 1_800_000_000_000;

const closers: Array<() => void> = [];
afterEach(() => closers.splice(0).forEach((close) => close()));
function sqlFor() {
  const sql = userSql();
  closers.push(() => sql.close());
  return sql;
}

describe("DeviceSockets", () => {
  it.each<[string, Partial<SocketState>, number | null, number, boolean]>([
    ["the handshake keeps a silent socket live for the timeout", { connectedAt: T }, null, T + TIMEOUT - 1, true],
    ["the handshake alone expires at the timeout", { connectedAt: T }, null, T + TIMEOUT, false],
    ["a later frame extends it", { connectedAt: T, lastFrameAt: T + 20_000 }, null, T + TIMEOUT + 10_000, true],
    ["a frame's extension also expires", { connectedAt: T, lastFrameAt: T + 20_000 }, null, T + TIMEOUT + 20_000, false],
    ["a keep-alive answered by the runtime extends it", { connectedAt: T, lastFrameAt: T }, T + 50_000, T + 79_999, true],
    ["a keep-alive's extension also expires", { connectedAt: T, lastFrameAt: T }, T + 50_000, T + 80_000, false],
    ["an old keep-alive does not shorten a later frame", { connectedAt: T, lastFrameAt: T + 40_000 }, T + 1, T + 69_999, true],
  ])("%s", (_, state, ping, now, live) => {
    const { host, sockets } = deviceSockets();
    const socket = host.connect("phone", state);
    if (ping !== null) host.ping(socket, ping);
    expect(sockets.live(now)).toHaveLength(live ? 1 : 0);
  });

  it("a closed socket is not live, whatever its last sign of life", () => {
    const { host, sockets } = deviceSockets();
    host.connect("phone", { connectedAt: T }).close();
    expect(sockets.live(T)).toEqual([]);
  });

  it("names each device with an open socket once, and an unreadable attachment as no device", () => {
    const { host, sockets } = deviceSockets();
    host.connect("phone");
    host.connect("phone");
    host.connect("laptop");
    host.connect("tablet").close();
    host.connect("watch", null);
    expect(sockets.openDevices().sort()).toEqual(["", "laptop", "phone"]);
  });

  it("sendAll skips the sockets of one device, and a closed socket does not stop the rest", () => {
    const { host, sockets } = deviceSockets();
    const phones = [host.connect("phone"), host.connect("phone")];
    const closed = host.connect("tablet");
    closed.close();
    const laptop = host.connect("laptop");
    sockets.sendAll(sockets.all(), JSON.stringify({ type: "x" }), "phone");
    expect([...phones, closed, laptop].map((s) => s.frames.length)).toEqual([0, 0, 0, 1]);
    sockets.sendAll(sockets.all(), JSON.stringify({ type: "y" }));
    expect([...phones, closed, laptop].map((s) => s.frames.length)).toEqual([1, 1, 0, 2]);
  });
});

describe("Sessions", () => {
  const TTL = 60_000;
  const sessions = () => {
    const sql = sqlFor();
    return { sql, sessions: new Sessions(sql, TTL) };
  };
  const rows = (sql: SqlStorage, table: string) => sql.exec<{ n: number }>(`SELECT count(*) AS n FROM ${table}`).one().n;

  it("a ticket opens one socket: its nonce is refused the second time, another nonce is not", () => {
    const { sessions: s } = sessions();
    expect(s.takeTicket("phone", "n1", T + TTL, T)).toBe(true);
    expect(s.takeTicket("phone", "n1", T + TTL, T + 1)).toBe(false);
    expect(s.takeTicket("laptop", "n1", T + TTL, T + 1)).toBe(false);
    expect(s.takeTicket("phone", "n2", T + TTL, T + 1)).toBe(true);
  });

  it("remembers a used ticket past its expiry by the clock slack, then prunes it", () => {
    const { sql, sessions: s } = sessions();
    s.takeTicket("phone", "n1", T + TTL, T);
    const until = T + TTL + TICKET_CLOCK_SLACK_MS;
    expect(s.takeTicket("phone", "n1", T + TTL, until)).toBe(false);
    s.takeTicket("phone", "n2", until + TTL, until + 1);
    expect(sql.exec<{ nonce: string }>("SELECT nonce FROM used_tickets").toArray().map((r) => r.nonce)).toEqual(["n2"]);
  });

  it("refuses every ticket of a logged-out device until the revocation expires, then prunes it", () => {
    const { sql, sessions: s } = sessions();
    s.revoke("phone", T);
    const until = T + TTL + TICKET_CLOCK_SLACK_MS;
    expect(s.takeTicket("phone", "n1", T + TTL, T)).toBe(false);
    expect(s.takeTicket("phone", "n2", until, until)).toBe(false);
    expect(s.takeTicket("laptop", "n3", T + TTL, T)).toBe(true);
    expect(rows(sql, "revoked_devices")).toBe(1);
    expect(s.takeTicket("phone", "n4", until + TTL, until + 1)).toBe(true);
    expect(rows(sql, "revoked_devices")).toBe(0);
    // A refused ticket was not used up.
    expect(s.takeTicket("phone", "n1", until + TTL, until + 1)).toBe(true);
  });

  const DAY = 86_400_000;
  const YEAR = 365 * DAY;

  it("a session is live from its login until its expiry, for its own device only", () => {
    const { sessions: s } = sessions();
    s.start("phone", "s1", T + 30 * DAY, T);
    expect(s.isLive("phone", "s1", T, YEAR)).toBe(true);
    expect(s.isLive("phone", "s1", T + 30 * DAY - 1, YEAR)).toBe(true);
    expect(s.isLive("phone", "s1", T + 30 * DAY, YEAR)).toBe(false);
    expect(s.isLive("laptop", "s1", T, YEAR)).toBe(false);
    expect(s.isLive("phone", "s2", T, YEAR)).toBe(false);
  });

  it("a lifetime lowered since the login ends the sessions older than it", () => {
    const { sessions: s } = sessions();
    s.start("phone", "s1", T + YEAR, T);
    expect(s.isLive("phone", "s1", T + 10 * DAY, YEAR)).toBe(true);
    expect(s.isLive("phone", "s1", T + 10 * DAY, 7 * DAY)).toBe(false);
    expect(s.isLive("phone", "s1", T + 6 * DAY, 7 * DAY)).toBe(true);
  });

  it("lists the signed-in devices with their last activity, kept to within ACTIVITY_RESOLUTION_MS", () => {
    const { sessions: s } = sessions();
    s.start("phone", "s1", T + YEAR, T);
    s.start("laptop", "s2", T + YEAR, T);
    s.start("tablet", "s3", T + DAY, T);
    expect(s.isLive("phone", "s1", T + ACTIVITY_RESOLUTION_MS - 1, YEAR)).toBe(true);
    expect(s.signedInDevices(T + ACTIVITY_RESOLUTION_MS - 1, YEAR).find((d) => d.deviceId === "phone")?.lastActiveAt).toBe(T);
    expect(s.isLive("phone", "s1", T + 5 * ACTIVITY_RESOLUTION_MS, YEAR)).toBe(true);
    s.revoke("laptop", T + 6 * ACTIVITY_RESOLUTION_MS);
    // The tablet's session has expired by then, the laptop logged out.
    expect(s.signedInDevices(T + 2 * DAY, YEAR)).toEqual([{ deviceId: "phone", lastActiveAt: T + 5 * ACTIVITY_RESOLUTION_MS }]);
  });

  it("a logout ends every session of its device at once, not the others', and refuses its tickets", () => {
    const { sessions: s } = sessions();
    s.start("phone", "s1", T + YEAR, T);
    s.start("phone", "s2", T + YEAR, T);
    s.start("laptop", "s3", T + YEAR, T);
    s.revoke("phone", T + 1);
    expect(s.isLive("phone", "s1", T + 1, YEAR)).toBe(false);
    expect(s.isLive("phone", "s2", T + 1, YEAR)).toBe(false);
    expect(s.isLive("laptop", "s3", T + 1, YEAR)).toBe(true);
    expect(s.takeTicket("phone", "n1", T + TTL, T + 1)).toBe(false);
    expect(s.loggedOut("phone", T + 1)).toBe(true);
    expect(s.loggedOut("laptop", T + 1)).toBe(false);
    expect(s.loggedOut("phone", T + 1 + TTL + TICKET_CLOCK_SLACK_MS + 1)).toBe(false);
  });

  it("keeps each logged-out device until D1 has been told, once however often it logs out", () => {
    const { sessions: s } = sessions();
    s.revoke("phone", T);
    s.revoke("laptop", T + 1);
    s.revoke("phone", T + 2);
    expect(s.devicesToRetire()).toEqual([
      { deviceId: "phone", revokedAt: T },
      { deviceId: "laptop", revokedAt: T + 1 },
    ]);
    s.retired("phone");
    expect(s.devicesToRetire()).toEqual([{ deviceId: "laptop", revokedAt: T + 1 }]);
  });

  it("drops expired sessions as new ones start, and a repeated start changes nothing", () => {
    const { sql, sessions: s } = sessions();
    s.start("phone", "s1", T + DAY, T);
    s.start("phone", "s1", T + YEAR, T + 5);
    expect(sql.exec("SELECT created_at, expires_at FROM sessions").one()).toEqual({ created_at: T, expires_at: T + DAY });
    s.start("laptop", "s2", T + 2 * DAY + YEAR, T + 2 * DAY);
    expect(sql.exec<{ session_id: string }>("SELECT session_id FROM sessions").toArray().map((r) => r.session_id)).toEqual(["s2"]);
    expect(rows(sql, "sessions")).toBe(1);
  });

  it("keeps where each device has conversation sockets, once per conversation, until forgotten", () => {
    const { sql, sessions: s } = sessions();
    s.trackConversationSocket("phone", "c1", T);
    s.trackConversationSocket("phone", "c2", T);
    s.trackConversationSocket("phone", "c1", T + 5);
    s.trackConversationSocket("laptop", "c1", T);
    expect(s.conversationsWithSockets("phone").sort()).toEqual(["c1", "c2"]);
    expect(sql.exec("SELECT seen_at FROM conversation_sockets WHERE device_id = 'phone' AND conversation_id = 'c1'").one()).toEqual({ seen_at: T + 5 });
    s.forgetConversationSockets("phone");
    expect(s.conversationsWithSockets("phone")).toEqual([]);
    expect(s.conversationsWithSockets("laptop")).toEqual(["c1"]);
  });
});

/** A promise the test settles by hand. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe("DeliveryAnswers", () => {
  function setup(sql = sqlFor()) {
    const { host, sockets } = deviceSockets();
    const events: string[] = [];
    const failing = new Set<string>();
    const gates = new Map<string, Promise<void>>();
    const answers = new DeliveryAnswers(sql, sockets, (conversationId) => ({
      memberOnline: async (userId, epoch) => {
        events.push(`memberOnline ${conversationId} ${userId} ${epoch}`);
        await gates.get(conversationId);
        if (failing.has(conversationId)) throw new Error("unreachable");
        events.push(`told ${conversationId}`);
      },
    }));
    const letIn = () => {
      events.push("let in");
      return "accepted";
    };
    return { sql, host, sockets, answers, events, failing, gates, letIn };
  }
  const answeredRows = (sql: SqlStorage) => sql.exec("SELECT conversation_id, until FROM answered ORDER BY conversation_id").toArray();

  it.each([
    ["with no conversation to answer", null, "live"],
    ["with no socket", "c1", "none"],
    ["when every socket is past the keep-alive timeout", "c1", "stale"],
  ] as const)("answers null %s", (_, conversationId, sockets) => {
    const t = setup();
    if (sockets !== "none") t.host.connect("phone", { connectedAt: sockets === "live" ? T : T - TIMEOUT });
    expect(t.answers.answer(conversationId, T)).toBeNull();
    expect(answeredRows(t.sql)).toEqual([]);
  });

  it("names the devices with open sockets and epoch 0 while one is live", () => {
    const t = setup();
    t.host.connect("phone", { connectedAt: T });
    t.host.connect("laptop", { connectedAt: T - TIMEOUT });
    expect(t.answers.answer("c1", T)).toEqual({ devices: ["phone", "laptop"], epoch: 0, watched: false });
  });

  it("says the conversation is watched only when every device named got the call's messages live there", () => {
    const t = setup();
    t.host.connect("phone", { connectedAt: T });
    t.host.connect("laptop", { connectedAt: T });
    expect(t.answers.answer("c1", T, { phone: 3 })?.watched).toBe(false);
    expect(t.answers.answer("c1", T, { phone: 3, laptop: 0 })?.watched).toBe(true);
    expect(t.answers.answer("c1", T, { phone: 3, laptop: 0, tablet: 1 })?.watched).toBe(true);
  });

  it("writes the answered row once per hint, and again when it would lapse within one", () => {
    const t = setup();
    t.host.connect("phone", { connectedAt: T });
    t.answers.answer("c1", T);
    expect(answeredRows(t.sql)).toEqual([{ conversation_id: "c1", until: T + 3 * QUIET_HINT_MS }]);
    t.answers.answer("c1", T + 2 * QUIET_HINT_MS);
    expect(answeredRows(t.sql)).toEqual([{ conversation_id: "c1", until: T + 3 * QUIET_HINT_MS }]);
    t.answers.answer("c1", T + 2 * QUIET_HINT_MS + 1);
    expect(answeredRows(t.sql)).toEqual([{ conversation_id: "c1", until: T + 5 * QUIET_HINT_MS + 1 }]);
  });

  it("tells every conversation answered recently, with a new epoch, before it lets the socket in", async () => {
    const t = setup();
    t.host.connect("phone", { connectedAt: T - 4 * QUIET_HINT_MS });
    t.answers.answer("old", T - 4 * QUIET_HINT_MS);
    t.host.connect("laptop", { connectedAt: T });
    t.answers.answer("c1", T);
    t.answers.answer("c2", T);
    const gate = deferred();
    t.gates.set("c2", gate.promise);
    const admitted = t.answers.beforeNewSocket("u", T, t.letIn);
    await Promise.resolve();
    // Nobody is named while the socket is being let in.
    expect(t.answers.answer("c3", T)).toBeNull();
    expect(t.events).not.toContain("let in");
    gate.resolve();
    expect(await admitted).toBe("accepted");
    expect(t.events).toEqual(["memberOnline c1 u 1", "memberOnline c2 u 1", "told c1", "told c2", "let in"]);
    expect(answeredRows(t.sql)).toEqual([]);
    expect(t.answers.answer("c3", T)).toEqual({ devices: ["phone", "laptop"], epoch: 1, watched: false });
  });

  it("lets a socket in at once, keeping the epoch, when nothing was answered", async () => {
    const t = setup();
    t.host.connect("phone", { connectedAt: T });
    expect(await t.answers.beforeNewSocket("u", T, t.letIn)).toBe("accepted");
    expect(t.events).toEqual(["let in"]);
    expect(t.answers.answer("c1", T)?.epoch).toBe(0);
  });

  it("throws, letting nobody in, when a conversation cannot be told, and tells it again on the retry", async () => {
    const t = setup();
    t.host.connect("phone", { connectedAt: T });
    t.answers.answer("c1", T);
    t.answers.answer("c2", T);
    t.failing.add("c2");
    await expect(t.answers.beforeNewSocket("u", T, t.letIn)).rejects.toThrow("unreachable");
    expect(t.events).not.toContain("let in");
    expect(answeredRows(t.sql).map((r) => r.conversation_id)).toEqual(["c1", "c2"]);
    // Answers resume after the failed attempt.
    expect(t.answers.answer("c1", T)).not.toBeNull();
    t.failing.clear();
    t.events.length = 0;
    expect(await t.answers.beforeNewSocket("u", T, t.letIn)).toBe("accepted");
    expect(t.events).toEqual(["memberOnline c1 u 2", "memberOnline c2 u 2", "told c1", "told c2", "let in"]);
  });

  it("keeps the epoch and the answered rows for a new instance on the same SQLite", async () => {
    const first = setup();
    first.host.connect("phone", { connectedAt: T });
    first.answers.answer("c1", T);
    await first.answers.beforeNewSocket("u", T, first.letIn);
    first.answers.answer("c2", T);
    const again = setup(first.sql);
    again.host.connect("phone", { connectedAt: T });
    expect(again.answers.answer("c3", T)).toEqual({ devices: ["phone"], epoch: 1, watched: false });
    await again.answers.beforeNewSocket("u", T, again.letIn);
    expect(again.events).toEqual(["memberOnline c2 u 2", "memberOnline c3 u 2", "told c2", "told c3", "let in"]);
  });
});

describe("Watchers", () => {
  const presenceOf = (userId: string): Presence => ({ userId, status: "online", lastSeen: null });

  function setup() {
    const sql = sqlFor();
    const { host, sockets } = deviceSockets();
    const calls: unknown[][] = [];
    const sharing = { allowed: new Set<string>(), asked: [] as string[][] };
    const gone = new Map<string, string[] | Error>();
    const unreachable = new Set<string>();
    const users = (id: string): Pick<PresencePeer, "watch" | "unwatch" | "presenceEvent"> => ({
      watch: async (userId, watcher) => {
        calls.push(["watch", id, userId, watcher]);
        if (unreachable.has(id)) throw new Error(`${id}'s object unreachable`);
        return presenceOf(id);
      },
      unwatch: async (watcher) => void calls.push(["unwatch", id, watcher]),
      presenceEvent: async (deviceIds, event) => {
        calls.push(["presenceEvent", id, deviceIds, event.status]);
        const answer = gone.get(id) ?? [];
        if (answer instanceof Error) throw answer;
        return answer;
      },
    });
    const watchers = new Watchers({
      sql,
      sockets,
      users,
      sharedWith: async (userIds) => {
        sharing.asked.push(userIds);
        return new Set(userIds.filter((id) => sharing.allowed.has(id)));
      },
    });
    /** A socket of device `deviceId` of user "u", watching `watch`. */
    const socket = (deviceId: string, watch: string[] = []) => {
      const s = host.connect(deviceId, { watch });
      return { socket: s, state: sockets.state(s.ws)! };
    };
    const watcherRows = () =>
      sql.exec("SELECT watcher_user_id AS u, watcher_device_id AS d FROM watchers ORDER BY u, d").toArray();
    return { sql, sockets, calls, sharing, gone, unreachable, watchers, socket, watcherRows };
  }
  const me: Identity = { userId: "u", deviceId: "phone" };
  const presenceFrames = (s: MemorySocket) => framesOf(s, "presence").map((f) => f.userId);

  it("watches only the users the privacy rule shows, registers with their objects and sends their presence", async () => {
    const t = setup();
    t.sharing.allowed = new Set(["bob", "carol"]);
    const { socket, state } = t.socket("phone");
    await t.watchers.setWatch(socket.ws, state, ["bob", "carol", "dave", "u", "bob"]);
    expect(t.sharing.asked).toEqual([["bob", "carol", "dave"]]);
    expect(t.calls).toEqual([
      ["watch", "bob", "bob", me],
      ["watch", "carol", "carol", me],
    ]);
    expect(presenceFrames(socket)).toEqual(["bob", "carol"]);
    // Stored in the attachment, so it survives hibernation.
    expect(socket.deserializeAttachment()).toMatchObject({ watch: ["bob", "carol"] });
  });

  it("registers on the retry a watch whose object could not be reached, and sends its first presence then", async () => {
    const t = setup();
    t.sharing.allowed = new Set(["bob", "carol"]);
    t.unreachable.add("bob");
    const { socket, state } = t.socket("phone");
    await expect(t.watchers.setWatch(socket.ws, state, ["bob", "carol"])).rejects.toThrow("unreachable");
    expect(presenceFrames(socket)).toEqual(["carol"]);
    expect(socket.deserializeAttachment()).toMatchObject({ watch: ["carol"] });
    t.unreachable.clear();
    await t.watchers.setWatch(socket.ws, t.sockets.state(socket.ws)!, ["bob", "carol"]);
    expect(t.calls.filter((c) => c[0] === "watch").map((c) => c[1])).toEqual(["bob", "carol", "bob"]);
    expect(presenceFrames(socket)).toEqual(["carol", "bob"]);
  });

  it("a new watch list unregisters the users dropped or no longer shared, and registers only the new ones", async () => {
    const t = setup();
    t.sharing.allowed = new Set(["bob", "carol", "erin"]);
    const { socket, state } = t.socket("phone", ["bob", "carol", "dave"]);
    t.sharing.allowed.delete("dave");
    await t.watchers.setWatch(socket.ws, state, ["carol", "dave", "erin"]);
    expect(t.calls).toEqual([
      ["unwatch", "bob", me],
      ["unwatch", "dave", me],
      ["watch", "erin", "erin", me],
    ]);
    expect(presenceFrames(socket)).toEqual(["erin"]);
    expect(state.watch).toEqual(["carol", "erin"]);
  });

  it.each<[string, boolean, string[]]>([
    ["keeps the users another open socket of the device still watches", false, ["bob"]],
    ["lets them all go when that other socket is closed", true, ["bob", "carol"]],
  ])("stopWatching %s", async (_, otherClosed, unwatched) => {
    const t = setup();
    const { socket, state } = t.socket("phone", ["bob", "carol"]);
    const other = t.socket("phone", ["carol"]);
    t.socket("laptop", ["bob"]);
    if (otherClosed) other.socket.close();
    socket.close();
    await Promise.all(t.watchers.stopWatching(socket.ws, state));
    expect(t.calls).toEqual(unwatched.map((id) => ["unwatch", id, me]));
  });

  it("publish tells each watcher user's object once, and forgets the devices it reports gone", async () => {
    const t = setup();
    for (const [userId, deviceId] of [["x", "x1"], ["x", "x2"], ["y", "y1"], ["z", "z1"]]) t.watchers.add({ userId: userId!, deviceId: deviceId! });
    t.watchers.add({ userId: "x", deviceId: "x1" });
    t.gone.set("x", ["x2"]);
    t.gone.set("y", ["y1"]);
    t.gone.set("z", new Error("unreachable"));
    await t.watchers.publish({ userId: "u", status: "offline", lastSeen: T });
    expect(t.calls).toEqual([
      ["presenceEvent", "x", ["x1", "x2"], "offline"],
      ["presenceEvent", "y", ["y1"], "offline"],
      ["presenceEvent", "z", ["z1"], "offline"],
    ]);
    // An object that cannot be reached forgets nobody.
    expect(t.watcherRows()).toEqual([
      { u: "x", d: "x1" },
      { u: "z", d: "z1" },
    ]);
    t.watchers.remove({ userId: "z", deviceId: "z1" });
    expect(t.watcherRows()).toEqual([{ u: "x", d: "x1" }]);
  });

  it("relay sends to the sockets watching the user and reports the devices where none does", () => {
    const t = setup();
    const watching = t.socket("phone", ["bob"]).socket;
    const notWatching = t.socket("phone", ["carol"]).socket;
    const laptop = t.socket("laptop", ["carol"]).socket;
    const gone = t.watchers.relay(["phone", "laptop", "tablet"], { userId: "bob", status: "online", lastSeen: null });
    expect(gone).toEqual(["laptop", "tablet"]);
    expect([watching, notWatching, laptop].map(presenceFrames)).toEqual([["bob"], [], []]);
  });
});
