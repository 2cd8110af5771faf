// A "room" is the devices of one conversation, on either target:
//   - app: a group conversation of the app; each device holds its user socket (`GET /ws`, as a
//     real client does) and its conversation socket; the server acks the sender and broadcasts
//     `{type:"message"}` to the others, and the fan-out relays every message to the user sockets
//     of devices whose conversation socket did not ask for dedupe (one witness device per room).
//   - baseline: a bare room of bench/baseline; each device holds one socket, and every frame comes
//     back to every socket, the sender's copy serving as its ack.
//   - store: the baseline plus one SQLite insert per message before the broadcast.
//   - relay: the baseline plus what the contract adds without storage: each device also holds a
//     user socket (an Inbox object) that gets the room's messages, relayed in batches (called
//     for every member, with nothing to send for the devices that asked for dedupe, as the app).
// Both get the very same client frames, and the client does the same work per frame on both
// (one toString and one regex), so the two sides differ only in what the server does.
// An app room can also be an E2EE group (S7): its sender then sends `ciphertext` from a pool
// made beforehand (bench/lib/mlsClient.ts), and frames are matched by their clientMsgId, since
// the server relays no body to read a send time from.
import { api, closeAll, createGroup, isReadyFrame, openSocket, type Conversation, type User, type WebSocket } from "./clients.ts";
import type { Reachable } from "./proc.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const BODY_RE = /"body":"m(\d+)\.(\d+)@(\d+\.\d+)"/;
const MARK = Buffer.from('"body":"m');
const ACK_PREFIX = '{"type":"ack"';
const ERROR_PREFIX = '{"type":"error"';
/** E2EE rooms: a message's clientMsgId, "<room>.<device>.<n>", and the mark of a relayed ciphertext. */
const CLIENT_MSG_RE = /"clientMsgId":"[^".]+\.(\d+)\.(\d+)"/;
const CIPHER_MARK = Buffer.from('"kind":"encrypted"');
export const now = (): number => performance.timeOrigin + performance.now();

let roomCounter = 0;

/**
 * What a room runs on: the app (or "alone", the app with its remote work answered at once, or
 * "before", the app at an earlier commit: run.ts --before) or a baseline.
 */
export type RoomKind = "app" | "alone" | "before" | "baseline" | "store" | "relay";
/** The kinds that run the app's protocol. */
export const APP_KINDS: readonly RoomKind[] = ["app", "alone", "before"];

/**
 * Set by a scenario: ack(i, n, sentAt, at) and deliver(i, sender, n, sentAt, at) for the
 * conversation (room) sockets; relayed(i, sender, n, sentAt, at), optional, for user sockets.
 */
export interface RoomHandler {
  ack(i: number, n: number, sentAt: number, at: number): void;
  deliver(i: number, sender: number, n: number, sentAt: number, at: number): void;
  relayed?(i: number, sender: number, n: number, sentAt: number, at: number): void;
}

export class Room {
  readonly kind: RoomKind;
  readonly name: string;
  sockets: WebSocket[] = [];
  userSockets: WebSocket[] = [];
  handler: RoomHandler = { ack() {}, deliver() {} };
  sentBy: number[] = [];
  fanoutCounts: number[] = [];
  errors = 0;
  firstError: string | null = null;
  closedEarly = 0;
  receiptMs = 0;
  lastReceiptAt: number[] = [];
  receiptsSent = 0;
  /** Per device: whether its conversation socket asked for dedupe (its user socket then gets none of this room's messages). */
  dedupe: boolean[] = [];
  /** App rooms: the conversation, the device that created it, and every device. */
  conversationId = "";
  creator: User | null = null;
  devices: User[] = [];
  /**
   * E2EE rooms: the sender's ciphertexts, each sent in turn (and again from the start when the
   * pool runs out: the server reads only their headers, so a repeat costs it the same), and the
   * send time of each device's message n.
   */
  ciphertexts: string[] | null = null;
  ciphertextsSent = 0;
  private readonly sentAt: number[][] = [];

  constructor(kind: RoomKind, name: string) {
    this.kind = kind;
    this.name = name;
  }

  get size(): number {
    return this.sockets.length;
  }

  /** The frame device `i` sends for its message `n`: identical on both targets. */
  send(i: number, n: number): void {
    const t = now();
    this.sentBy[i] = (this.sentBy[i] ?? 0) + 1;
    if (this.ciphertexts) {
      (this.sentAt[i] ??= [])[n] = t;
      const ciphertext = this.ciphertexts[this.ciphertextsSent++ % this.ciphertexts.length];
      this.sockets[i]?.send(`{"type":"send","clientMsgId":"${this.name}.${i}.${n}","ciphertext":"${ciphertext}"}`);
      return;
    }
    this.sockets[i]?.send(`{"type":"send","clientMsgId":"${this.name}.${i}.${n}","body":"m${i}.${n}@${t.toFixed(3)}"}`);
  }

  /** Who sent a frame's message, its number and when, or null for a frame that carries none of the bench's messages. */
  private sentOf(text: string): { sender: number; n: number; sentAt: number } | null {
    if (this.ciphertexts) {
      const m = CLIENT_MSG_RE.exec(text);
      if (!m) return null;
      const [sender, n] = [Number(m[1]), Number(m[2])];
      const sentAt = this.sentAt[sender]?.[n];
      return sentAt === undefined ? null : { sender, n, sentAt };
    }
    const m = BODY_RE.exec(text);
    return m ? { sender: Number(m[1]), n: Number(m[2]), sentAt: Number(m[3]) } : null;
  }

  onFrame(i: number, buf: Buffer): void {
    const at = now();
    const text = buf.toString();
    const m = this.sentOf(text);
    if (!m) {
      if (text.startsWith(ERROR_PREFIX)) {
        this.errors++;
        this.firstError ??= text.slice(0, 300);
      }
      return;
    }
    const { sender, n, sentAt } = m;
    const isAck = APP_KINDS.includes(this.kind) ? text.startsWith(ACK_PREFIX) : sender === i;
    if (isAck) {
      this.handler.ack(i, n, sentAt, at);
      return;
    }
    this.handler.deliver(i, sender, n, sentAt, at);
    // A client acknowledges delivery as a watermark, at most once per receiptMs (app only).
    if (this.receiptMs > 0 && at - (this.lastReceiptAt[i] ?? 0) >= this.receiptMs) {
      const seq = /"seq":(\d+)/.exec(text)?.[1];
      if (seq) {
        this.lastReceiptAt[i] = at;
        this.receiptsSent++;
        this.sockets[i]?.send(`{"type":"delivered","seq":${seq}}`);
      }
    }
  }

  onUserFrame(i: number, buf: Buffer): void {
    if (buf.indexOf(this.ciphertexts ? CIPHER_MARK : MARK) < 0) return;
    this.fanoutCounts[i] = (this.fanoutCounts[i] ?? 0) + 1;
    if (!this.handler.relayed) return;
    const m = this.sentOf(buf.toString());
    if (m) this.handler.relayed(i, m.sender, m.n, m.sentAt, now());
  }

  /**
   * Whether the user socket of every device without a dedupe conversation socket got every bench
   * message of the others (app and relay rooms).
   */
  fanoutCaughtUp(): boolean {
    if (this.userSockets.length === 0) return true;
    const total = this.sentBy.reduce((a, b) => a + b, 0);
    return this.fanoutCounts.every((c, i) => this.dedupe[i] || c >= total - (this.sentBy[i] ?? 0));
  }

  async close(): Promise<void> {
    await closeAll([...this.sockets, ...this.userSockets]);
  }
}

/**
 * Opens an app room: a fresh group of `devices` (the first creates it), or the group
 * `conversationId` they are members of, with user and conversation sockets. Each device's
 * conversation socket asks for dedupe, as the web client's does, except the witness (device 1, a
 * receiver in S1), whose user socket still gets every message of the others so the relay's
 * latency is measured. `kind` "alone": the same room on the "alone" server (bench/alone), whose
 * users' objects are never reached unless it runs with --alone-answers d1, so its devices hold no
 * user socket (`userSockets: false`) unless they are.
 */
const WITNESS = 1;
const dedupeFor = (n: number): boolean[] => Array.from({ length: n }, (_, i) => i !== WITNESS);

export interface AppRoomOptions {
  receiptMs?: number;
  userSockets?: boolean;
  kind?: "app" | "alone" | "before";
  conversationId?: string | null;
  /** An E2EE group (`conversationId`): the first device's ciphertexts, which it sends instead of bodies. */
  ciphertexts?: string[] | null;
}

export async function openAppRoom(
  server: Reachable,
  devices: User[],
  { receiptMs = 0, userSockets = true, kind = "app", conversationId = null, ciphertexts = null }: AppRoomOptions = {},
): Promise<Room> {
  const room = new Room(kind, `r${Date.now().toString(36)}${roomCounter++}`);
  room.ciphertexts = ciphertexts;
  const [creator] = devices;
  if (!creator) throw new Error("openAppRoom: no devices");
  const conversation = conversationId ? { id: conversationId } : await createGroup(server.base, creator, devices.slice(1), room.name);
  room.conversationId = conversation.id;
  room.creator = creator;
  room.receiptMs = receiptMs;
  room.devices = devices;
  const n = devices.length;
  room.sentBy = new Array<number>(n).fill(0);
  room.fanoutCounts = new Array<number>(n).fill(0);
  room.lastReceiptAt = new Array<number>(n).fill(0);
  room.dedupe = dedupeFor(n);
  await Promise.all(
    devices.map(async (d, i) => {
      const headers = { authorization: `Bearer ${d.token}` };
      if (userSockets) {
        room.userSockets[i] = await openSocket(`${server.wsBase}/ws`, {
          headers,
          isReady: isReadyFrame,
          onFrame: (buf) => room.onUserFrame(i, asBuffer(buf)),
          keepalive: true,
        });
      }
      const socket = await openSocket(`${server.wsBase}/conversations/${conversation.id}/ws${room.dedupe[i] ? "?dedupe=1" : ""}`, {
        headers,
        isReady: isReadyFrame,
        onFrame: (buf) => room.onFrame(i, asBuffer(buf)),
        keepalive: true,
      });
      room.sockets[i] = socket;
      socket.on("close", () => room.closedEarly++);
    }),
  );
  return room;
}

/** A frame as a Buffer (what `ws` gives by default; an ArrayBuffer or fragments otherwise). */
function asBuffer(data: Buffer | ArrayBuffer | Buffer[]): Buffer {
  return Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}

/**
 * Room sockets for every device (`url(i)`), counted in `closedEarly` when they close; `before(i)`
 * runs first for each device (the relay baseline opens its user socket there).
 */
async function openRoomSockets(room: Room, n: number, url: (i: number) => string, before?: (i: number) => Promise<void>): Promise<void> {
  room.sentBy = new Array<number>(n).fill(0);
  room.fanoutCounts = new Array<number>(n).fill(0);
  room.lastReceiptAt = new Array<number>(n).fill(0);
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      await before?.(i);
      const socket = await openSocket(url(i), { onFrame: (buf) => room.onFrame(i, asBuffer(buf)), keepalive: true });
      room.sockets[i] = socket;
      socket.on("close", () => room.closedEarly++);
    }),
  );
}

/** A bare room (`path` "ws") or a store-baseline room ("store"): one socket per device. */
export async function openBaselineRoom(server: Reachable, n: number, path: "ws" | "store" = "ws"): Promise<Room> {
  const room = new Room(path === "ws" ? "baseline" : path, `b${Date.now().toString(36)}${roomCounter++}`);
  await openRoomSockets(room, n, () => `${server.wsBase}/${path}/${room.name}`);
  return room;
}

/**
 * Opens a relay-baseline room (bench/baseline RelayRoom + Inbox): each device holds a room socket
 * and, like an app device, a user socket (its Inbox) that gets every message of the room.
 */
export async function openRelayRoom(server: Reachable, n: number): Promise<Room> {
  const room = new Room("relay", `r${Date.now().toString(36)}${roomCounter++}`);
  room.dedupe = dedupeFor(n);
  await openRoomSockets(
    room,
    n,
    (i) => `${server.wsBase}/relay/${room.name}?u=${room.name}.${i}${room.dedupe[i] ? "&dedupe=1" : ""}`,
    async (i) => {
      const onFrame = (buf: Buffer | ArrayBuffer | Buffer[]) => room.onUserFrame(i, asBuffer(buf));
      room.userSockets[i] = await openSocket(`${server.wsBase}/inbox/${room.name}.${i}`, { onFrame, keepalive: true });
    },
  );
  return room;
}

/**
 * Waits until the app has finished the work a send leaves behind: the fan-out relayed every
 * message to the user sockets, and the outbox brought D1's copy of each conversation up to the
 * object's `lastSeq`. Returns the seconds it took, or null after `timeoutMs`.
 */
export async function waitQuiet(server: Reachable, rooms: Room[], timeoutMs = 120_000): Promise<number | null> {
  const app = rooms.filter((r) => r.kind === "app" || r.kind === "before");
  if (app.length === 0) return 0;
  const start = now();
  const deadline = start + timeoutMs;
  const pending = new Set(app);
  while (now() < deadline) {
    for (const room of [...pending]) {
      if (!room.fanoutCaughtUp()) continue;
      const token = room.creator?.token;
      const [{ conversation }, list] = await Promise.all([
        api<{ conversation: Conversation }>(server.base, "GET", `/conversations/${room.conversationId}`, { token }),
        api<{ conversations: Conversation[] }>(server.base, "GET", "/conversations", { token }),
      ]);
      const inD1 = list.conversations.find((c) => c.id === room.conversationId);
      if (inD1 && inD1.lastSeq === conversation.lastSeq) pending.delete(room);
    }
    if (pending.size === 0) return (now() - start) / 1000;
    await sleep(200);
  }
  return null;
}
