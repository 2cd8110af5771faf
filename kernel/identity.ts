// Who is calling: the identity the Worker verified (a token or a ticket) and hands to an object,
// in RPC arguments or, on a WebSocket upgrade, in headers only the Worker can set.

/** The authenticated caller. The Worker verifies the token or ticket and passes the result on. */
export interface Identity {
  userId: string;
  deviceId: string;
}

/**
 * Headers the Worker sets on the upgrade request it forwards to an object. Objects are reachable
 * only through the Worker, which strips these from anything a client sends.
 */
export const IDENTITY_HEADERS = { user: "x-chat-user-id", device: "x-chat-device-id" } as const;

/**
 * A ticket the Worker verified (its MAC and expiry) on a user socket's upgrade, whose single use
 * the user's object takes as it accepts the socket: one call to that object, not two.
 */
export interface TicketUse {
  /** 16 random bytes, base64url: the key the user's object remembers once the ticket is used. */
  nonce: string;
  expiresAt: number;
}

export const TICKET_HEADERS = { nonce: "x-chat-ticket-nonce", expiresAt: "x-chat-ticket-expires-at" } as const;

export function readTicketUse(headers: Headers): TicketUse | null {
  const nonce = headers.get(TICKET_HEADERS.nonce);
  const expiresAt = Number(headers.get(TICKET_HEADERS.expiresAt));
  return nonce && Number.isFinite(expiresAt) ? { nonce, expiresAt } : null;
}

/**
 * The session of the bearer token the Worker verified on a user socket's upgrade: the user's object
 * checks it is live as it accepts the socket, as it takes a ticket's use.
 */
export const SESSION_HEADER = "x-chat-session-id";

export function readSessionId(headers: Headers): string | null {
  return headers.get(SESSION_HEADER) || null;
}

export function readIdentity(headers: Headers): Identity | null {
  const userId = headers.get(IDENTITY_HEADERS.user);
  const deviceId = headers.get(IDENTITY_HEADERS.device);
  return userId && deviceId ? { userId, deviceId } : null;
}
