// Parse once at the edge: every route reads its body and query through these two functions,
// and works with typed values from then on.
import type * as z from "zod";
import { ApiError } from "./apiError";

function issuesOf(error: z.ZodError): unknown[] {
  return error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message }));
}

export function parseWith<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new ApiError("bad_request", `invalid ${what}`, { issues: issuesOf(parsed.error) });
  }
  return parsed.data;
}

/**
 * Reads a JSON body of at most `maxBytes`: the declared length is checked before reading, and the
 * bytes actually read are checked too (a chunked body has no length).
 */
export async function readJson<S extends z.ZodType>(
  request: Request,
  schema: S,
  maxBytes: number,
): Promise<z.infer<S>> {
  const declared = Number(request.headers.get("content-length") ?? "NaN");
  if (Number.isFinite(declared) && declared > maxBytes) {
    throw new ApiError("payload_too_large", `request body over ${maxBytes} bytes`);
  }
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/json\b/i.test(type)) {
    throw new ApiError("bad_request", "content-type must be application/json");
  }
  const bytes = await readLimited(request, maxBytes);
  let value: unknown;
  try {
    value = JSON.parse(decodeUtf8(bytes, "body"));
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError("bad_request", "body is not valid JSON");
  }
  return parseWith(schema, value, "body");
}

/**
 * Bytes as UTF-8 text, refusing ill-formed UTF-8 with 400. Decoding with replacement would turn
 * each bad sequence into U+FFFD: the request would be answered for text the client never sent.
 */
export function decodeUtf8(bytes: Uint8Array, what: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new ApiError("bad_request", `${what} is not valid UTF-8`);
  }
}

async function readLimited(request: Request, maxBytes: number): Promise<Uint8Array> {
  if (!request.body) return new Uint8Array();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw new ApiError("payload_too_large", `request body over ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

export function readQuery<S extends z.ZodType>(url: string, schema: S): z.infer<S> {
  const params = new URL(url).searchParams;
  const query: Record<string, string> = {};
  for (const [k, v] of params) {
    if (k in query) throw new ApiError("bad_request", `query parameter ${k} given twice`);
    query[k] = v;
  }
  return parseWith(schema, query, "query");
}
