import { ERROR_STATUS, type ErrorBody, type ErrorCode } from "../../protocol";
import { errorAnswer } from "../../kernel/errorAnswer";
import { isFailure } from "../../kernel/result";

/**
 * An error a client caused or may see. Thrown anywhere in a route; `app.onError` turns it into
 * the API's error shape. Anything else thrown becomes a logged 500 with a request id.
 */
export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly extra: { issues?: unknown[]; retryAfterSeconds?: number } = {},
  ) {
    super(message);
    this.status = ERROR_STATUS[code];
  }

  toBody(): ErrorBody {
    const body: ErrorBody = { error: { code: this.code, message: this.message } };
    if (this.extra.issues) body.error.issues = this.extra.issues;
    return body;
  }
}

/** The success value of an object's answer; a failure becomes the matching ApiError. */
export function unwrap<R extends { ok: boolean }>(result: R): Extract<R, { ok: true }> {
  if (isFailure(result)) {
    throw new ApiError(
      result.code,
      result.message,
      result.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: result.retryAfterSeconds },
    );
  }
  return result as Extract<R, { ok: true }>;
}

/** Retry-After for an object that was reset or hit a transient fault. */
const UNAVAILABLE_RETRY_AFTER_SECONDS = 1;
/** Longer for an overloaded object: retrying at once would add to its queue. */
const OVERLOADED_RETRY_AFTER_SECONDS = 5;

/**
 * A Durable Object call that failed in the platform, not in our code: the object was reset (a
 * deploy, or an eviction with calls in flight), is overloaded, or hit a transient fault. The
 * runtime marks such errors with `durableObjectReset`, `overloaded` or `retryable`
 * (developers.cloudflare.com/durable-objects/best-practices/error-handling). The client may try
 * again: sends are idempotent by clientMsgId, and a ticket the object never saw is still good
 * (another write may or may not have happened, as after any 5xx). Returns the seconds to wait
 * before trying, or undefined for any other error.
 */
export function objectUnavailableFor(err: unknown): number | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const marks = err as { durableObjectReset?: unknown; overloaded?: unknown; retryable?: unknown };
  if (marks.overloaded === true) return OVERLOADED_RETRY_AFTER_SECONDS;
  if (marks.durableObjectReset === true || marks.retryable === true) return UNAVAILABLE_RETRY_AFTER_SECONDS;
  return undefined;
}

export function errorResponse(err: ApiError, requestId?: string): Response {
  const body = err.toBody();
  if (requestId && err.status >= 500) body.error.requestId = requestId;
  return errorAnswer(body, err.extra.retryAfterSeconds);
}
