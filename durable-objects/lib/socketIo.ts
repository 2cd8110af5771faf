// What both objects do with sockets and upgrade requests, written once: send a frame or close
// without throwing on a socket that is already closing, refuse an upgrade in the API's error
// shape, and measure a frame against the 64 KiB limit.
import * as z from "zod";
import type { ClosingFrame as ClosingSchema, ErrorCode } from "../../protocol";
import { errorAnswer } from "../../kernel/errorAnswer";

type ClosingFrame = z.infer<typeof ClosingSchema>;

/** Sends a frame; a socket that is closing drops it (its device catches up when it reconnects). */
export function trySend(ws: WebSocket, frame: string): void {
  try {
    ws.send(frame);
  } catch {
    // Closing: a conversation socket resumes with ?after=, a user socket syncs with ?since=.
  }
}

export function safeClose(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // Already closed.
  }
}

/**
 * Closes with an application code, first sending `{type: "closing", code, reason}`: the close
 * handshake of a close the object starts outside a socket event (in `fetch`, an RPC call, the
 * alarm) ends only ~15 s later under workerd, and a client's `close` event waits for it
 * (measured under wrangler dev; a close inside webSocketMessage, or of a socket not accepted for
 * hibernation, ends at once). The frame reaches the client at once. Not for answering a close.
 */
export function closeWithNotice(ws: WebSocket, code: number, reason: string): void {
  trySend(ws, JSON.stringify({ type: "closing", code, reason } satisfies ClosingFrame));
  safeClose(ws, code, reason);
}

/** The code to answer a close with: 1005 and 1006 are reserved and cannot be sent back. */
export const closeReply = (code: number): number => (code === 1005 || code === 1006 ? 1000 : code);

export function jsonError(code: ErrorCode, message: string, retryAfterSeconds?: number): Response {
  return errorAnswer({ error: { code, message } }, retryAfterSeconds);
}

/** Whether `text` is longer than `limit` bytes in UTF-8, encoding only when the length cannot tell. */
export function exceedsUtf8(text: string, limit: number): boolean {
  // Every UTF-16 code unit takes 1 to 3 bytes in UTF-8.
  if (text.length > limit) return true;
  if (text.length * 3 <= limit) return false;
  return new TextEncoder().encode(text).byteLength > limit;
}

/** Whether an upgrade request asks for a WebSocket. */
export const isUpgrade = (request: Request): boolean => request.headers.get("upgrade")?.toLowerCase() === "websocket";
