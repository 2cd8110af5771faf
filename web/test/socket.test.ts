// LiveSocket (web/src/lib/socket.ts) against a fake WebSocket: the server's `closing` frame is
// acted on at once, without waiting for the close (which workerd may deliver ~15 s later).
import { afterEach, describe, expect, it, vi } from "vitest";
import { CLOSE } from "../../protocol";
import { LiveSocket } from "../src/lib/socket";

class FakeWebSocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  static all: FakeWebSocket[] = [];
  readyState = FakeWebSocket.CONNECTING;
  binaryType = "blob";
  closedWith: number | null = null;
  constructor(readonly url: string) {
    super();
    FakeWebSocket.all.push(this);
  }
  send(): void {}
  close(code = 1000): void {
    this.closedWith = code;
    this.readyState = FakeWebSocket.CLOSED;
  }
  open(): void {
    this.readyState = FakeWebSocket.OPEN;
    this.dispatchEvent(new Event("open"));
  }
  frame(data: unknown): void {
    this.dispatchEvent(new MessageEvent("message", { data: JSON.stringify(data) }));
  }
}

const until = async (check: () => boolean) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(check()).toBe(true);
};

afterEach(() => {
  vi.unstubAllGlobals();
  FakeWebSocket.all = [];
});

describe("LiveSocket", () => {
  it("ends for good on a closing frame with a final code, before any close arrives", async () => {
    vi.stubGlobal("WebSocket", FakeWebSocket);
    vi.stubGlobal("location", { protocol: "http:", host: "chat.test" });
    const finals: number[] = [];
    const statuses: string[] = [];
    const socket = new LiveSocket({
      path: () => "/ws",
      ticket: async () => "t",
      parse: () => null,
      onFrame: () => {},
      onStatus: (s) => statuses.push(s),
      onFinalClose: (code) => finals.push(code),
    });
    await until(() => FakeWebSocket.all.length === 1);
    const ws = FakeWebSocket.all[0]!;
    ws.open();
    ws.frame({ type: "closing", code: CLOSE.unauthorized, reason: "logged out" });
    expect(finals).toEqual([CLOSE.unauthorized]);
    expect(statuses.at(-1)).toBe("closed");
    expect(ws.closedWith).not.toBeNull();
    await new Promise((r) => setTimeout(r, 50));
    expect(FakeWebSocket.all.length).toBe(1); // no reconnect
    socket.close();
  });

  it("reconnects at once on a closing frame with another code (not a rate limit)", async () => {
    vi.stubGlobal("WebSocket", FakeWebSocket);
    vi.stubGlobal("location", { protocol: "http:", host: "chat.test" });
    const socket = new LiveSocket({ path: () => "/ws", ticket: async () => "t", parse: () => null, onFrame: () => {} });
    await until(() => FakeWebSocket.all.length === 1);
    FakeWebSocket.all[0]!.open();
    FakeWebSocket.all[0]!.frame({ type: "closing", code: CLOSE.idle, reason: "keep-alive timeout" });
    await until(() => FakeWebSocket.all.length === 2);
    socket.close();
  });

  it("reconnects when an open socket stays silent before its ready, and keeps one that said ready", async () => {
    vi.stubGlobal("WebSocket", FakeWebSocket);
    vi.stubGlobal("location", { protocol: "http:", host: "chat.test" });
    const frames: unknown[] = [];
    const socket = new LiveSocket({ path: () => "/ws", ticket: async () => "t", parse: (json) => json, onFrame: (f) => frames.push(f), readySilenceMs: 40 });
    await until(() => FakeWebSocket.all.length === 1);
    const first = FakeWebSocket.all[0]!;
    first.open();
    // Frames before ready (a replay) push the deadline back; then silence: the handshake was lost.
    first.frame({ type: "message", seq: 1 });
    await new Promise((r) => setTimeout(r, 25));
    first.frame({ type: "message", seq: 2 });
    await new Promise((r) => setTimeout(r, 25));
    expect(FakeWebSocket.all.length).toBe(1);
    await until(() => FakeWebSocket.all.length === 2);
    expect(first.closedWith).not.toBeNull();
    expect(frames).toEqual([{ type: "message", seq: 1 }, { type: "message", seq: 2 }]);

    const second = FakeWebSocket.all[1]!;
    second.open();
    second.frame({ type: "ready", lastSeq: 2 });
    await new Promise((r) => setTimeout(r, 120));
    expect(FakeWebSocket.all.length).toBe(2);
    expect(second.closedWith).toBeNull();
    socket.close();
  });
});
