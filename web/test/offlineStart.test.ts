// Started while offline (issue 33, item 7): the banner says so, ticks keep the colour they had,
// and the attach and voice controls found by the last probe stay.
import { describe, expect, it } from "vitest";
import { AppStore } from "../src/app/appStore";
import { tickFor } from "../src/state/receipts";
import { message, settle } from "./fakes";
import { ME, YOU, startSignedIn } from "./storeSetup";

describe("a start while offline", () => {
  it("is offline, not connecting, with the cached receipts and the server parts found before", async () => {
    const s = await startSignedIn({ path: "/c/c1", stored: new Map([["c1", [message("c1", 1, ME.id)]]]) });
    s.browser.server
      .on("GET /conversations/c1/receipts", () => ({ json: { receipts: [{ userId: YOU.id, deliveredSeq: 1, readSeq: 1, updatedAt: 2 }] } }))
      .on("GET /media/capability-probe", () => ({ status: 404, json: { error: { code: "not_found", message: "no such media" } } }));
    await s.store.probe.run();
    s.store.navigate({ name: "list" });
    s.store.navigate({ name: "chat", id: "c1", thread: null, info: false });
    await settle();
    const members = [ME.id, YOU.id];
    expect(tickFor(1, ME.id, members, s.store.view("c1").receipts).tick).toBe("read");
    expect(s.store.state.caps.upload).toBe(true);
    await s.browser.clock.advance(1000); // the cache's gathered write

    // Reloaded without a network: nothing answers.
    s.browser.isOnline = false;
    s.browser.fetch = async () => {
      throw new TypeError("Failed to fetch");
    };
    const store = new AppStore(s.browser);
    await store.start();
    await settle();
    s.browser.sockets.latest("/ws").drop(); // its first attempt fails
    await settle();
    expect(store.state.connection).toBe("offline");
    expect(store.state.caps.upload).toBe(true);
    expect(store.view("c1").messages.map((m) => m.seq)).toEqual([1]);
    expect(tickFor(1, ME.id, members, store.view("c1").receipts).tick).toBe("read");
  });
});
