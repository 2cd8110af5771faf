// A request to the app's HTTP API as a client makes it, for the smoke test and the bench.

export interface ApiRequest {
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string | undefined;
  /** Sent as JSON. */
  body?: unknown;
  timeoutMs: number;
}

/** `method base+path`; the status and the body's text, whatever the status. */
export async function apiRequest(base: string, method: string, path: string, { token, body, timeoutMs }: ApiRequest): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  return { status: res.status, text: await res.text() };
}
