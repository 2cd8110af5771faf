// Which push endpoints we accept and where we actually send.

const LOCAL_HOSTS = new Set(["127.0.0.1", "localhost"]);

/**
 * An endpoint is acceptable when it is `https:` (RFC 8030 push resources are), or, with
 * PUSH_ALLOW_INSECURE_LOCALHOST, `http:` on 127.0.0.1 or localhost: a local mock push service.
 * Credentials in the URL are refused: they would be sent to the push service as-is.
 */
export function endpointProblem(endpoint: string, allowInsecureLocalhost: boolean): string | null {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return "endpoint is not a URL";
  }
  if (url.username || url.password) return "endpoint must not carry credentials";
  if (url.protocol === "https:") return null;
  if (url.protocol === "http:" && allowInsecureLocalhost && LOCAL_HOSTS.has(url.hostname)) return null;
  return allowInsecureLocalhost
    ? "endpoint must be https: (or http: on 127.0.0.1 or localhost)"
    : "endpoint must be https:";
}

/**
 * @block65/webcrypto-web-push refuses `http:` endpoints, and the VAPID audience is the endpoint's
 * origin. For an allowed local endpoint we build the request for its `https:` form (so the JWT's
 * `aud` is `https://127.0.0.1:<port>`) and send it to the `http:` URL.
 */
export function buildUrlFor(endpoint: string): string {
  const url = new URL(endpoint);
  if (url.protocol === "http:") url.protocol = "https:";
  return url.toString();
}

/** What is safe to log about an endpoint: its origin. The path is a capability to push to the user. */
export function originOf(endpoint: string): string {
  try {
    return new URL(endpoint).origin;
  } catch {
    return "(invalid endpoint)";
  }
}
