// The API's error shape as an HTTP answer, built once for the Worker (`onError`) and for the
// objects (a refused socket upgrade).
import { ERROR_STATUS, type ErrorBody } from "../protocol";

/** `{error: {...}}` with its status, and `Retry-After` (whole seconds, at least 1) when given. */
export function errorAnswer(body: ErrorBody, retryAfterSeconds?: number): Response {
  const headers = new Headers({ "content-type": "application/json" });
  if (retryAfterSeconds !== undefined) headers.set("retry-after", String(Math.max(1, Math.ceil(retryAfterSeconds))));
  return new Response(JSON.stringify(body), { status: ERROR_STATUS[body.error.code], headers });
}
