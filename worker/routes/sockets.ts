// WebSocket handshakes: authenticate (single-use ticket or bearer header), check the origin,
// then hand the upgrade to the object with the verified identity attached.
import { IDENTITY_HEADERS, type Identity } from "../../durable-objects/lib/sockets";
import { identityForToken, newApp, type AppContext } from "../app";
import { ApiError } from "../lib/errors";
import { requireSecret } from "../lib/settings";
import { verifyTicket } from "../lib/tickets";
import { conversationStub, userStub } from "../lib/objects";

export const sockets = newApp();

async function authenticateSocket(c: AppContext): Promise<Identity> {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new ApiError("bad_request", "expected a WebSocket upgrade");
  }
  const origin = c.req.header("origin");
  if (origin !== undefined && origin !== new URL(c.req.url).origin && !c.get("settings").allowedOrigins.includes(origin)) {
    throw new ApiError("forbidden", "origin not allowed");
  }
  const text = new URL(c.req.url).searchParams.get("ticket");
  if (text) {
    // Signed, then used once: its MAC and expiry here, its single use in the user's object.
    const settings = c.get("settings");
    const ticket = await verifyTicket(text, requireSecret("TICKET_SECRET", settings.ticketSecret), Date.now(), settings.ticketTtlMs);
    const fresh = ticket && (await userStub(c.env, ticket.userId).consumeTicket(ticket.userId, ticket.deviceId, ticket.nonce, ticket.expiresAt));
    if (!ticket || !fresh) throw new ApiError("unauthorized", "invalid or expired ticket");
    return { userId: ticket.userId, deviceId: ticket.deviceId };
  }
  const bearer = /^Bearer\s+([A-Za-z0-9_-]{16,256})$/.exec(c.req.header("authorization") ?? "");
  const identity = bearer ? await identityForToken(c.env.DB, bearer[1]!, c.get("settings")) : null;
  if (!identity) throw new ApiError("unauthorized", "a ticket or bearer token is required");
  return identity;
}

function forward(request: Request, identity: Identity): Request {
  const headers = new Headers(request.headers);
  headers.set(IDENTITY_HEADERS.user, identity.userId);
  headers.set(IDENTITY_HEADERS.device, identity.deviceId);
  return new Request(request.url, { method: "GET", headers });
}

sockets.get("/conversations/:id/ws", async (c) => {
  const identity = await authenticateSocket(c);
  return conversationStub(c.env, c.req.param("id")).fetch(forward(c.req.raw, identity));
});

sockets.get("/ws", async (c) => {
  const identity = await authenticateSocket(c);
  return userStub(c.env, identity.userId).fetch(forward(c.req.raw, identity));
});
