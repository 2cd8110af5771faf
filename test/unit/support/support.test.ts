// The unit suite's stand-ins behave as what they stand in for, where the tests rely on it.
import { describe, expect, it } from "vitest";
import { D1Outage, d1MigrationStatements, memoryD1 } from "./d1";
import { CLOSED, MemorySocket, OPEN, SocketRoom, framesOf, onlyFrame, takeFrames } from "./sockets";

describe("MemorySocket", () => {
  it("uses the standard readyState numbers", () => {
    expect([OPEN, CLOSED]).toEqual([1, 3]);
    const standard = (globalThis as { WebSocket?: { OPEN: number; CLOSED: number } }).WebSocket;
    if (standard) expect([standard.OPEN, standard.CLOSED]).toEqual([OPEN, CLOSED]);
  });

  it("records frames as JSON, and the close", () => {
    const ws = new MemorySocket();
    ws.send(JSON.stringify({ type: "a", n: 1 }));
    ws.send("pong");
    ws.send(JSON.stringify({ type: "b" }));
    expect(ws.frames).toEqual([{ type: "a", n: 1 }, "pong", { type: "b" }]);
    expect(framesOf(ws, "a")).toEqual([{ type: "a", n: 1 }]);
    expect(onlyFrame(ws, "b")).toEqual({ type: "b" });
    expect(() => onlyFrame(ws, "c")).toThrow();
    expect(takeFrames(ws)).toHaveLength(2);
    expect(ws.frames).toEqual([]);
    ws.close(4003, "bye");
    ws.close(1000, "again");
    expect([ws.readyState, ws.closed]).toEqual([CLOSED, { code: 4003, reason: "bye" }]);
    expect(() => ws.send("{}")).toThrow();
  });

  it("keeps a structured clone of its attachment", () => {
    const attachment = { userId: "u", nested: { n: 1 } };
    const ws = new MemorySocket(attachment);
    attachment.nested.n = 2;
    const read = ws.deserializeAttachment() as typeof attachment;
    expect(read).toEqual({ userId: "u", nested: { n: 1 } });
    read.nested.n = 3;
    expect(ws.deserializeAttachment()).toEqual({ userId: "u", nested: { n: 1 } });
  });

  it("is listed by its user in a room", () => {
    const room = new SocketRoom();
    const a = room.connect("alice", "phone");
    room.connect("bob");
    expect(room.all()).toHaveLength(2);
    expect(room.ofUser("alice")).toEqual([a.ws]);
    expect(a.deserializeAttachment()).toEqual({ userId: "alice", deviceId: "phone" });
  });
});

describe("memoryD1", () => {
  it("applies every migration statement, in order", async () => {
    const d1 = memoryD1();
    const tables = d1.query<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name");
    expect(tables.map((t) => t.name).filter((n) => !n.startsWith("message_search"))).toEqual(["conversations", "devices", "former_members", "hidden_messages", "media", "media_parts", "media_shares", "members", "messages", "push_endpoints", "users"]);
    // 0004 dropped the unique index on messages.id, 0003 added one on ingest order, 0008 put seq in it.
    const indexes = d1.query<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'").map((i) => i.name);
    expect(indexes).toContain("messages_conversation_ingest_seq");
    expect(indexes).not.toContain("messages_conversation_ingest");
    expect(indexes).not.toContain("messages_id");
    expect(d1MigrationStatements().every((s) => !s.includes("statement-breakpoint"))).toBe(true);
  });

  it("answers prepare/bind with first, all and run", async () => {
    const d1 = memoryD1().binding;
    const insert = d1.prepare("INSERT INTO users (id, username, username_lower, display_name, password_hash, password_salt, password_iterations, created_at) VALUES (?, ?, ?, ?, 'h', 's', 1, ?)");
    expect((await insert.bind("u1", "Ann", "ann", "Ann", 1).run()).meta.changes).toBe(1);
    await insert.bind("u2", "Bo", "bo", "Bo", true).run();
    expect(await d1.prepare("SELECT id FROM users WHERE id = ?").bind("u2").first("id")).toBe("u2");
    expect(await d1.prepare("SELECT created_at FROM users WHERE id = ?").bind("u2").first()).toEqual({ created_at: 1 });
    expect(await d1.prepare("SELECT id FROM users WHERE id = ?").bind("nobody").first()).toBeNull();
    expect((await d1.prepare("SELECT id FROM users ORDER BY id").all()).results).toEqual([{ id: "u1" }, { id: "u2" }]);
    expect(() => d1.prepare("SELECT ?").bind(undefined)).toThrow(/undefined/);
  });

  it("applies a batch as one transaction", async () => {
    const d1 = memoryD1();
    const member = (user: string) =>
      d1.prepare("INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES ('c', ?, 'member', 0)").bind(user);
    await expect(d1.batch([member("a"), member("a")])).rejects.toThrow();
    expect(d1.query("SELECT * FROM members")).toEqual([]);
    expect(d1.batches).toEqual([]);
    await d1.batch([member("a"), member("b")]);
    expect(d1.query("SELECT user_id FROM members ORDER BY user_id")).toEqual([{ user_id: "a" }, { user_id: "b" }]);
    expect(d1.batches).toHaveLength(1);
  });

  it("fails every call, or the next N, or loses the answer to the next N", async () => {
    const d1 = memoryD1();
    const count = () => d1.prepare("SELECT count(*) AS n FROM members").first("n");
    d1.failing();
    await expect(count()).rejects.toThrow(D1Outage);
    await expect(d1.batch([])).rejects.toThrow(D1Outage);
    d1.failing(false);
    d1.failNext(2);
    await expect(count()).rejects.toThrow(D1Outage);
    await expect(count()).rejects.toThrow(D1Outage);
    expect(await count()).toBe(0);
    d1.failNext(1, 1);
    expect(await count()).toBe(0);
    await expect(count()).rejects.toThrow(D1Outage);
    d1.loseNext(1);
    await expect(d1.prepare("INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES ('c', 'a', 'member', 0)").run()).rejects.toThrow(D1Outage);
    expect(await count()).toBe(1);
    expect(d1.calls).toBe(9);
  });
});
