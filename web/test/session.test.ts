// Session and routes (session.ts, navigation.ts): sign-in stores the session, a reload starts
// signed in, logout and a dead token clear everything of the account, and routes follow the session.
import { describe, expect, it } from "vitest";
import { AppStore } from "../src/app/appStore";
import { Navigation } from "../src/app/navigation";
import { StoreCore, initialState } from "../src/app/storeCore";
import { FakeAddressBar, FakeClock, conversation, fakeBrowser, message, settle } from "./fakes";
import { ME, YOU, routes, startSignedIn } from "./storeSetup";

describe("session", () => {
  it("signed out, every route is the login; login stores the session and lands on the list; a reload starts signed in", async () => {
    const browser = fakeBrowser("/c/c1");
    routes(browser, [conversation("c1", [ME.id, YOU.id])], new Map());
    browser.server.on("POST /auth/login", (req) => {
      const body = req.body as { username: string; password: string; deviceName: string };
      if (body.password !== "pw") return { status: 401, json: { error: { code: "unauthorized", message: "Wrong username or password." } } };
      return { json: { user: ME, device: { id: "me-d", name: body.deviceName, createdAt: 1 }, token: "t-me" } };
    });
    const store = new AppStore(browser);
    await store.start();
    expect(store.state.route).toEqual({ name: "login" });
    expect(browser.address.current).toBe("/login");
    store.navigate({ name: "settings" });
    expect(store.state.route).toEqual({ name: "login" });

    await expect(store.login("me", "nope")).rejects.toThrow("Wrong username or password.");
    expect(store.state.session).toBeNull();
    await store.login("me", "pw");
    await settle();
    expect(browser.server.calls("POST /auth/login")[1]?.body).toMatchObject({ deviceName: "Chrome on Linux" });
    expect(store.state.session?.user.id).toBe(ME.id);
    expect(browser.address.current).toBe("/");
    expect(store.state.conversations.has("c1")).toBe(true);
    // Every call now carries the token.
    expect(browser.server.calls("GET /conversations").at(-1)?.authorization).toBe("Bearer t-me");

    const reloaded = new AppStore(browser);
    expect(reloaded.state.session?.token).toBe("t-me");
  });

  it("logout drops the push subscription, tells the server, and clears the state, the session and the account's store", async () => {
    const s = await startSignedIn({ path: "/c/c1", stored: new Map([["c1", [message("c1", 1, YOU.id)]]]) });
    s.browser.notifications.subscribed = { endpoint: "https://push.example/1", key: new Uint8Array() };
    s.browser.server.on("DELETE /push/subscriptions", () => ({ status: 204 })).on("POST /auth/logout", () => ({ status: 204 }));
    const local = await s.browser.localStores.open(ME.id);
    await s.browser.clock.advance(1000);
    expect(local.kv.has("messages:c1")).toBe(true);
    const chat = s.chatSocket("c1");
    await s.store.logout();
    expect(s.browser.server.calls("DELETE /push/subscriptions")[0]?.query.get("endpoint")).toBe("https://push.example/1");
    expect(s.browser.notifications.subscribed).toBeNull();
    expect(s.browser.server.calls("POST /auth/logout")).toHaveLength(1);
    expect(s.store.state).toMatchObject({ session: null, route: { name: "login" }, thread: null, outbox: [], uploads: [], listLoaded: false });
    expect(s.store.state.conversations.size + s.store.state.users.size + s.store.state.views.size).toBe(0);
    expect(s.browser.storage.getItem("edge-chat:session")).toBeNull();
    expect(s.browser.localStores.stores.has(ME.id)).toBe(false);
    expect(local.closed).toBe(true);
    expect(chat.closed && s.userSocket().closed).toBe(true);
    expect(s.browser.address.current).toBe("/login");
  });

  it("logout offline signs out here at once and revokes the token when the network returns, until the server has it", async () => {
    const s = await startSignedIn();
    let online = false;
    s.browser.server.on("POST /auth/logout", () => (online ? { status: 204 } : "network error"));
    s.browser.fire("offline");
    await s.store.logout();
    expect(s.store.state.session).toBeNull();
    expect(s.store.pendingRevocations()).toBe(1);
    // Still offline: kept.
    s.browser.fire("online");
    await settle();
    expect(s.store.pendingRevocations()).toBe(1);
    // Back: the old token's logout goes out with that token, and is forgotten once answered.
    online = true;
    s.browser.fire("online");
    await settle();
    expect(s.browser.server.calls("POST /auth/logout").map((r) => r.authorization)).toEqual(["Bearer t-me", "Bearer t-me", "Bearer t-me"]);
    expect(s.store.pendingRevocations()).toBe(0);
    // A new start (a reload) sends nothing more.
    const again = new AppStore(s.browser);
    await again.start();
    await settle();
    expect(s.browser.server.calls("POST /auth/logout")).toHaveLength(3);
  });

  it("a token the server already refused (401) is not kept to revoke", async () => {
    const s = await startSignedIn();
    s.browser.server.on("POST /auth/logout", () => ({ status: 401, json: { error: { code: "unauthorized", message: "gone" } } }));
    await s.store.logout();
    expect(s.store.pendingRevocations()).toBe(0);
  });

  it("a 401 on any call ends the session with a notice", async () => {
    const s = await startSignedIn();
    s.browser.server.on("GET /users", () => ({ status: 401, json: { error: { code: "unauthorized", message: "token revoked" } } }));
    await expect(s.store.searchUsers("bob")).rejects.toThrow("token revoked");
    await settle();
    expect(s.store.state.session).toBeNull();
    expect(s.store.state.notice?.text).toBe("Your session ended. Please sign in again.");
    await s.browser.clock.advance(5000);
    expect(s.store.state.notice).toBeNull();
  });

  it("routes follow the address bar: back opens the chat again, a notification click opens its conversation", async () => {
    const s = await startSignedIn({ list: [conversation("c1", [ME.id, YOU.id]), conversation("c2", [ME.id, YOU.id])] });
    s.store.navigate({ name: "chat", id: "c1", thread: null, info: false });
    expect(s.browser.address.current).toBe("/c/c1");
    s.store.navigate({ name: "list" });
    s.browser.address.replace("/c/c1?thread=4");
    s.browser.fire("popstate");
    expect(s.store.state.route).toEqual({ name: "chat", id: "c1", thread: 4, info: false });
    expect(s.store.state.thread).toMatchObject({ conversationId: "c1", rootSeq: 4 });
    s.browser.notifications.click("c2");
    expect(s.browser.address.current).toBe("/c/c2");
    expect(s.store.state.thread).toBeNull();
    await settle();
    // Only the conversation on screen has an open socket.
    expect(s.browser.sockets.all.filter((x) => x.path.includes("/conversations/") && !x.closed).map((x) => x.path.split("?")[0])).toEqual(["/conversations/c2/ws"]);
  });

  it("navigation stands alone: entering, switching and leaving a chat open and close it once", () => {
    const core = new StoreCore(initialState({ token: "t", user: ME, deviceId: "d" }, { name: "list" }, true, "system"), new FakeClock());
    const address = new FakeAddressBar("/");
    const calls: string[] = [];
    let connected = false;
    const nav = new Navigation(core, address, {
      openConversation: (id) => {
        calls.push(`open ${id}`);
        connected = true;
      },
      chatConnected: () => connected,
      leaveConversation: () => {
        calls.push("leave");
        connected = false;
      },
      openThread: (id, seq) => calls.push(`thread ${id} ${seq}`),
    });
    nav.navigate({ name: "chat", id: "c1", thread: null, info: false });
    nav.navigate({ name: "chat", id: "c1", thread: null, info: true });
    nav.navigate({ name: "chat", id: "c1", thread: 3, info: false }, true);
    nav.navigate({ name: "chat", id: "c2", thread: null, info: false });
    nav.navigate({ name: "settings" });
    expect(calls).toEqual(["open c1", "thread c1 3", "open c2", "leave"]);
    // The info panel pushed an entry that the thread then replaced.
    expect(address.entries).toEqual(["/", "/c/c1", "/c/c1?thread=3", "/c/c2", "/settings"]);
    expect(core.state.route).toEqual({ name: "settings" });
    // Signed in, the login route is the list.
    nav.apply({ name: "login" });
    expect(core.state.route).toEqual({ name: "list" });
  });
});
