// The theme (preferences.ts), uploads (uploads.ts), push (pushNotifications.ts) and the offline
// cache (localCache.ts).
import { describe, expect, it } from "vitest";
import { AppStore } from "../src/app/appStore";
import type { Upload } from "../src/app/storeCore";
import { fakeBrowser, message, settle } from "./fakes";
import { ME, YOU, startSignedIn } from "./storeSetup";

describe("settings", () => {
  it("the theme is applied at once and survives a reload", async () => {
    const browser = fakeBrowser("/login");
    const store = new AppStore(browser);
    expect(store.state.theme).toBe("system");
    store.setTheme("dark");
    expect(browser.themes).toEqual(["dark"]);
    expect(new AppStore(browser).state.theme).toBe("dark");
    browser.storage.setItem("edge-chat:theme", "purple");
    expect(new AppStore(browser).state.theme).toBe("system");
  });

  it("uploads: progress and failure update the one entry; removing it frees its preview", async () => {
    const s = await startSignedIn();
    const upload: Upload = { id: "u1", conversationId: "c1", threadRootSeq: null, name: "a.png", size: 10, contentType: "image/png", loaded: 0, previewUrl: "blob:1", status: "uploading", error: null, createdAt: 1, abort: () => undefined };
    s.store.addUpload(upload);
    s.store.addUpload({ ...upload, id: "u2", previewUrl: null });
    s.store.updateUpload("u1", { loaded: 5 });
    expect(s.store.state.uploads.map((u) => [u.id, u.loaded])).toEqual([["u1", 5], ["u2", 0]]);
    s.store.removeUpload("u1");
    expect(s.browser.revoked).toEqual(["blob:1"]);
    expect(s.store.state.uploads.map((u) => u.id)).toEqual(["u2"]);
    s.store.state.caps.upload = true;
    s.store.disableUploads();
    expect(s.store.state.caps.upload).toBe(false);
  });
});

describe("devices", () => {
  it("lists the account's devices as the server answers, and signs one out by its id", async () => {
    const s = await startSignedIn();
    const listed = [
      { id: "laptop-1", name: "Chrome on Linux", createdAt: 1, lastActiveAt: 5, current: true },
      { id: "phone/2", name: "Phone", createdAt: 2, lastActiveAt: null, current: false },
    ];
    s.browser.server.on("GET /devices", () => ({ json: { devices: listed } })).on("DELETE /devices/phone%2F2", () => ({ status: 204 }));
    expect(await s.store.devices()).toEqual(listed);
    await s.store.signOutDevice("phone/2");
    expect(s.browser.server.calls("DELETE /devices/phone%2F2")).toHaveLength(1);
    // An answer of another shape is refused, not shown.
    s.browser.server.on("GET /devices", () => ({ json: { devices: [{ id: "x" }] } }));
    await expect(s.store.devices()).rejects.toThrow(/unexpected answer/);
  });
});

describe("push", () => {
  it("enabling subscribes with the server's key and remembers it for the account; disabling drops it", async () => {
    const s = await startSignedIn();
    s.browser.server
      .on("GET /push/vapid-public-key", () => ({ json: { publicKey: "AQID" } }))
      .on("POST /push/subscriptions", () => ({ status: 204 }))
      .on("DELETE /push/subscriptions", () => ({ status: 204 }));
    s.browser.notifications.answer = "denied";
    await s.store.enablePush();
    expect(s.store.state.pushEnabled).toBe(false);
    expect(s.store.state.notice?.text).toMatch(/blocked/);
    s.browser.notifications.answer = "granted";
    await s.store.enablePush();
    expect([...s.browser.notifications.subscribed!.key]).toEqual([1, 2, 3]);
    expect(s.browser.server.calls("POST /push/subscriptions")[0]?.body).toMatchObject({ endpoint: "https://push.example/1" });
    expect(s.store.state.pushEnabled).toBe(true);
    const reload = await startSignedIn({ browser: s.browser, list: s.list });
    expect(reload.store.state.pushEnabled).toBe(true);
    await reload.store.disablePush();
    expect(reload.browser.notifications.subscribed).toBeNull();
    expect(reload.store.state.pushEnabled).toBe(false);
  });

  it("says what went wrong when the browser cannot subscribe, or the server cannot be reached", async () => {
    const s = await startSignedIn();
    s.browser.server.on("GET /push/vapid-public-key", () => ({ json: { publicKey: "AQID" } })).on("POST /push/subscriptions", () => ({ status: 204 }));
    s.browser.notifications.subscribe = async () => {
      throw new DOMException("Registration failed - push service not available", "AbortError");
    };
    await s.store.enablePush();
    expect(s.store.state.pushEnabled).toBe(false);
    expect(s.store.state.notice?.text).toBe("This browser could not subscribe to notifications (Registration failed - push service not available).");
    s.browser.server.on("GET /push/vapid-public-key", () => "network error");
    await s.store.enablePush();
    expect(s.store.state.notice?.text).toBe("Could not reach the server. Try again when online.");
  });

  it("while the app is hidden, a message from someone else shows a notification; visible or mine, none", async () => {
    const s = await startSignedIn();
    s.browser.notifications.granted = "granted";
    s.userSocket().open();
    s.userSocket().deliver({ type: "message", message: message("c1", 1, YOU.id, { body: "visible" }) });
    s.browser.fire("hidden");
    s.userSocket().deliver({ type: "message", message: message("c1", 2, ME.id) });
    s.userSocket().deliver({ type: "message", message: message("c1", 3, YOU.id, { body: "psst" }) });
    expect(s.browser.notifications.shown).toEqual([
      { title: "You There", options: expect.objectContaining({ body: "psst", tag: "c1", data: { conversationId: "c1" } }) },
    ]);
  });

  it("the probe shows push only when the endpoint exists and the browser can do it", async () => {
    const s = await startSignedIn();
    s.browser.server.on("GET /push/vapid-public-key", () => ({ json: { publicKey: "AQID" } }));
    s.browser.notifications.pushSupported = false;
    await s.store.probe.run();
    expect(s.store.state.caps.push).toBe(false);
    s.browser.notifications.pushSupported = true;
    await s.store.probe.run();
    expect(s.store.state.caps.push).toBe(true);
  });
});

describe("offline cache", () => {
  it("keeps the list, users and latest messages, written at most every half second, and opens from them offline", async () => {
    const stored = new Map([["c1", [1, 2, 3].map((seq) => message("c1", seq, YOU.id))]]);
    const s = await startSignedIn({ path: "/c/c1", stored });
    const local = await s.browser.localStores.open(ME.id);
    expect(local.kv.has("messages:c1")).toBe(false);
    await s.browser.clock.advance(500);
    expect((local.kv.get("messages:c1") as unknown[]).length).toBe(3);
    s.store.chats.receive([message("c1", 4, YOU.id)], "chat");
    s.browser.fire("pagehide");
    await settle();
    expect((local.kv.get("messages:c1") as unknown[]).length).toBe(4);

    // A reload while the server is unreachable opens from the cache.
    s.browser.isOnline = false;
    for (const route of ["GET /conversations", "GET /conversations/c1", "GET /conversations/c1/messages", "GET /users"]) s.browser.server.on(route, () => "network error");
    const offline = await startSignedIn({ browser: s.browser, list: s.list, path: "/c/c1" });
    expect(offline.store.state.connection).toBe("offline");
    expect(offline.store.title(offline.store.state.conversations.get("c1")!)).toBe("You There");
    expect(offline.store.view("c1").messages.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
    expect(offline.store.view("c1").error).toBeNull();
  });
});
