// The sockets and sync (connection.ts): the connection state, catching up with ?since= pages in
// order from the stored cursor, reconnecting when the browser comes back, and the close codes.
import { describe, expect, it } from "vitest";
import { conversation, fakeBrowser, message, settle } from "./fakes";
import { ME, YOU, routes, signIn, startSignedIn } from "./storeSetup";

const userReady = { type: "ready", userId: ME.id, deviceId: "me-d", protocolVersion: 1 } as const;

describe("connection and sync", () => {
  it("pages GET /messages?since= from the stored cursor, applies the pages in order and stores the next cursor", async () => {
    const browser = fakeBrowser("/");
    signIn(browser);
    const list = [conversation("c1", [ME.id, YOU.id])];
    routes(browser, list, new Map());
    (await browser.localStores.open(ME.id)).kv.set("cursor", "k0");
    const pages: Record<string, { messages: ReturnType<typeof message>[]; cursor: string; hasMore: boolean }> = {
      k0: { messages: [message("c1", 1, YOU.id), message("c1", 2, YOU.id)], cursor: "k1", hasMore: true },
      k1: { messages: [message("c1", 3, YOU.id)], cursor: "k2", hasMore: false },
    };
    const seen: number[] = [];
    browser.server.on("GET /messages", (req) => {
      const page = pages[req.query.get("since") ?? ""];
      return page ? { json: page } : { status: 400, json: { error: { code: "bad", message: "bad cursor" } } };
    });
    const s = await startSignedIn({ browser, list });
    s.store.subscribe(() => seen.push(s.store.state.conversations.get("c1")?.lastSeq ?? -1));
    s.userSocket().open();
    s.userSocket().deliver(userReady);
    await settle();
    expect(s.store.state.connection).toBe("online");
    expect(browser.server.calls("GET /messages").map((r) => r.query.get("since"))).toEqual(["k0", "k1"]);
    expect(await (await browser.localStores.open(ME.id)).get("cursor")).toBe("k2");
    const conv = s.store.state.conversations.get("c1")!;
    expect(conv.lastSeq).toBe(3);
    expect(conv.unread).toBe(3);
    expect(conv.lastMessage?.body).toBe("message 3");
    // Each page rendered on its own (after `ready` itself), the first before the second.
    expect(seen.filter((x, i) => x !== seen[i - 1])).toEqual([0, 2, 3]);
    // Delivered goes up to the newest message, once per watermark.
    expect(browser.server.calls("POST /conversations/c1/receipts").map((r) => r.body)).toEqual([
      { type: "delivered", seq: 2 },
      { type: "delivered", seq: 3 },
    ]);
  });

  it("a new device starts its cursor at sign-in; a page naming an unknown conversation reloads the list", async () => {
    const s = await startSignedIn();
    const store = await s.browser.localStores.open(ME.id);
    expect(await store.get("cursor")).toBe(String(s.browser.clock.now() - 60_000));
    s.browser.server.on("GET /messages", () => ({ json: { messages: [message("c9", 1, YOU.id)], cursor: "k9", hasMore: false } }));
    s.list.push(conversation("c9", [ME.id, YOU.id], { lastSeq: 1 }));
    const before = s.browser.server.calls("GET /conversations").length;
    await s.store.connection.sync();
    await settle();
    expect(s.browser.server.calls("GET /conversations").length).toBeGreaterThan(before);
    expect(s.store.state.conversations.has("c9")).toBe(true);
    expect(await store.get("cursor")).toBe("k9");
  });

  it("away longer than the sync window (409), starts its cursor again and reloads the list", async () => {
    const s = await startSignedIn();
    const store = await s.browser.localStores.open(ME.id);
    await store.set("cursor", "u1.2.0");
    s.browser.server.on("GET /messages", () => ({ status: 409, json: { error: { code: "conflict", message: "the cursor is older than the sync window" } } }));
    s.list.push(conversation("c9", [ME.id, YOU.id], { lastSeq: 4 }));
    const before = s.browser.server.calls("GET /conversations").length;
    await s.browser.clock.advance(5_000);
    await s.store.connection.sync();
    await settle();
    expect(await store.get("cursor")).toBe(String(s.browser.clock.now() - 60_000));
    expect(s.browser.server.calls("GET /conversations").length).toBeGreaterThan(before);
    expect(s.store.state.conversations.get("c9")?.lastSeq).toBe(4);
  });

  it("counts the user socket's devices frames, so a device list on screen fetches again; a rename goes by PATCH", async () => {
    const s = await startSignedIn();
    s.userSocket().open();
    expect(s.store.state.devicesChanged).toBe(0);
    let drawn = 0;
    s.store.subscribe(() => drawn++);
    s.userSocket().deliver({ type: "devices" });
    s.userSocket().deliver({ type: "devices" });
    expect(s.store.state.devicesChanged).toBe(2);
    await settle();
    expect(drawn).toBeGreaterThan(0);
    const device = { id: "d2", name: "Kitchen tablet", createdAt: 1, lastActiveAt: null, current: false };
    s.browser.server.on("PATCH /devices/d2", () => ({ json: { device } }));
    expect(await s.store.renameDevice("d2", "Kitchen tablet")).toEqual(device);
    expect(s.browser.server.calls("PATCH /devices/d2").map((r) => r.body)).toEqual([{ name: "Kitchen tablet" }]);
  });

  it("follows the user socket and the browser: connecting, online, offline, and back with a reconnect", async () => {
    const s = await startSignedIn({ path: "/c/c1" });
    expect(s.store.state.connection).toBe("connecting");
    s.userSocket().open();
    s.userSocket().deliver(userReady);
    await settle();
    expect(s.store.state.connection).toBe("online");
    s.browser.fire("offline");
    expect(s.store.state.connection).toBe("offline");
    s.userSocket().drop();
    expect(s.store.state.connection).toBe("offline");
    const lists = s.browser.server.calls("GET /conversations").length;
    s.browser.fire("online");
    await settle();
    expect(s.store.state.connection).toBe("connecting");
    expect(s.userSocket().reconnects).toBe(1);
    expect(s.chatSocket("c1").reconnects).toBe(1);
    expect(s.browser.server.calls("GET /conversations").length).toBe(lists + 1);
    s.userSocket().drop();
    expect(s.store.state.connection).toBe("connecting");
  });

  it("the conversation socket resumes after the contiguous window it holds and goes live on ready", async () => {
    const stored = new Map([["c1", [1, 2, 3, 5].map((seq) => message("c1", seq, YOU.id))]]);
    const s = await startSignedIn({ path: "/c/c1", stored });
    const chat = s.chatSocket("c1");
    expect(new URLSearchParams(chat.path.split("?")[1]).get("after")).toBe("5");
    expect(s.store.view("c1").messages.map((m) => m.seq)).toEqual([5]);
    expect(s.store.state.chatLive).toBe(false);
    chat.open();
    chat.deliver({ type: "ready", lastSeq: 5, protocolVersion: 1 });
    expect(s.store.state.chatLive).toBe(true);
    chat.drop();
    expect(s.store.state.chatLive).toBe(false);
    s.store.navigate({ name: "list" });
    expect(chat.closed).toBe(true);
  });

  it("close 4001 ends the session; 4010 asks for a reload; 4003 on the chat says we were removed", async () => {
    const s = await startSignedIn({ path: "/c/c1" });
    s.chatSocket("c1").finalClose(4003);
    expect(s.store.state.removedFrom).toBe("c1");
    expect(s.store.state.notice?.text).toMatch(/no longer a member/);
    s.userSocket().finalClose(4010);
    expect(s.store.state.notice?.text).toMatch(/new version/);
    s.userSocket().finalClose(4001);
    await settle();
    expect(s.store.state.session).toBeNull();
    expect(s.store.state.route).toEqual({ name: "login" });
    expect(s.browser.address.current).toBe("/login");
  });
});
