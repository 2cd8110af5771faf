// A reconnecting WebSocket (partysocket) that authenticates every (re)connect with a fresh
// single-use ticket from POST /auth/ticket, parses every frame with the protocol's schema, keeps
// itself alive with `ping`, and stops for good on the close codes that mean "do not come back".
import ReconnectingWebSocket from "partysocket/ws";
import { CLOSE, ClosingFrame } from "../../../protocol";

export type SocketStatus = "connecting" | "open" | "closed";

export interface LiveSocketOptions<In> {
  /** The path and query to connect to, asked before each attempt (so `after=` is current). */
  path: () => string;
  ticket: () => Promise<string>;
  parse: (json: unknown) => In | null;
  onFrame: (frame: In) => void;
  onStatus?: (status: SocketStatus) => void;
  /** 4001 (logged out), 4003 (removed), 4010 (protocol version): no reconnect after these. */
  onFinalClose?: (code: number, reason: string) => void;
  /** How long an open socket may stay silent before its `ready` (default READY_SILENCE_MS). */
  readySilenceMs?: number;
}

/** What the store holds of a socket: a fake in unit tests, LiveSocket in the app. */
export interface LiveChannel<Out> {
  readonly isOpen: boolean;
  /** Sends a frame if open; returns false (and sends nothing) otherwise. */
  transmit(frame: Out): boolean;
  reconnectNow(): void;
  close(): void;
}

export type SocketFactory = <In, Out>(options: LiveSocketOptions<In>) => LiveChannel<Out>;

const FINAL_CODES = new Set<number>([CLOSE.unauthorized, CLOSE.removed, CLOSE.protocolVersion]);
/** The server counts a user socket alive for 60 s after its last frame. */
const KEEPALIVE_MS = 25_000;
/**
 * Every socket says `ready` after its replay. An object reset while it answered the handshake can
 * lose the replay and `ready` (the frames waited behind a write that never completed) and leave the
 * socket open: silence this long before `ready` means that, and the socket reconnects, resuming
 * from what it holds. Counted from the last frame, so a long replay is not cut.
 */
const READY_SILENCE_MS = 15_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class LiveSocket<In, Out> implements LiveChannel<Out> {
  private readonly ws: ReconnectingWebSocket;
  private readonly keepalive: ReturnType<typeof setInterval>;
  private attempts = 0;
  private closed = false;
  private readyDeadline: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly options: LiveSocketOptions<In>) {
    this.ws = new ReconnectingWebSocket(() => this.url(), undefined, {
      minReconnectionDelay: 1000,
      maxReconnectionDelay: 15_000,
      reconnectionDelayGrowFactor: 1.6,
      connectionTimeout: 8000,
      // Nothing is queued while closed: messages go through the outbox, and a stale typing or
      // read frame is worth nothing later.
      maxEnqueuedMessages: 0,
      shouldReconnectOnClose: (event) => !FINAL_CODES.has(event.code),
    });
    this.ws.addEventListener("open", () => {
      this.attempts = 0;
      this.awaitReady();
      options.onStatus?.("open");
    });
    this.ws.addEventListener("close", (event) => {
      this.stopAwaitingReady();
      this.ended(event.code, event.reason);
    });
    this.ws.addEventListener("message", (event) => {
      if (typeof event.data !== "string" || event.data === "pong") return;
      let json: unknown;
      try {
        json = JSON.parse(event.data);
      } catch {
        return;
      }
      if (this.readyDeadline !== null) {
        if (typeof json === "object" && json !== null && "type" in json && json.type === "ready") this.stopAwaitingReady();
        else this.awaitReady();
      }
      // The server's last frame before it closes (docs/api.md): act now, since the close itself
      // may take ~15 s to arrive. A final code ends the socket; a rate limit waits for the close
      // and the usual backoff; anything else reconnects at once.
      const closing = ClosingFrame.safeParse(json);
      if (closing.success) {
        const { code, reason } = closing.data;
        if (FINAL_CODES.has(code)) {
          this.ended(code, reason);
          this.ws.close(1000, "closing");
        } else if (code !== CLOSE.rateLimited) {
          options.onStatus?.("closed");
          this.ws.reconnect();
        }
        return;
      }
      const frame = options.parse(json);
      if (frame) options.onFrame(frame);
    });
    this.keepalive = setInterval(() => {
      if (this.ws.readyState === ReconnectingWebSocket.OPEN) this.ws.send("ping");
    }, KEEPALIVE_MS);
  }

  /** (Re)starts the wait for `ready`: past it, the handshake's frames were lost. */
  private awaitReady(): void {
    this.stopAwaitingReady();
    this.readyDeadline = setTimeout(() => {
      this.readyDeadline = null;
      if (this.closed) return;
      this.options.onStatus?.("closed");
      this.ws.reconnect();
    }, this.options.readySilenceMs ?? READY_SILENCE_MS);
  }

  private stopAwaitingReady(): void {
    if (this.readyDeadline !== null) clearTimeout(this.readyDeadline);
    this.readyDeadline = null;
  }

  /** The socket closed, or said it is closing: a final code ends it for good. */
  private ended(code: number, reason: string): void {
    if (this.closed) return;
    if (FINAL_CODES.has(code)) {
      this.closed = true;
      this.options.onFinalClose?.(code, reason);
    }
    this.options.onStatus?.("closed");
  }

  private async url(): Promise<string> {
    // partysocket's backoff has no jitter; after a deploy every client reconnects at once.
    if (this.attempts++ > 0) await sleep(Math.random() * 1000);
    this.options.onStatus?.("connecting");
    const ticket = await this.options.ticket();
    const path = this.options.path();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const sep = path.includes("?") ? "&" : "?";
    return `${scheme}//${location.host}${path}${sep}ticket=${encodeURIComponent(ticket)}`;
  }

  get isOpen(): boolean {
    return this.ws.readyState === ReconnectingWebSocket.OPEN;
  }

  transmit(frame: Out): boolean {
    if (!this.isOpen) return false;
    return this.ws.send(JSON.stringify(frame));
  }

  /** Connect now instead of at the end of the backoff (the browser just came online). */
  reconnectNow(): void {
    if (this.closed || this.isOpen) return;
    this.attempts = 0;
    this.ws.reconnect();
  }

  close(): void {
    this.closed = true;
    this.stopAwaitingReady();
    clearInterval(this.keepalive);
    this.ws.close(1000, "bye");
  }
}
