// One Durable Object per user: the user's device sockets (`GET /ws`), and the registry of which
// conversation objects each device holds sockets in, so that logout can close them all.
import { DurableObject } from "cloudflare:workers";
import { CLOSE, PROTOCOL_VERSION, type UserServerFrame } from "../../protocol";
import { readSettings, type Settings } from "../../worker/lib/settings";
import { migrate } from "../lib/migrate";
import { jsonError, readIdentity } from "../lib/sockets";

const MIGRATIONS = [
  // Where each device has (or had) conversation sockets. Stale rows cost one no-op call at logout.
  `CREATE TABLE conversation_sockets (
     device_id TEXT NOT NULL, conversation_id TEXT NOT NULL, seen_at INTEGER NOT NULL,
     PRIMARY KEY (device_id, conversation_id))`,
];

export class UserDO extends DurableObject<Env> {
  private readonly settings: Settings;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.settings = readSettings(env);
    migrate(ctx.storage.sql, MIGRATIONS);
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  async trackConversationSocket(deviceId: string, conversationId: string): Promise<void> {
    this.ctx.storage.sql.exec(
      `INSERT INTO conversation_sockets (device_id, conversation_id, seen_at) VALUES (?, ?, ?)
       ON CONFLICT (device_id, conversation_id) DO UPDATE SET seen_at = excluded.seen_at`,
      deviceId,
      conversationId,
      Date.now(),
    );
  }

  /** Logout: closes the device's user sockets and its sockets in every conversation with 4001. */
  async closeDevice(deviceId: string): Promise<void> {
    for (const ws of this.ctx.getWebSockets(`d:${deviceId}`)) {
      try {
        ws.close(CLOSE.unauthorized, "logged out");
      } catch {
        // already closed
      }
    }
    const rows = this.ctx.storage.sql
      .exec<{ conversation_id: string }>("SELECT conversation_id FROM conversation_sockets WHERE device_id = ?", deviceId)
      .toArray();
    await Promise.all(
      rows.map((r) =>
        this.env.CONVERSATION.get(this.env.CONVERSATION.idFromName(r.conversation_id))
          .closeDevice(deviceId)
          .catch((err: unknown) => console.warn(`closeDevice in ${r.conversation_id} failed`, String(err))),
      ),
    );
    this.ctx.storage.sql.exec("DELETE FROM conversation_sockets WHERE device_id = ?", deviceId);
  }

  async fetch(request: Request): Promise<Response> {
    const identity = readIdentity(request.headers);
    if (!identity) return jsonError("unauthorized", "no identity");
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return jsonError("bad_request", "expected a WebSocket upgrade");
    }
    if (this.ctx.getWebSockets(`d:${identity.deviceId}`).length >= this.settings.maxSocketsPerDevice) {
      return jsonError("rate_limited", "too many sockets for this device", 10);
    }
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    this.ctx.acceptWebSocket(server, [`d:${identity.deviceId}`]);
    server.serializeAttachment(identity);
    const ready: UserServerFrame = {
      type: "ready",
      userId: identity.userId,
      deviceId: identity.deviceId,
      protocolVersion: PROTOCOL_VERSION,
    };
    server.send(JSON.stringify(ready));
    return new Response(null, { status: 101, webSocket: client });
  }

  async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): Promise<void> {
    // Client frames on the user socket (presence.watch) are handled with presence.
    if (typeof data === "string" && data.length > 64 * 1024) ws.close(CLOSE.tooBig, "frame over 64 KiB");
  }

  async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, "closed");
    } catch {
      // already closed
    }
  }
}
