// Error codes and WebSocket close codes: one table, shared by server and client.

/** HTTP status for each error code of the API's error shape `{error: {code, message}}`. */
export const ERROR_STATUS = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  internal: 500,
  unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;
export type ErrorStatus = (typeof ERROR_STATUS)[ErrorCode];

export interface ErrorBody {
  error: { code: ErrorCode; message: string; issues?: unknown[]; requestId?: string };
}

/**
 * WebSocket close codes. 1009 is the standard "message too big"; the 4xxx codes are ours.
 * Clients must not reconnect after 4001 (log in again) or 4003 (no longer a member).
 */
export const CLOSE = {
  tooBig: 1009,
  /** A user socket silent (no frame, no keep-alive) past the keep-alive window. Reconnect. */
  idle: 4000,
  unauthorized: 4001,
  removed: 4003,
  rateLimited: 4008,
  /** The client speaks a protocol version this server does not; reload the app. */
  protocolVersion: 4010,
} as const;

export type CloseCode = (typeof CLOSE)[keyof typeof CLOSE];
