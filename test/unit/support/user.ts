// A user object's storage and sockets in memory: its SQLite migrated, and a `SocketHost` over
// MemorySockets tagged `d:<deviceId>` with a keep-alive timestamp the test sets, as the runtime
// records the last auto-answered ping.
import { migrate } from "../../../durable-objects/lib/migrate";
import { deviceTag, DeviceSockets, type SocketHost, type SocketState } from "../../../durable-objects/user/deviceSockets";
import { USER_MIGRATIONS } from "../../../durable-objects/user/schema";
import { relayedMessage, type ConversationSummary, type InboxEvent, type RelayedReceipt } from "../../../durable-objects/contract";
import type { Message } from "../../../protocol";
import { MemorySocket } from "./sockets";
import { memorySql } from "./sql";

export const TIMEOUT = 30_000;

/** The user object's SQLite, migrated. */
export function userSql() {
  const sql = memorySql();
  migrate(sql, USER_MIGRATIONS);
  return sql;
}

export class FakeSocketHost implements SocketHost {
  private readonly entries: { tags: string[]; socket: MemorySocket }[] = [];
  private readonly pings = new Map<unknown, number>();

  /** A socket of `deviceId`, its attachment a SocketState (overridable, or `null` for none). */
  connect(deviceId: string, state: Partial<SocketState> | null = {}, userId = "u"): MemorySocket {
    const socket = new MemorySocket(
      state === null ? undefined : { userId, deviceId, connectedAt: 0, lastFrameAt: 0, watch: [], ...state },
    );
    this.entries.push({ tags: [deviceTag(deviceId)], socket });
    return socket;
  }

  /** The runtime answered a keep-alive on `socket` at `at`. */
  ping(socket: MemorySocket, at: number): void {
    this.pings.set(socket, at);
  }

  getWebSockets(tag?: string): WebSocket[] {
    return this.entries.filter((e) => tag === undefined || e.tags.includes(tag)).map((e) => e.socket.ws);
  }

  getWebSocketAutoResponseTimestamp(ws: WebSocket): Date | null {
    const at = this.pings.get(ws);
    return at === undefined ? null : new Date(at);
  }
}

/** A host and the DeviceSockets over it, with the timeout TIMEOUT. */
export function deviceSockets() {
  const host = new FakeSocketHost();
  return { host, sockets: new DeviceSockets(host, { presenceTimeoutMs: TIMEOUT }) };
}

export const SUMMARY: ConversationSummary = { id: "c1", type: "group", title: "g", e2ee: false };

/** A stored message (of c1, from alice's phone, unless `over` says otherwise). */
export function message(seq: number, over: Partial<Message> = {}): Message {
  return {
    id: `m${seq}`,
    conversationId: "c1",
    seq,
    senderId: "alice",
    senderDeviceId: "alice-phone",
    clientMsgId: `k${seq}`,
    kind: "text",
    body: `hello ${seq}`,
    media: [],
    threadRootSeq: null,
    createdAt: 1000 + seq,
    ...over,
  };
}

/** A `message` event as the fan-out carries it. */
export function messageEvent(seq: number, over: Partial<Message> = {}): InboxEvent {
  const m = message(seq, over);
  return { type: "message", message: relayedMessage(m), conversation: { ...SUMMARY, id: m.conversationId } };
}

export function receipt(userId: string, readSeq: number, conversationId = "c1"): RelayedReceipt {
  return { conversationId, userId, deliveredSeq: readSeq, readSeq, updatedAt: 5000 + readSeq };
}
