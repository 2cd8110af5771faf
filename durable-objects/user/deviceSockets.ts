// The user's device sockets (`GET /ws`) as the user object's modules see them: who holds each,
// when it last showed a sign of life, which users it watches, and whether it is live.
import type { Identity } from "../../kernel/identity";
import type { Settings } from "../../kernel/settings";
import { Attachments, fieldsOf } from "../lib/attachments";
import { trySend } from "../lib/socketIo";

/** Per-socket state, in the attachment so it survives hibernation (well under its 16 KiB). */
export interface SocketState extends Identity {
  connectedAt: number;
  lastFrameAt: number;
  /** The users this device watches (presence.watch), already filtered by the privacy rule. */
  watch: string[];
}

/** The part of `DurableObjectState` the sockets live in. */
export interface SocketHost {
  getWebSockets(tag?: string): WebSocket[];
  getWebSocketAutoResponseTimestamp(ws: WebSocket): Date | null;
}

/** The tag that finds a device's sockets without reading every socket's attachment. */
export const deviceTag = (deviceId: string) => `d:${deviceId}`;

export class DeviceSockets {
  private readonly attachments = new Attachments(readState);

  /**
   * A socket with no sign of life for PRESENCE_TIMEOUT_MS is not live (read at each use: a test
   * changes it on a live object).
   */
  constructor(
    private readonly host: SocketHost,
    private readonly settings: Pick<Settings, "presenceTimeoutMs">,
  ) {}

  all(): WebSocket[] {
    return this.host.getWebSockets();
  }

  ofDevice(deviceId: string): WebSocket[] {
    return this.host.getWebSockets(deviceTag(deviceId));
  }

  state(ws: WebSocket): SocketState | null {
    return this.attachments.read(ws);
  }

  write(ws: WebSocket, state: SocketState): void {
    this.attachments.write(ws, state);
  }

  /** The last sign of life: a frame, a keep-alive (answered by the runtime), or the handshake. */
  lastAlive(ws: WebSocket): number {
    const state = this.state(ws);
    const ping = this.host.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
    return Math.max(ping, state?.lastFrameAt ?? 0, state?.connectedAt ?? 0);
  }

  /** When a socket stops being live unless it shows a sign of life. */
  expiresAt(ws: WebSocket): number {
    return this.lastAlive(ws) + this.settings.presenceTimeoutMs;
  }

  live(now: number, sockets = this.all()): WebSocket[] {
    return sockets.filter((ws) => ws.readyState === WebSocket.OPEN && this.expiresAt(ws) > now);
  }

  /**
   * The devices holding an open socket. A socket whose attachment cannot be read names no device
   * (""), which no conversation socket covers: an answer naming it is then never relied on.
   */
  openDevices(): string[] {
    return [...new Set(this.all().filter((ws) => ws.readyState === WebSocket.OPEN).map((ws) => this.state(ws)?.deviceId ?? ""))];
  }

  /** Sends one encoded frame to `sockets`, but those of `exceptDeviceId`. */
  sendAll(sockets: WebSocket[], frame: string, exceptDeviceId: string | null = null): void {
    if (sockets.length === 0) return;
    const except = exceptDeviceId === null ? [] : this.ofDevice(exceptDeviceId);
    for (const ws of sockets) if (!except.includes(ws)) trySend(ws, frame);
  }
}

function readState(value: unknown): SocketState | null {
  const v = fieldsOf(value);
  if (!v || typeof v.userId !== "string" || typeof v.deviceId !== "string") return null;
  return {
    userId: v.userId,
    deviceId: v.deviceId,
    connectedAt: typeof v.connectedAt === "number" ? v.connectedAt : 0,
    lastFrameAt: typeof v.lastFrameAt === "number" ? v.lastFrameAt : 0,
    watch: Array.isArray(v.watch) ? v.watch.filter((x): x is string => typeof x === "string") : [],
  };
}
