// The two WebSockets and their tickets: POST /auth/ticket, GET /ws (the user socket, the user's
// object) and GET /conversations/:id/ws (the conversation socket, the conversation's object). They
// share a handshake unlike the REST routes': authenticate (single-use ticket or bearer header), check the origin,
// then hand the upgrade to the object with the verified identity attached. A ticket's single
// use, or a bearer token's live session, is checked by the user's object: on a user socket's
// upgrade, by that object as it accepts the socket; on a conversation socket's, by a call to it first.
import { IDENTITY_HEADERS, SESSION_HEADER, TICKET_HEADERS, type Identity, type TicketUse } from "../../kernel/identity";
import { newApp, requireAuth, verifiedSession, type AppContext } from "../app";
import { bearerToken } from "../lib/sessionTokens";
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

/**
 * Who opens the socket, and what the user's object is still to check: the single use of the ticket
 * it came with, or else whether its bearer token's session is live.
 */
type SocketCaller = { identity: Identity; ticket: TicketUse; sessionId: null } | { identity: Identity; ticket: null; sessionId: string };

/** Checks the upgrade, its origin, and a ticket's or a bearer token's MAC and expiry. */
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
    return { identity: { userId: ticket.userId, deviceId: ticket.deviceId }, ticket, sessionId: null };
  }
  const token = bearerToken(c.req.header("authorization"));
  const session = token ? await verifiedSession(c, token) : null;
  if (!session) throw new ApiError("unauthorized", "a ticket or bearer token is required");
  return { identity: { userId: session.userId, deviceId: session.deviceId }, ticket: null, sessionId: session.sessionId };
}

/**
 * The upgrade as the object gets it: the verified identity and, for the user's object, what it
 * checks itself (`check`: a ticket's use, or a token's session); whatever a client sent in those
 * headers is replaced or dropped.
 */
function forward(request: Request, identity: Identity, check: SocketCaller | null = null): Request {
  const headers = new Headers(request.headers);
  headers.set(IDENTITY_HEADERS.user, identity.userId);
  headers.set(IDENTITY_HEADERS.device, identity.deviceId);
  for (const name of [TICKET_HEADERS.nonce, TICKET_HEADERS.expiresAt, SESSION_HEADER]) headers.delete(name);
  if (check?.ticket) {
    headers.set(TICKET_HEADERS.nonce, check.ticket.nonce);
    headers.set(TICKET_HEADERS.expiresAt, String(check.ticket.expiresAt));
  } else if (check) {
    headers.set(SESSION_HEADER, check.sessionId);
  }
  return new Request(request.url, { method: "GET", headers });
}

realtime.get("/conversations/:id/ws", async (c) => {
  // A parameter given twice, or one unknown, is a 400 here as on every route (docs/api.md).
  readQuery(c.req.url, ConversationSocketQuery);
  const { identity, ticket, sessionId } = await authenticateSocket(c);
  // A ticket is used once, and a token's session may have ended: the user's object, which sees
  // every logout, says which (one call either way).
  const user = userStub(c.env, identity.userId);
  if (ticket && !(await user.consumeTicket(identity.userId, identity.deviceId, ticket.nonce, ticket.expiresAt))) {
    throw new ApiError("unauthorized", "invalid or expired ticket");
  }
  if (sessionId !== null && !(await user.checkSession(identity.userId, identity.deviceId, sessionId))) {
    throw new ApiError("unauthorized", "unknown, expired or revoked token");
  }
  return conversationStub(c.env, c.req.param("id")).fetch(forward(c.req.raw, identity));
});

// The user's object checks the ticket's use or the token's session itself, as it accepts the socket.
realtime.get("/ws", async (c) => {
  readQuery(c.req.url, UserSocketQuery);
  const caller = await authenticateSocket(c);
  return userStub(c.env, caller.identity.userId).fetch(forward(c.req.raw, caller.identity, caller));
});
