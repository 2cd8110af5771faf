// Media: uploads into R2 (raw body, form, resumable multipart), signed downloads, and the
// authenticated redirect to them. docs/api.md "Media" describes the decisions taken here.
import { and, asc, eq, isNotNull } from "drizzle-orm";
import { d1Shards } from "../../kernel/d1/shards";
import {
  MEDIA_LIMITS,
  MediaUrlQuery,
  MultipartInitBody,
  UploadFormFields,
  UploadQuery,
  type MediaContentType,
  type MediaInfo,
  type MultipartUpload,
} from "../../protocol";
import { newApp, requireAuth, type AppContext } from "../app";
import { db, schema } from "../../kernel/d1/db";
import { ApiError, unwrap } from "../lib/apiError";
import { FormStream, boundaryOf } from "../lib/formStream";
import { findVisibleMedia, sendWithMedia, toRef, type MediaRow } from "../../kernel/d1/mediaRecords";
import { ByteSource, checkThumbnail, discardMedia, putStream, r2Key, requireQuota, uploadPart } from "../lib/mediaStore";
import { canonicalType, cleanName, contentDisposition, largestUpload, limitFor, storedType } from "../lib/mediaTypes";
import { conversationStub } from "../../kernel/objects";
import { requireSecret } from "../../kernel/settings";
import { mediaOrigin, verifyMediaUrl, withUrl } from "../lib/signing";
import { parseWith, readJson, readQuery } from "../lib/validate";

/** Room for a form's boundaries, part headers and text fields around its file. */
const FORM_OVERHEAD_BYTES = 64 * 1024;
/** A text field holds at most a message body: 8,192 characters of up to 4 UTF-8 bytes. */
const FORM_FIELD_MAX_BYTES = 8192 * 4;
const FORM_FIELDS = new Set(["conversationId", "clientMsgId", "body", "threadRootSeq", "width", "height", "durationMs", "thumbnailId"]);

const unsupported = () =>
  new ApiError("unsupported_media_type", "allowed: images (jpeg, png, gif, webp, avif), video (mp4, webm, quicktime), audio (webm, ogg, mpeg, mp4, aac, wav), application/pdf, application/octet-stream");

// Never the request's Host header (a forged Host would otherwise become the link a member is
// sent): PUBLIC_ORIGIN, or another loopback name of the same local server (mediaOrigin).
const originOf = (c: AppContext) => mediaOrigin(c.get("settings").publicOrigin, c.req.url);

/** The declared body length: null when absent (chunked), 400 when not a number. */
function declaredLength(request: Request): number | null {
  const header = request.headers.get("content-length");
  if (header === null) return null;
  if (!/^\d{1,16}$/.test(header.trim())) throw new ApiError("bad_request", "invalid content-length");
  return Number(header);
}

interface Meta {
  width?: number | undefined;
  height?: number | undefined;
  durationMs?: number | undefined;
  thumbnailId?: string | undefined;
}

const metaColumns = (m: Meta) => ({
  width: m.width ?? null,
  height: m.height ?? null,
  durationMs: m.durationMs ?? null,
  thumbnailId: m.thumbnailId ?? null,
});

async function requireThumbnail(c: AppContext, thumbnailId: string | undefined): Promise<void> {
  const failure = await checkThumbnail(c.env, c.get("auth").userId, thumbnailId);
  if (failure) unwrap(failure);
}

/**
 * Sniffs, records and streams one new item. The row is written `pending` before the bytes, so an
 * upload that dies half-way leaves a row to find (and R2's own lifecycle aborts the rest).
 */
async function storeNew(
  c: AppContext,
  input: { type: MediaContentType; name: string; meta: Meta; source: ByteSource; length: number | null },
): Promise<MediaRow> {
  await input.source.sniff(input.type);
  const row: MediaRow = {
    // On the uploader's D1 shard, so that the id alone names it (kernel/d1/shards.ts).
    id: d1Shards(c.env).idBeside(c.get("auth").userId),
    uploaderId: c.get("auth").userId,
    contentType: input.type,
    size: input.length ?? 0,
    name: input.name,
    r2Key: "",
    status: "pending",
    uploadId: null,
    partSize: null,
    ...metaColumns(input.meta),
    createdAt: Date.now(),
  };
  row.r2Key = r2Key(row.id);
  await db(c.env, row.id).insert(schema.media).values(row);
  try {
    const size = await putStream(c.env.MEDIA, row.r2Key, input.source, input.length, c.get("settings").media.partBytes, {
      httpMetadata: { contentType: input.type, contentDisposition: contentDisposition(input.type, input.name) },
      customMetadata: { uploaderId: row.uploaderId },
    });
    await db(c.env, row.id).update(schema.media).set({ status: "complete", size }).where(eq(schema.media.id, row.id));
    return { ...row, status: "complete", size };
  } catch (err) {
    await discardMedia(c.env, row);
    throw err;
  }
}

// --- POST /upload -------------------------------------------------------------------------------

export const upload = newApp();
upload.use(requireAuth);

upload.post("/", async (c) => {
  const contentType = c.req.header("content-type") ?? "";
  return /^multipart\/form-data\b/i.test(contentType) ? uploadForm(c, contentType) : uploadRaw(c);
});

async function uploadRaw(c: AppContext) {
  const query = readQuery(c.req.url, UploadQuery);
  const type = canonicalType(c.req.header("content-type"));
  if (!type) throw unsupported();
  const limit = limitFor(type, c.get("settings").media, false);
  const length = declaredLength(c.req.raw);
  // Refused before a byte is read; without a length the ByteSource counts instead.
  if (length !== null && length > limit) throw new ApiError("payload_too_large", `${type} uploads are limited to ${limit} bytes`);
  const body = c.req.raw.body;
  if (length === 0 || !body) throw new ApiError("bad_request", "the file is empty");
  await requireThumbnail(c, query.thumbnailId);
  await requireQuota(c.env, c.get("auth").userId, c.get("settings").media, length ?? 1);
  const source = ByteSource.fromStream(body, limit, length !== null);
  const row = await storeNew(c, { type, name: cleanName(query.name, type), meta: query, source, length });
  return c.json({ media: await withUrl(toRef(row), originOf(c), c.get("settings").media) }, 201);
}

/**
 * A form with one `file` part and optional text fields, in any order. The file is streamed as
 * it arrives; fields after it are validated once the form ends, and a failure then discards the
 * stored file, so a bad form changes nothing.
 */
async function uploadForm(c: AppContext, contentType: string) {
  const settings = c.get("settings").media;
  const boundary = boundaryOf(contentType);
  const length = declaredLength(c.req.raw);
  if (length !== null && length > largestUpload(settings) + FORM_OVERHEAD_BYTES) {
    throw new ApiError("payload_too_large", "upload over the largest allowed file");
  }
  if (!c.req.raw.body) throw new ApiError("bad_request", "empty form");
  const form = new FormStream(c.req.raw.body.getReader(), boundary);
  const fields = new Map<string, string>();
  let stored: MediaRow | null = null;
  try {
    for (let part = await form.nextPart(); part; part = await form.nextPart()) {
      if (part.name === "file") {
        if (stored) throw new ApiError("bad_request", "one file per upload");
        // RFC 7578: a file part without a type is application/octet-stream.
        const type = canonicalType(part.contentType ?? "application/octet-stream");
        if (!type) throw unsupported();
        await requireQuota(c.env, c.get("auth").userId, settings, 1);
        const source = ByteSource.fromPull(() => form.read(), limitFor(type, settings, false));
        stored = await storeNew(c, { type, name: cleanName(part.filename, type), meta: {}, source, length: null });
      } else {
        if (!FORM_FIELDS.has(part.name)) throw new ApiError("bad_request", `unknown form field ${part.name.slice(0, 64)}`);
        if (fields.has(part.name)) throw new ApiError("bad_request", `form field ${part.name} given twice`);
        fields.set(part.name, await form.text(FORM_FIELD_MAX_BYTES));
      }
    }
    if (!stored) throw new ApiError("bad_request", "the form has no file part");
    const f = parseWith(UploadFormFields, Object.fromEntries(fields), "form fields");
    await requireThumbnail(c, f.thumbnailId);
    if (f.width !== undefined || f.height !== undefined || f.durationMs !== undefined || f.thumbnailId !== undefined) {
      await db(c.env, stored.id).update(schema.media).set(metaColumns(f)).where(eq(schema.media.id, stored.id));
      stored = { ...stored, ...metaColumns(f) };
    }
    const info = await withUrl(toRef(stored), originOf(c), settings);
    if (f.conversationId === undefined || f.clientMsgId === undefined) return c.json({ media: info }, 201);

    const auth = c.get("auth");
    const request = {
      clientMsgId: f.clientMsgId,
      mediaIds: [stored.id],
      ...(f.body === undefined ? {} : { body: f.body }),
      ...(f.threadRootSeq === undefined ? {} : { threadRootSeq: f.threadRootSeq }),
    };
    const stub = conversationStub(c.env, f.conversationId);
    const result = unwrap(
      await sendWithMedia(c.env, auth.userId, f.conversationId, request.mediaIds, async (media) => await stub.send(auth, { ...request, media }, Date.now(), null)),
    );
    if (!result.duplicate) return c.json({ media: info, message: result.message }, 201);
    // A retry of an upload-and-send: the message exists with the first upload; this one goes.
    await discardMedia(c.env, stored);
    stored = null;
    const original = result.message.media[0];
    return c.json({ media: original ? await withUrl(original, originOf(c), settings) : null, message: result.message }, 200);
  } catch (err) {
    await form.cancel();
    if (stored) await discardMedia(c.env, stored);
    throw err;
  }
}

// --- Resumable multipart upload ----------------------------------------------------------------

/** The caller's item `mediaId` that is (or was) a multipart upload; 404 for anything else. */
async function ownMultipart(c: AppContext, mediaId: string): Promise<MediaRow> {
  const m = schema.media;
  const [row] = await db(c.env, mediaId)
    .select()
    .from(m)
    .where(and(eq(m.id, mediaId), eq(m.uploaderId, c.get("auth").userId), isNotNull(m.partSize)))
    .limit(1);
  if (!row) throw new ApiError("not_found", "no such upload");
  return row;
}

const partCountOf = (row: MediaRow) => Math.ceil(row.size / row.partSize!);
const partLength = (row: MediaRow, n: number) => (n < partCountOf(row) ? row.partSize! : row.size - row.partSize! * (partCountOf(row) - 1));

async function describeUpload(c: AppContext, row: MediaRow): Promise<MultipartUpload> {
  const p = schema.mediaParts;
  const parts = await db(c.env, row.id)
    .select({ partNumber: p.partNumber, size: p.size, etag: p.etag })
    .from(p)
    .where(eq(p.mediaId, row.id))
    .orderBy(asc(p.partNumber));
  return {
    mediaId: row.id,
    uploadId: row.uploadId ?? "",
    contentType: storedType(row.contentType),
    name: row.name,
    size: row.size,
    partSize: row.partSize!,
    partCount: partCountOf(row),
    parts,
  };
}

upload.post("/multipart", async (c) => {
  const body = await readJson(c.req.raw, MultipartInitBody, c.get("settings").maxRequestBytes);
  const settings = c.get("settings").media;
  const type = canonicalType(body.contentType);
  if (!type) throw unsupported();
  const limit = limitFor(type, settings, true);
  if (body.size > limit) throw new ApiError("payload_too_large", `${type} uploads are limited to ${limit} bytes`);
  await requireThumbnail(c, body.thumbnailId);
  await requireQuota(c.env, c.get("auth").userId, settings, body.size, true);
  // R2 allows at most 10,000 parts, so a huge file gets larger parts.
  const partSize = Math.max(settings.partBytes, Math.ceil(body.size / MEDIA_LIMITS.partsMax));
  const id = d1Shards(c.env).idBeside(c.get("auth").userId);
  const name = cleanName(body.name, type);
  const mpu = await c.env.MEDIA.createMultipartUpload(r2Key(id), {
    httpMetadata: { contentType: type, contentDisposition: contentDisposition(type, name) },
    customMetadata: { uploaderId: c.get("auth").userId },
  });
  const row: MediaRow = {
    id,
    uploaderId: c.get("auth").userId,
    contentType: type,
    size: body.size,
    name,
    r2Key: r2Key(id),
    status: "pending",
    uploadId: mpu.uploadId,
    partSize,
    ...metaColumns(body),
    createdAt: Date.now(),
  };
  try {
    await db(c.env, row.id).insert(schema.media).values(row);
  } catch (err) {
    await mpu.abort().catch(() => {});
    throw err;
  }
  return c.json(await describeUpload(c, row), 201);
});

/** How a client resumes: the parts that arrived (re-send the others, then complete). */
upload.get("/multipart/:mediaId", async (c) => {
  const row = await ownMultipart(c, c.req.param("mediaId"));
  if (row.status === "complete") throw new ApiError("conflict", "upload already completed");
  return c.json(await describeUpload(c, row));
});

upload.put("/multipart/:mediaId/parts/:n", async (c) => {
  const row = await ownMultipart(c, c.req.param("mediaId"));
  if (row.status === "complete" || !row.uploadId) throw new ApiError("conflict", "upload already completed");
  const n = /^\d{1,5}$/.test(c.req.param("n")) ? Number(c.req.param("n")) : 0;
  if (n < 1 || n > partCountOf(row)) throw new ApiError("bad_request", `part number must be 1 to ${partCountOf(row)}`);
  const expected = partLength(row, n);
  const length = declaredLength(c.req.raw);
  if (length !== null && length > expected) throw new ApiError("payload_too_large", `part ${n} must be ${expected} bytes`);
  if (length !== null && length < expected) throw new ApiError("bad_request", `part ${n} must be ${expected} bytes`);
  const body = c.req.raw.body;
  if (!body) throw new ApiError("bad_request", `part ${n} must be ${expected} bytes`);
  const source = ByteSource.fromStream(body, expected, length !== null);
  if (n === 1) await source.sniff(storedType(row.contentType));
  const part = await uploadPart(c.env.MEDIA.resumeMultipartUpload(row.r2Key, row.uploadId), n, source, expected);
  const p = schema.mediaParts;
  await db(c.env, row.id)
    .insert(p)
    .values({ mediaId: row.id, partNumber: n, etag: part.etag, size: expected, createdAt: Date.now() })
    .onConflictDoUpdate({ target: [p.mediaId, p.partNumber], set: { etag: part.etag, createdAt: Date.now() } });
  return c.json({ partNumber: n, etag: part.etag });
});

upload.post("/multipart/:mediaId/complete", async (c) => {
  const row = await ownMultipart(c, c.req.param("mediaId"));
  const settings = c.get("settings").media;
  // A retry after a lost answer gets the same item again.
  if (row.status === "complete") return c.json({ media: await withUrl(toRef(row), originOf(c), settings) }, 200);
  const { parts } = await describeUpload(c, row);
  const have = new Set(parts.map((p) => p.partNumber));
  const missing: number[] = [];
  for (let n = 1; n <= partCountOf(row); n++) if (!have.has(n)) missing.push(n);
  if (missing.length > 0) {
    throw new ApiError("bad_request", `parts missing: ${missing.slice(0, 20).join(", ")}${missing.length > 20 ? ", ..." : ""}`, {
      issues: missing.slice(0, 100).map((n) => ({ path: `parts.${n}`, message: "not uploaded" })),
    });
  }
  let size: number;
  try {
    const object = await c.env.MEDIA.resumeMultipartUpload(row.r2Key, row.uploadId!).complete(parts.map(({ partNumber, etag }) => ({ partNumber, etag })));
    size = object.size;
  } catch (err) {
    // R2 may have completed it for an earlier call whose D1 write failed.
    const object = await c.env.MEDIA.head(row.r2Key);
    if (!object) throw err;
    size = object.size;
  }
  if (size !== row.size) {
    await discardMedia(c.env, row);
    throw new Error(`media ${row.id}: completed ${size} bytes, declared ${row.size}`);
  }
  const d = db(c.env, row.id);
  await d.batch([
    d.update(schema.media).set({ status: "complete", uploadId: null }).where(eq(schema.media.id, row.id)),
    d.delete(schema.mediaParts).where(eq(schema.mediaParts.mediaId, row.id)),
  ]);
  return c.json({ media: await withUrl(toRef({ ...row, status: "complete" }), originOf(c), settings) }, 201);
});

upload.delete("/multipart/:mediaId", async (c) => {
  const row = await ownMultipart(c, c.req.param("mediaId"));
  if (row.status === "complete") throw new ApiError("conflict", "upload already completed");
  await discardMedia(c.env, row);
  return c.body(null, 204);
});

// --- Downloads -----------------------------------------------------------------------------------

export const media = newApp();

/** The signed URL: no token; the signature is the capability. */
media.get("/:id/content", async (c) => {
  const id = c.req.param("id");
  const now = Date.now();
  const { expiresAt } = await verifyMediaUrl(
    id,
    new URL(c.req.url).searchParams,
    requireSecret("MEDIA_URL_SECRET", c.get("settings").media.urlSecret),
    now,
    MEDIA_LIMITS.urlTtlMaxSeconds * 1000,
  );
  const bucket = c.env.MEDIA;
  // Local R2 answers an unsatisfiable range with the whole object, so the size is needed first.
  const head = await bucket.head(r2Key(id));
  if (!head) throw new ApiError("not_found", "no such media");

  const headers = new Headers();
  head.writeHttpMetadata(headers);
  headers.set("etag", head.httpEtag);
  headers.set("accept-ranges", "bytes");
  headers.set("x-content-type-options", "nosniff");
  headers.set("cache-control", `private, max-age=${Math.floor((expiresAt - now) / 1000)}, immutable`);
  // Belt and braces: nothing served here may run script or be framed, whatever a browser makes of it.
  headers.set("content-security-policy", "default-src 'none'; sandbox");
  headers.set("referrer-policy", "no-referrer");
  if (!headers.has("content-disposition")) headers.set("content-disposition", "attachment");

  if (etagMatches(c.req.header("if-none-match"), head.httpEtag)) return new Response(null, { status: 304, headers });

  const ifRange = c.req.header("if-range");
  const rangeHeader = ifRange === undefined || ifRange === head.httpEtag ? c.req.header("range") : undefined;
  const range = rangeHeader === undefined ? null : parseRange(rangeHeader, head.size);
  if (range === "unsatisfiable") {
    headers.set("content-range", `bytes */${head.size}`);
    headers.delete("content-disposition");
    return new Response(null, { status: 416, headers });
  }
  const status = range ? 206 : 200;
  headers.set("content-length", String(range ? range.length : head.size));
  if (range) headers.set("content-range", `bytes ${range.offset}-${range.offset + range.length - 1}/${head.size}`);
  if (c.req.method === "HEAD") return new Response(null, { status, headers });
  const object = await bucket.get(r2Key(id), range ? { range } : {});
  if (!object) throw new ApiError("not_found", "no such media");
  return new Response(object.body, { status, headers });
});

media.get("/:id", requireAuth, async (c) => {
  const { ttl } = readQuery(c.req.url, MediaUrlQuery);
  const info = await visibleInfo(c, ttl);
  return new Response(null, {
    status: 302,
    headers: { location: info.url, "cache-control": "private, no-store", "referrer-policy": "no-referrer" },
  });
});

/** The same as the redirect, as JSON: a browser's fetch cannot read a redirect's location. */
media.get("/:id/info", requireAuth, async (c) => {
  const { ttl } = readQuery(c.req.url, MediaUrlQuery);
  return c.json({ media: await visibleInfo(c, ttl) }, 200, { "cache-control": "private, no-store" });
});

async function visibleInfo(c: AppContext, ttl: number | undefined): Promise<MediaInfo> {
  const row = await findVisibleMedia(c.env, c.get("auth").userId, c.req.param("id") ?? "");
  if (!row) throw new ApiError("not_found", "no such media");
  return withUrl(toRef(row), originOf(c), c.get("settings").media, ttl);
}

function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  const bare = (t: string) => t.trim().replace(/^W\//, "");
  return header.split(",").some((t) => t.trim() === "*" || bare(t) === bare(etag));
}

/**
 * One `bytes=` range against `size`: null to ignore the header (malformed or several ranges; a
 * 200 with everything is always a valid answer), or "unsatisfiable" for a 416.
 */
export function parseRange(header: string, size: number): { offset: number; length: number } | "unsatisfiable" | null {
  const m = /^bytes=(\d{0,16})-(\d{0,16})$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return null;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    const length = Math.min(suffix, size);
    return { offset: size - length, length };
  }
  const start = Number(m[1]);
  if (m[2] !== "" && Number(m[2]) < start) return null;
  if (start >= size) return "unsatisfiable";
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  return { offset: start, length: end - start + 1 };
}
