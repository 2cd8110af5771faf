// The REST client: bearer auth, the API's error shape, and zod parsing of every answer, so the
// rest of the app only sees typed values (parse once at the edge, never cast).
import * as z from "zod";
import { Conversation, ConversationSettings, Device, Message, OwnDevice, Presence, Receipt, User } from "../../../protocol";

/** A non-2xx answer in the API's error shape. */
export class ApiRequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** No answer at all: offline, DNS, a dropped connection. Always worth retrying. */
export class NetworkError extends Error {}

/** One hit of `GET /search`: the message as sync has it, and the words around the match, matched ones marked. */
const SearchResultSchema = z.object({ message: Message, snippet: z.array(z.object({ text: z.string(), match: z.boolean() })) });
export type SearchResult = z.infer<typeof SearchResultSchema>;

const ErrorShape = z.object({ error: z.object({ code: z.string(), message: z.string() }) });

export const Schemas = {
  session: z.object({ user: User, device: Device, token: z.string() }),
  me: z.object({ user: User, device: Device }),
  devices: z.object({ devices: z.array(OwnDevice) }),
  device: z.object({ device: OwnDevice }),
  ticket: z.object({ ticket: z.string(), expiresAt: z.number() }),
  users: z.object({ users: z.array(User) }),
  user: z.object({ user: User }),
  conversations: z.object({ conversations: z.array(Conversation), hasMore: z.boolean().optional(), cursor: z.string().nullable().optional() }),
  conversation: z.object({ conversation: Conversation }),
  conversationSettings: z.object({ conversationId: z.string(), settings: ConversationSettings }),
  message: z.object({ message: Message }),
  history: z.object({ messages: z.array(Message), hasMore: z.boolean() }),
  since: z.object({ messages: z.array(Message), cursor: z.string(), hasMore: z.boolean() }),
  receipts: z.object({ receipts: z.array(Receipt) }),
  receipt: z.object({ receipt: Receipt }),
  presence: z.object({ presence: z.array(Presence) }),
  vapid: z.object({ publicKey: z.string() }),
  mediaInfo: z.object({ media: z.object({ url: z.string(), urlExpiresAt: z.number() }).loose() }),
  upload: z.object({
    media: z.object({ id: z.string(), contentType: z.string(), size: z.number(), name: z.string() }).loose(),
  }),
  pins: z.object({ messages: z.array(Message) }),
  search: z.object({ results: z.array(SearchResultSchema), cursor: z.string().nullable(), hasMore: z.boolean() }),
  none: z.unknown(),
} as const;

export type Method = "GET" | "POST" | "DELETE" | "PUT" | "PATCH";

export type Fetch = (path: string, init: RequestInit) => Promise<Response>;

export class Api {
  constructor(
    private readonly token: () => string | null,
    /** Called on any 401: the token is dead (logged out elsewhere, revoked, expired). */
    private readonly onUnauthorized: () => void,
    /** The browser's fetch in the app; a fake server in unit tests. */
    private readonly fetch: Fetch = (path, init) => fetch(path, init),
  ) {}

  async call<S extends z.ZodType>(method: Method, path: string, schema: S, body?: unknown, signal?: AbortSignal): Promise<z.infer<S>> {
    const headers: Record<string, string> = {};
    const token = this.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res: Response;
    try {
      res = await this.fetch(path, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        ...(signal ? { signal } : {}),
        cache: "no-store",
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new NetworkError(err instanceof Error ? err.message : "network error");
    }
    if (res.status === 204) return schema.parse(undefined);
    const json: unknown = await res.json().catch(() => null);
    if (!res.ok) throw toApiError(res, json, token !== null ? this.onUnauthorized : null);
    const parsed = schema.safeParse(json);
    if (!parsed.success) throw new ApiRequestError(res.status, "bad_response", `unexpected answer from ${method} ${path}`);
    return parsed.data;
  }
}

export function toApiError(res: { status: number; headers: { get(name: string): string | null } }, json: unknown, onUnauthorized: (() => void) | null): ApiRequestError {
  const shape = ErrorShape.safeParse(json);
  const retryAfter = Number(res.headers.get("retry-after") ?? "NaN");
  const err = new ApiRequestError(
    res.status,
    shape.success ? shape.data.error.code : "http_error",
    shape.success ? shape.data.error.message : `HTTP ${res.status}`,
    Number.isFinite(retryAfter) ? retryAfter * 1000 : undefined,
  );
  if (res.status === 401 && onUnauthorized) onUnauthorized();
  return err;
}

/** Whether a failed call is worth repeating as is. */
export const isTransient = (err: unknown): boolean =>
  err instanceof NetworkError || (err instanceof ApiRequestError && (err.status === 429 || err.status >= 500));

export const qs = (params: Record<string, string | number | undefined>): string => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
};
