// Which push endpoints we accept and where we actually send.
//
// The server connects to whatever endpoint a client posts, so an endpoint is a request we make on
// its behalf: only `https:` on the default port to a public host name. Push services (FCM, Mozilla,
// Apple, Windows) are all such names. Refused: IP literals of any kind (no push service uses one,
// and judging which literals are private is easy to get wrong: 127.1, 0x7f000001, ::ffff:10.0.0.1
// ...), `localhost` and names under `.localhost`, `.local`, `.internal`, `.home.arpa`, names
// without a dot, and any port but 443. A name that resolves to a private address is not caught
// here: on Cloudflare a Worker's fetch cannot reach private networks.

const LOCAL_HOSTS = new Set(["127.0.0.1", "localhost"]);
const PRIVATE_SUFFIXES = [".localhost", ".local", ".internal", ".home.arpa", ".lan"];

/** Whether a URL's hostname (as `new URL` normalises it) is an IPv4 or IPv6 literal. */
function isIpLiteral(hostname: string): boolean {
  return hostname.startsWith("[") || /^[\d.]+$/.test(hostname) || /^0x[\da-f]+$/i.test(hostname);
}

function hostProblem(url: URL): string | null {
  const host = url.hostname.replace(/\.$/, "").toLowerCase();
  if (isIpLiteral(host)) return "endpoint must name a host, not an IP address";
  if (host === "localhost" || !host.includes(".") || PRIVATE_SUFFIXES.some((s) => host.endsWith(s))) {
    return "endpoint must be a public host";
  }
  if (url.port !== "") return "endpoint must use the default https port";
  return null;
}

/**
 * An endpoint is acceptable when it is `https:` (RFC 8030 push resources are) on a public host
 * (above), or, with PUSH_ALLOW_INSECURE_LOCALHOST, `http:` on 127.0.0.1 or localhost: a local mock
 * push service. Credentials in the URL are refused: they would be sent to the push service as-is.
 */
export function endpointProblem(endpoint: string, allowInsecureLocalhost: boolean): string | null {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return "endpoint is not a URL";
  }
  if (url.username || url.password) return "endpoint must not carry credentials";
  if (url.protocol === "https:") return hostProblem(url);
  if (url.protocol === "http:" && allowInsecureLocalhost && LOCAL_HOSTS.has(url.hostname)) return null;
  return allowInsecureLocalhost
    ? "endpoint must be https: (or http: on 127.0.0.1 or localhost)"
    : "endpoint must be https:";
}

/**
 * @block65/webcrypto-web-push refuses `http:` endpoints. For an allowed local endpoint we build
 * the request for its `https:` form (the body's encryption does not depend on the URL), send it
 * to the `http:` URL, and sign the VAPID token ourselves with the real origin (./vapid.ts).
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
