// An in-memory stand-in for the hibernatable WebSockets the objects hold: it records what the
// object sends (parsed from JSON) and how it was closed, and keeps an attachment as workerd does
// (a structured clone, so a later change to the object passed in does not leak into it).

/** The standard readyState values (the same numbers as `WebSocket.OPEN` and `WebSocket.CLOSED`). */
export const OPEN = 1;
export const CLOSED = 3;

export class MemorySocket {
  static readonly OPEN = OPEN;
  static readonly CLOSED = CLOSED;

  readyState: number = OPEN;
  /** Every text frame sent, parsed as JSON (a frame that is not JSON is kept as its text). */
  readonly frames: unknown[] = [];
  closed: { code: number | undefined; reason: string | undefined } | null = null;
  private attachment: unknown = null;

  constructor(attachment?: unknown) {
    if (attachment !== undefined) this.serializeAttachment(attachment);
  }

  send(message: string | ArrayBuffer | ArrayBufferView): void {
    // workerd throws on a send after close; the objects catch it.
    if (this.readyState !== OPEN) throw new Error("Can't call WebSocket send() after close().");
    const text = typeof message === "string" ? message : new TextDecoder().decode(message);
    let frame: unknown;
    try {
      frame = JSON.parse(text);
    } catch {
      frame = text;
    }
    this.frames.push(frame);
  }

  close(code?: number, reason?: string): void {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this.closed = { code, reason };
  }

  serializeAttachment(attachment: unknown): void {
    this.attachment = structuredClone(attachment);
  }

  deserializeAttachment(): unknown {
    return structuredClone(this.attachment);
  }

  /** This stand-in as the objects' parameter type. */
  get ws(): WebSocket {
    return this as unknown as WebSocket;
  }
}

/** A frame of a given `type`, as the objects send them. */
export type Frame = { type: string } & Record<string, unknown>;

function isFrame(value: unknown): value is Frame {
  return typeof value === "object" && value !== null && typeof (value as { type?: unknown }).type === "string";
}

/** The frames `socket` got, optionally only those of one `type`. */
export function framesOf(socket: MemorySocket, type?: string): Frame[] {
  return socket.frames.filter(isFrame).filter((f) => type === undefined || f.type === type);
}

/** The frames `socket` got since the last call (for this socket), then forgets them. */
export function takeFrames(socket: MemorySocket, type?: string): Frame[] {
  const taken = socket.frames.splice(0, socket.frames.length);
  return taken.filter(isFrame).filter((f) => type === undefined || f.type === type);
}

/** The one frame of `type` that `socket` got; throws when there are none or several. */
export function onlyFrame(socket: MemorySocket, type: string): Frame {
  const frames = framesOf(socket, type);
  if (frames.length !== 1) throw new Error(`expected one ${type} frame, got ${frames.length}`);
  return frames[0]!;
}

/**
 * The sockets of one object, each tagged with its user as `ctx.getWebSockets(tag)` would find
 * them; `all()` and `ofUser()` are the shape the conversation's rules take. A closed socket stays
 * listed, as it does in workerd until its close event is handled.
 */
export class SocketRoom {
  private readonly sockets: { userId: string; socket: MemorySocket }[] = [];

  connect(userId: string, deviceId = `${userId}-device`, extra: Record<string, unknown> = {}): MemorySocket {
    const socket = new MemorySocket({ userId, deviceId, ...extra });
    this.sockets.push({ userId, socket });
    return socket;
  }

  all(): WebSocket[] {
    return this.sockets.map((s) => s.socket.ws);
  }

  ofUser(userId: string): WebSocket[] {
    return this.sockets.filter((s) => s.userId === userId).map((s) => s.socket.ws);
  }

  userOf(ws: WebSocket): string | null {
    return this.sockets.find((s) => s.socket.ws === ws)?.userId ?? null;
  }
}
