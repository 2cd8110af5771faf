// Single-use WebSocket tickets (POST /auth/ticket), signed instead of stored:
//   <userId>.<deviceId>.<expiresAt>.<nonce>.<mac>
// the MAC an HMAC-SHA256 under TICKET_SECRET over a version tag and the four fields. A handshake
// checks the MAC and the expiry without D1. What makes a ticket single-use is the user's object:
// it keeps each nonce it has let through until the ticket's expiry, and it knows which of the
// user's devices logged out since (UserDO.consumeTicket). So neither issuing nor using a ticket
// writes to D1, the one database every handshake of every user would otherwise share.
import type { Identity, TicketUse } from "../../kernel/identity";
import { base64url, hmacKey, macMatches, randomToken } from "./crypto";

const VERSION = "ws-ticket-v1";
const encoder = new TextEncoder();
const TICKET = /^([0-9A-Za-z_-]{1,64})\.([0-9A-Za-z_-]{1,64})\.([1-9]\d{0,15})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;

/** Who it is for, and its use: when it expires and its nonce. */
export interface Ticket extends Identity, TicketUse {}

const signed = (t: Ticket) => encoder.encode(`${VERSION}\n${t.userId}\n${t.deviceId}\n${t.expiresAt}\n${t.nonce}`);

export async function issueTicket(identity: Identity, expiresAt: number, secret: string): Promise<string> {
  const ticket: Ticket = { userId: identity.userId, deviceId: identity.deviceId, expiresAt, nonce: randomToken(16) };
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), signed(ticket));
  return `${ticket.userId}.${ticket.deviceId}.${expiresAt}.${ticket.nonce}.${base64url(new Uint8Array(mac))}`;
}

/**
 * The ticket's fields when its MAC is ours and it has not expired, else null. `maxLifetimeMs`
 * bounds the expiry too, so a ticket signed under a since-lowered lifetime dies with it.
 * Single use is not checked here: that is the user's object's part.
 */
export async function verifyTicket(text: string, secret: string, now: number, maxLifetimeMs: number): Promise<Ticket | null> {
  const m = TICKET.exec(text);
  if (!m) return null;
  const ticket: Ticket = { userId: m[1]!, deviceId: m[2]!, expiresAt: Number(m[3]), nonce: m[4]! };
  // The canonical form only: `expiresAt` without leading zeros (above), the MAC as we encode it.
  const ok = await macMatches(secret, signed(ticket), m[5]!);
  if (!ok || ticket.expiresAt <= now || ticket.expiresAt > now + maxLifetimeMs) return null;
  return ticket;
}
