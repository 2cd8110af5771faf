// The VAPID token (RFC 8292) for an endpoint whose origin is not `https:` (a local mock push
// service): its `aud` must be the push resource's origin as the endpoint has it, scheme included,
// and @block65/webcrypto-web-push only signs for `https:` endpoints.
import type { VapidKeys } from "@block65/webcrypto-web-push";
import { base64url, fromBase64url } from "../lib/crypto";

const encoder = new TextEncoder();
const json64 = (value: unknown) => base64url(encoder.encode(JSON.stringify(value)));

/** `vapid t=<ES256 JWT>, k=<public key>` with `aud` = `origin`, `exp` 12 h ahead, `sub` the subject. */
export async function vapidAuthorization(origin: string, vapid: VapidKeys, now = Date.now()): Promise<string> {
  const point = fromBase64url(vapid.publicKey ?? "");
  const key = await crypto.subtle.importKey(
    "jwk",
    { kty: "EC", crv: "P-256", x: base64url(point.slice(1, 33)), y: base64url(point.slice(33, 65)), d: vapid.privateKey },
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign"],
  );
  const seconds = Math.floor(now / 1000);
  const data = `${json64({ typ: "JWT", alg: "ES256" })}.${json64({ aud: origin, exp: seconds + 12 * 3600, sub: vapid.subject })}`;
  const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, encoder.encode(data));
  return `vapid t=${data}.${base64url(new Uint8Array(signature))}, k=${vapid.publicKey}`;
}
