// The benchmark baseline: one hibernating Durable Object per room name that relays every text
// frame it receives to every socket of the room, the sender's included (its copy is its "ack").
// Nothing is parsed, stored or checked: this is as fast as a broadcast gets on this runtime.
import { DurableObject } from "cloudflare:workers";

/** The bindings of bench/baseline/wrangler.toml. */
interface BaselineEnv {
  ROOM: DurableObjectNamespace<Room>;
  STORE_ROOM: DurableObjectNamespace<StoreRoom>;
  RELAY_ROOM: DurableObjectNamespace<RelayRoom>;
  INBOX: DurableObjectNamespace<Inbox>;
}

/** A frame as a hibernating socket hands it over. */
type Frame = string | ArrayBuffer;

/** What every object here shares: hibernating sockets, the app's keep-alive, a plain close. */
class SocketObject extends DurableObject<BaselineEnv> {
  constructor(ctx: DurableObjectState, env: BaselineEnv) {
    super(ctx, env);
    // The same keep-alive as the app: answered by the runtime without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  async fetch(request: Request): Promise<Response> {
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    this.accepted(server, request);
    return new Response(null, { status: 101, webSocket: client });
  }

  accepted(_server: WebSocket, _request: Request): void {}

  /** Every frame to every socket of this object. */
  sendAll(frames: Frame[]): void {
    const sockets = this.ctx.getWebSockets();
    for (const frame of frames) {
      for (const ws of sockets) {
        try {
          ws.send(frame);
        } catch {
          // closing
        }
      }
    }
  }

  async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, "closed");
    } catch {
      // already closed
    }
  }
}

export class Room extends SocketObject {
  async webSocketMessage(_ws: WebSocket, data: Frame): Promise<void> {
    this.sendAll([data]);
  }
}

// The "store" baseline: the naive way to persist, one SQLite insert per message and then the
// broadcast (no outbox, no idempotency, no receipts, no fan-out). What storing every message
// costs on this runtime before anything else the app does.
export class StoreRoom extends Room {
  constructor(ctx: DurableObjectState, env: BaselineEnv) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)");
  }

  override async webSocketMessage(ws: WebSocket, data: Frame): Promise<void> {
    this.ctx.storage.sql.exec("INSERT INTO messages (body) VALUES (?)", data);
    await super.webSocketMessage(ws, data);
  }
}

// The "relay" baseline: the least the app's contract asks of the runtime beyond a broadcast.
// Every message must also reach each member's user socket through that member's own object
// (API.md, User socket), so a RelayRoom broadcasts like a Room and, every 25 ms (the app's
// BATCH_DELAY_MS), hands what it relayed to each member's Inbox in one call, and each Inbox sends
// every frame to its sockets. Still no storage, no auth, no parsing.
//
// Like the app, it does not rely on its timer alone: on a saturated runtime workerd fires no timer
// until the stream of socket messages stops, so a message that finds the batch overdue relays it.
const RELAY_DELAY_MS = 25;

export class RelayRoom extends Room {
  declare pending: Frame[];
  declare pendingSince: number;
  declare timer: number | null;

  constructor(ctx: DurableObjectState, env: BaselineEnv) {
    super(ctx, env);
    this.pending = [];
    this.pendingSince = 0;
    this.timer = null;
  }

  /**
   * The member this socket belongs to (`?u=`), for the relay, and whether it is the member's
   * copy of the room (`?dedupe=1`, as the app's conversation sockets): then the member's Inbox
   * still gets its call but has nothing to send (the app's user object skips that device).
   */
  override accepted(server: WebSocket, request: Request): void {
    const params = new URL(request.url).searchParams;
    server.serializeAttachment({ u: params.get("u") ?? "", dedupe: params.get("dedupe") === "1" });
  }

  override async webSocketMessage(ws: WebSocket, data: Frame): Promise<void> {
    await super.webSocketMessage(ws, data);
    if (this.pending.length === 0) this.pendingSince = Date.now();
    this.pending.push(data);
    if (Date.now() - this.pendingSince >= RELAY_DELAY_MS) void this.relay();
    else this.timer ??= setTimeout(() => this.relay(), RELAY_DELAY_MS);
  }

  async relay(): Promise<void> {
    const frames = this.pending;
    this.pending = [];
    clearTimeout(this.timer);
    this.timer = null;
    const members = new Map<string, boolean>();
    for (const ws of this.ctx.getWebSockets()) {
      const { u, dedupe } = ws.deserializeAttachment() as { u: string; dedupe: boolean };
      members.set(u, (members.get(u) ?? true) && dedupe);
    }
    await Promise.all([...members].map(([u, dedupe]) => this.env.INBOX.get(this.env.INBOX.idFromName(u)).deliver(dedupe ? [] : frames)));
  }
}

/** A member's own object in the relay baseline: its user socket(s). */
export class Inbox extends SocketObject {
  deliver(frames: Frame[]): void {
    this.sendAll(frames);
  }
}

/** What the entry needs of each namespace: a stub by name that takes the upgrade request. */
interface FetchNamespace {
  idFromName(name: string): DurableObjectId;
  get(id: DurableObjectId): { fetch(request: Request): Promise<Response> };
}

export default {
  async fetch(request: Request, env: BaselineEnv): Promise<Response> {
    const { pathname } = new URL(request.url);
    const match = /^\/(ws|store|relay|inbox)\/([\w.-]{1,64})$/.exec(pathname);
    if (match && request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      const [, kind, name = ""] = match;
      const ns: FetchNamespace | undefined = { ws: env.ROOM, store: env.STORE_ROOM, relay: env.RELAY_ROOM, inbox: env.INBOX }[kind ?? ""];
      if (!ns) throw new Error(`no namespace for ${kind}`);
      return ns.get(ns.idFromName(name)).fetch(request);
    }
    return new Response(pathname === "/" ? "ok" : "not found", { status: pathname === "/" ? 200 : 404 });
  },
};
