// The benchmark baseline: one hibernating Durable Object per room name that relays every text
// frame it receives to every socket of the room, the sender's included (its copy is its "ack").
// Nothing is parsed, stored or checked: this is as fast as a broadcast gets on this runtime.
import { DurableObject } from "cloudflare:workers";

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    // The same keep-alive as the app: answered by the runtime without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  async fetch() {
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server);
    return new Response(null, { status: 101, webSocket: client });
  }

  async webSocketMessage(_ws, data) {
    for (const ws of this.ctx.getWebSockets()) {
      try {
        ws.send(data);
      } catch {
        // closing
      }
    }
  }

  async webSocketClose(ws, code) {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, "closed");
    } catch {
      // already closed
    }
  }
}

export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    const room = /^\/ws\/([\w.-]{1,64})$/.exec(pathname)?.[1];
    if (room && request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return env.ROOM.get(env.ROOM.idFromName(room)).fetch(request);
    }
    return new Response(pathname === "/" ? "ok" : "not found", { status: pathname === "/" ? 200 : 404 });
  },
};
