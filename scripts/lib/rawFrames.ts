// Text frames holding ill-formed UTF-8, over a raw TCP connection to the real server: a browser's
// or Node's WebSocket only sends well-formed text, and the workerd test runtime has no socket of
// its own, so this is the one place such bytes reach the conversation object.
//
// workerd decodes every text frame with replacement before the object sees it (docs/api.md,
// WebSockets), so the object cannot tell bad bytes from a real U+FFFD. What is checked: every
// frame gets an answer the API documents (an `error` frame, or an `ack` for a send that is valid
// once decoded, or close 4008/1009), never another close and never a 5xx; and every ack names a
// message that is stored as acked (the body with U+FFFD where the bad bytes were), so what is
// acked is what is kept; nothing else is stored.
import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import type { Rng } from "./prng.ts";
import { apiRequest } from "./http.ts";

/** Ill-formed UTF-8: a byte never used, overlong forms, an encoded surrogate, past U+10FFFF, truncated and stray sequences. */
const BAD_BYTES: ReadonlyArray<{ name: string; bytes: number[] }> = [
  { name: "FF", bytes: [0xff] },
  { name: "FE FF", bytes: [0xfe, 0xff] },
  { name: "overlong C0 AF", bytes: [0xc0, 0xaf] },
  { name: "overlong E0 80 80", bytes: [0xe0, 0x80, 0x80] },
  { name: "surrogate ED A0 80", bytes: [0xed, 0xa0, 0x80] },
  { name: "past U+10FFFF F4 90 80 80", bytes: [0xf4, 0x90, 0x80, 0x80] },
  { name: "truncated C3", bytes: [0xc3] },
  { name: "truncated E2 82", bytes: [0xe2, 0x82] },
  { name: "stray continuation 80", bytes: [0x80] },
  { name: "five bytes F8 88 80 80 80", bytes: [0xf8, 0x88, 0x80, 0x80, 0x80] },
];

/** Where the bytes go: `@` in each template is replaced by them. */
const PLACES: ReadonlyArray<{ name: string; template: (n: number) => string; isSend: boolean }> = [
  { name: "send body", template: (n) => `{"type":"send","clientMsgId":"raw-${n}","body":"a@b"}`, isSend: true },
  { name: "send clientMsgId", template: (n) => `{"type":"send","clientMsgId":"raw-${n}-@","body":"x"}`, isSend: true },
  { name: "frame type", template: () => `{"type":"se@nd","clientMsgId":"raw","body":"x"}`, isSend: false },
  { name: "a key", template: (n) => `{"type":"send","clientMsgId":"raw-${n}","bo@dy":"x"}`, isSend: false },
  { name: "typing, an extra field", template: () => `{"type":"typing","on":true,"x":"@"}`, isSend: false },
  { name: "read, in the number", template: () => `{"type":"read","seq":1@}`, isSend: false },
  { name: "outside the JSON", template: () => `@{"type":"typing","on":true}`, isSend: false },
];

export interface RawFramesReport {
  tried: number;
  /** What answered the frames, by kind ("error frame", "ack", "close 4008", ...). */
  answers: Map<string, number>;
  /** Acks whose message is not stored as acked (or stored messages no ack named). */
  ackedNotAsStored: number;
  /** Answers the API does not document for a frame (another close code, no answer at all). */
  undocumented: number;
}

interface ServerFrame {
  opcode: number;
  payload: Buffer;
}

/** A client end of a WebSocket over a plain TCP socket: masked text frames out, frames in. */
class RawSocket {
  private buffer: Buffer = Buffer.alloc(0);
  private readonly frames: ServerFrame[] = [];
  private waiter: (() => void) | null = null;
  private readonly socket: Socket;
  ended = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.parse();
    });
    const end = () => {
      this.ended = true;
      this.waiter?.();
    };
    socket.on("close", end);
    socket.on("error", end);
  }

  static async open(base: string, path: string): Promise<RawSocket> {
    const url = new URL(base);
    const socket = connect(Number(url.port), url.hostname);
    const key = randomBytes(16).toString("base64");
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    const rest = await new Promise<Buffer>((resolve, reject) => {
      let head = Buffer.alloc(0);
      const timer = setTimeout(() => reject(new Error("raw socket: no handshake answer")), 15_000);
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        clearTimeout(timer);
        socket.off("data", onData);
        const status = head.subarray(0, end).toString();
        if (!status.startsWith("HTTP/1.1 101")) reject(new Error(`raw socket: handshake ${status.split("\r\n")[0]}`));
        else resolve(head.subarray(end + 4));
      };
      socket.on("data", onData);
      socket.once("error", reject);
    });
    const raw = new RawSocket(socket);
    raw.buffer = rest;
    raw.parse();
    return raw;
  }

  private parse(): void {
    for (;;) {
      if (this.buffer.length < 2) break;
      const short = this.buffer[1]! & 127;
      let offset = 2;
      let length = short;
      if (short === 126) {
        if (this.buffer.length < 4) break;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (short === 127) {
        if (this.buffer.length < 10) break;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.buffer.length < offset + length) break;
      this.frames.push({ opcode: this.buffer[0]! & 15, payload: this.buffer.subarray(offset, offset + length) });
      this.buffer = this.buffer.subarray(offset + length);
    }
    this.waiter?.();
  }

  sendText(payload: Buffer): void {
    const mask = randomBytes(4);
    const length = payload.length < 126 ? Buffer.from([0x80 | payload.length]) : Buffer.from([0x80 | 126, payload.length >> 8, payload.length & 255]);
    this.socket.write(Buffer.concat([Buffer.from([0x81]), length, mask, Buffer.from(payload.map((x, i) => x ^ mask[i % 4]!))]));
  }

  /** The next frame from the server, or null when the connection ended or nothing came in time. */
  async next(timeoutMs: number): Promise<ServerFrame | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0 && !this.ended && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
    return this.frames.shift() ?? null;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** The text the server decodes bad bytes to: one U+FFFD per maximal ill-formed subpart (WHATWG). */
const decodeLikeTheServer = (bytes: Buffer) => new TextDecoder().decode(bytes);

/**
 * Sends `count` frames (CRASH_RAW_FRAMES, default 300) of ill-formed UTF-8 to a conversation
 * socket of `token`'s user, one at a time, each answered before the next.
 */
export async function rawFrames(base: string, rng: Rng, token: string, userId: string, conversationId: string, onStatus: (status: number) => void): Promise<RawFramesReport> {
  const count = /^\d+$/.test(process.env.CRASH_RAW_FRAMES ?? "") ? Number(process.env.CRASH_RAW_FRAMES) : 300;
  const report: RawFramesReport = { tried: 0, answers: new Map(), ackedNotAsStored: 0, undocumented: 0 };
  const answered = (kind: string) => report.answers.set(kind, (report.answers.get(kind) ?? 0) + 1);
  const get = async <T>(path: string): Promise<T> => {
    const res = await apiRequest(base, path === "/auth/ticket" ? "POST" : "GET", path, { token, timeoutMs: 15_000 });
    onStatus(res.status);
    if (res.status !== 200) throw new Error(`raw frames: ${path}: ${res.status} ${res.text.slice(0, 200)}`);
    return JSON.parse(res.text) as T;
  };
  const lastSeq = async () => (await get<{ conversation: { lastSeq: number } }>(`/conversations/${conversationId}`)).conversation.lastSeq;
  const open = async () => {
    const { ticket } = await get<{ ticket: string }>("/auth/ticket");
    const socket = await RawSocket.open(base, `/conversations/${encodeURIComponent(conversationId)}/ws?ticket=${encodeURIComponent(ticket)}`);
    const ready = await socket.next(15_000);
    if (!ready || !ready.payload.toString().includes('"ready"')) throw new Error(`raw frames: no ready frame (${ready?.payload.toString().slice(0, 200)})`);
    return socket;
  };

  const seqBefore = await lastSeq();
  /** seq -> the body and clientMsgId its ack carried. */
  const acks = new Map<number, { body: string; clientMsgId: string }>();
  let socket = await open();
  try {
    for (let n = 0; n < count; n++) {
      if (socket.ended) socket = await open();
      const bad = rng.pick(BAD_BYTES);
      const place = rng.pick(PLACES);
      const [before, after] = place.template(n).split("@") as [string, string];
      const payload = Buffer.concat([Buffer.from(before), Buffer.from(bad.bytes), Buffer.from(after)]);
      socket.sendText(payload);
      report.tried++;
      const frame = await socket.next(10_000);
      if (frame === null) {
        report.undocumented++;
        answered("no answer");
        continue;
      }
      if (frame.opcode === 8) {
        const code = frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1005;
        answered(`close ${code}`);
        if (code !== 4008 && code !== 1009) report.undocumented++;
        socket.destroy();
        socket = await open();
        continue;
      }
      const text = frame.payload.toString();
      const parsed = JSON.parse(text) as { type: string; code?: unknown; message?: { seq: number; body: string; clientMsgId: string }; clientMsgId?: string };
      if (parsed.type === "closing") {
        // The notice before a close the server starts: the close follows.
        const close = await socket.next(10_000);
        const code = close && close.opcode === 8 && close.payload.length >= 2 ? close.payload.readUInt16BE(0) : 0;
        answered(`close ${code}`);
        if (code !== 4008 && code !== 1009) report.undocumented++;
        socket.destroy();
        socket = await open();
      } else if (parsed.type === "error" && typeof parsed.code === "string") {
        answered("error frame");
      } else if (parsed.type === "ack" && place.isSend && parsed.message) {
        answered("ack (U+FFFD in place of the bytes)");
        acks.set(parsed.message.seq, { body: parsed.message.body, clientMsgId: parsed.message.clientMsgId });
        // The ack shows the text as the server decoded it, bad bytes as U+FFFD.
        const expected = JSON.parse(decodeLikeTheServer(payload)) as { body: string; clientMsgId: string };
        if (parsed.message.body !== expected.body || parsed.message.clientMsgId !== expected.clientMsgId) report.ackedNotAsStored++;
      } else {
        answered(`unexpected ${parsed.type}`);
        report.undocumented++;
      }
    }
  } finally {
    socket.destroy();
  }

  // What is stored is exactly what was acked: nothing more, nothing else.
  const seqAfter = await lastSeq();
  if (seqAfter - seqBefore !== acks.size) report.ackedNotAsStored += Math.abs(seqAfter - seqBefore - acks.size);
  for (let after = seqBefore; after < seqAfter; ) {
    const page = await get<{ messages: Array<{ seq: number; body: string; clientMsgId: string; senderId: string }>; hasMore: boolean }>(`/conversations/${conversationId}/messages?after=${after}&limit=500`);
    for (const m of page.messages) {
      const ack = acks.get(m.seq);
      if (!ack || ack.body !== m.body || ack.clientMsgId !== m.clientMsgId || m.senderId !== userId) report.ackedNotAsStored++;
    }
    if (page.messages.length === 0) break;
    after = page.messages[page.messages.length - 1]!.seq;
  }
  return report;
}
