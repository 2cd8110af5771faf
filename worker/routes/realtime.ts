// The two WebSockets and their tickets: POST /auth/ticket, GET /ws (the user socket, the user's
// object) and GET /conversations/:id/ws (the conversation socket, the conversation's object). They
// share a handshake unlike the REST routes': authenticate (single-use ticket or bearer header), check the origin,
// then hand the upgrade to the object with the verified identity attached. A ticket's single
// use is taken by the user's object: on a user socket's upgrade, by that object as it accepts
// the socket; on a conversation socket's, by a call to it first.
import { IDENTITY_HEADERS, TICKET_HEADERS, type Identity, type TicketUse } from "../../kernel/identity";
import { identityForToken, newApp, requireAuth, type AppContext } from "../app";
import { ApiError } from "../lib/apiError";
import { requireSecret } from "../../kernel/settings";
import { issueTicket, verifyTicket } from "../lib/tickets";
import { conversationStub, userStub } from "../../kernel/objects";
import { ConversationSocketQuery, UserSocketQuery } from "../../protocol";
import { readQuery } from "../lib/validate";

export const realtime = newApp();

realtime.post("/auth/ticket", requireAuth, async (c) => {
  const settings = c.get("settings");
  const expiresAt = Date.now() + settings.ticketTtlMs;
  const ticket = await issueTicket(c.get("auth"), expiresAt, requireSecret("TICKET_SECRET", settings.ticketSecret));
  return c.json({ ticket, expiresAt });
});

/** Who opens the socket, and the ticket whose single use is still to be taken, if it came with one. */
interface SocketCaller {
  identity: Identity;
  ticket: TicketUse | null;
}

/** Checks the upgrade, its origin, and a ticket's MAC and expiry or a bearer token. */
async function authenticateSocket(c: AppContext): Promise<SocketCaller> {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new ApiError("bad_request", "expected a WebSocket upgrade");
  }
  const origin = c.req.header("origin");
  if (origin !== undefined && origin !== new URL(c.req.url).origin && !c.get("settings").allowedOrigins.includes(origin)) {
    throw new ApiError("forbidden", "origin not allowed");
  }
  const text = new URL(c.req.url).searchParams.get("ticket");
  if (text) {
    const settings = c.get("settings");
    const ticket = await verifyTicket(text, requireSecret("TICKET_SECRET", settings.ticketSecret), Date.now(), settings.ticketTtlMs);
    if (!ticket) throw new ApiError("unauthorized", "invalid or expired ticket");
    return { identity: { userId: ticket.userId, deviceId: ticket.deviceId }, ticket };
  }
  const bearer = /^Bearer\s+([A-Za-z0-9_-]{16,256})$/.exec(c.req.header("authorization") ?? "");
  const identity = bearer ? await identityForToken(c.env.DB, bearer[1]!, c.get("settings")) : null;
  if (!identity) throw new ApiError("unauthorized", "a ticket or bearer token is required");
  return { identity, ticket: null };
}

/**
 * The upgrade as the object gets it: the verified identity and, for a ticket the object itself
 * takes, its use; whatever a client sent in those headers is replaced or dropped.
 */
function forward(request: Request, identity: Identity, ticket: TicketUse | null = null): Request {
  const headers = new Headers(request.headers);
  headers.set(IDENTITY_HEADERS.user, identity.userId);
  headers.set(IDENTITY_HEADERS.device, identity.deviceId);
  headers.delete(TICKET_HEADERS.nonce);
  headers.delete(TICKET_HEADERS.expiresAt);
  if (ticket) {
    headers.set(TICKET_HEADERS.nonce, ticket.nonce);
    headers.set(TICKET_HEADERS.expiresAt, String(ticket.expiresAt));
  }
  return new Request(request.url, { method: "GET", headers });
}

realtime.get("/conversations/:id/ws", async (c) => {
  // A parameter given twice, or one unknown, is a 400 here as on every route (docs/api.md).
  readQuery(c.req.url, ConversationSocketQuery);
  const { identity, ticket } = await authenticateSocket(c);
  // A ticket is used once, and its single use is kept by the user's object, which sees every logout.
  if (ticket && !(await userStub(c.env, identity.userId).consumeTicket(identity.userId, identity.deviceId, ticket.nonce, ticket.expiresAt))) {
    throw new ApiError("unauthorized", "invalid or expired ticket");
  }
  return conversationStub(c.env, c.req.param("id")).fetch(forward(c.req.raw, identity));
});

// The user's object takes the ticket's use itself, as it accepts the socket.
realtime.get("/ws", async (c) => {
  readQuery(c.req.url, UserSocketQuery);
  const { identity, ticket } = await authenticateSocket(c);
  return userStub(c.env, identity.userId).fetch(forward(c.req.raw, identity, ticket));
});
