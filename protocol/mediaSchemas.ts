// Media uploads and downloads (API.md "Media"): the allowed types, the bodies and queries of the
// upload endpoints, and what they answer. Upload bytes themselves are not JSON; these schemas cover
// everything around them.
import * as z from "zod";
import { text } from "./text";
import { MediaRef } from "./schemas";

/** Every content type an upload may declare, as stored and served (aliases are mapped onto these). */
export const MEDIA_TYPES = [
  "image/jpeg",
  "image/png",
  "image/gif",
  "image/webp",
  "image/avif",
  "video/mp4",
  "video/webm",
  "video/quicktime",
  "audio/webm",
  "audio/ogg",
  "audio/mpeg",
  "audio/mp4",
  "audio/aac",
  "audio/wav",
  "application/pdf",
  "application/octet-stream",
] as const;

export const MediaContentType = z.enum(MEDIA_TYPES);
export type MediaContentType = z.infer<typeof MediaContentType>;

export const MEDIA_LIMITS = {
  /** File names longer than this are cut (in UTF-16 code units, never inside a surrogate pair). */
  nameMax: 255,
  /** A signed URL lives at most this long (7 days). */
  urlTtlMaxSeconds: 7 * 86_400,
  /** R2's floor for every multipart part but the last. */
  partMinBytes: 5 * 1024 * 1024,
  /** R2's ceiling on the number of parts of one upload. */
  partsMax: 10_000,
} as const;

const MediaId = MediaRef.shape.id;
const Dimension = z.number().int().positive().max(100_000);
const Duration = z.number().int().nonnegative().max(366 * 86_400_000);

/** Query and form values arrive as text. */
const IntText = z
  .string()
  .regex(/^\d{1,16}$/, "a non-negative integer")
  .transform(Number);

/** Optional presentation metadata of a media item; the server checks types, not pixels. */
const metaText = {
  width: IntText.pipe(Dimension).optional(),
  height: IntText.pipe(Dimension).optional(),
  durationMs: IntText.pipe(Duration).optional(),
  /** A media id of the uploader's own (a small image the client made); shared along with the item. */
  thumbnailId: MediaId.optional(),
};

/** `POST /upload` with a raw body: `?name=` and the optional metadata. */
export const UploadQuery = z.strictObject({
  name: text().max(1024).optional(),
  ...metaText,
});

/** The text fields of a `multipart/form-data` upload (the `file` part aside). */
export const UploadFormFields = z
  .strictObject({
    conversationId: MediaId.optional(),
    clientMsgId: text().min(1).max(64).optional(),
    body: text().min(1).max(8192).optional(),
    threadRootSeq: IntText.pipe(z.number().int().positive()).optional(),
    ...metaText,
  })
  .refine((f) => (f.conversationId === undefined) === (f.clientMsgId === undefined), {
    message: "conversationId and clientMsgId go together",
  })
  .refine((f) => f.conversationId !== undefined || (f.body === undefined && f.threadRootSeq === undefined), {
    message: "body and threadRootSeq need a conversationId",
  });

/** `POST /upload/multipart`. `contentType` is checked against MEDIA_TYPES by the server (415). */
export const MultipartInitBody = z.strictObject({
  contentType: text().min(1).max(255),
  size: z.number().int().positive(),
  name: text().max(1024),
  width: Dimension.optional(),
  height: Dimension.optional(),
  durationMs: Duration.optional(),
  thumbnailId: MediaId.optional(),
});

/** `GET /media/:id` and `GET /media/:id/info`: `ttl` (seconds) of the signed URL, at most 7 days. */
export const MediaUrlQuery = z.strictObject({
  ttl: IntText.pipe(z.number().int().min(1).max(MEDIA_LIMITS.urlTtlMaxSeconds)).optional(),
});

/** A media item as its uploader and the members who can see it get it: the ref plus a signed URL. */
export const MediaInfo = MediaRef.extend({
  url: text(),
  urlExpiresAt: z.number().int().nonnegative(),
});
export type MediaInfo = z.infer<typeof MediaInfo>;

/** `POST /upload/multipart` answers this; `GET /upload/multipart/:mediaId` adds the parts received. */
export const MultipartUpload = z.object({
  mediaId: MediaId,
  uploadId: text(),
  contentType: MediaContentType,
  name: text(),
  size: z.number().int().positive(),
  partSize: z.number().int().positive(),
  partCount: z.number().int().positive(),
  parts: z.array(z.object({ partNumber: z.number().int().positive(), size: z.number().int().positive(), etag: text() })),
});
export type MultipartUpload = z.infer<typeof MultipartUpload>;
