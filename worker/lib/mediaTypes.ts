// The allow-list of media types: aliases, magic bytes, size limits and how each is served.
// Sniffing looks at the first SNIFF_BYTES only; it proves the declared type is plausible, it does
// not validate the whole file (the server never decodes or transcodes media).
import { INVISIBLE_IN_NAMES, MEDIA_LIMITS, MEDIA_TYPES, type MediaContentType } from "../../protocol";
import type { MediaSettings } from "../../kernel/settings";

/** Enough for every signature below (a WebM DocType sits within the first ~40 bytes). */
export const SNIFF_BYTES = 256;

type Kind = "image" | "video" | "audio" | "pdf" | "blob";

/** Names browsers and tools send for the same thing. */
const ALIASES: Record<string, MediaContentType> = {
  "image/jpg": "image/jpeg",
  "image/pjpeg": "image/jpeg",
  "audio/mp3": "audio/mpeg",
  "audio/x-m4a": "audio/mp4",
  "audio/m4a": "audio/mp4",
  "audio/x-aac": "audio/aac",
  "audio/x-wav": "audio/wav",
  "audio/wave": "audio/wav",
  "audio/vnd.wave": "audio/wav",
  "application/x-pdf": "application/pdf",
};

/** The canonical allowed type for a `content-type` header value (parameters dropped), or null. */
export function canonicalType(header: string | null | undefined): MediaContentType | null {
  const base = (header ?? "").split(";")[0]!.trim().toLowerCase();
  return MEDIA_TYPES.find((t) => t === base) ?? ALIASES[base] ?? null;
}

/** The type of a stored row (written by us from canonicalType); an unknown one is served as a blob. */
export const storedType = (contentType: string): MediaContentType => canonicalType(contentType) ?? "application/octet-stream";

export function kindOf(type: MediaContentType): Kind {
  if (type === "application/pdf") return "pdf";
  if (type === "application/octet-stream") return "blob";
  if (type.startsWith("image/")) return "image";
  return type.startsWith("video/") ? "video" : "audio";
}

/**
 * The most bytes an item of `type` may have. Video and opaque blobs (an E2EE client's encrypted
 * video is a blob) may grow to the multipart limit through the resumable upload; a 2 GiB image or
 * PDF is no image or PDF, so those keep their own limit everywhere.
 */
export function limitFor(type: MediaContentType, s: MediaSettings, multipart: boolean): number {
  switch (kindOf(type)) {
    case "image":
      return s.maxImageBytes;
    case "audio":
      return s.maxAudioBytes;
    case "pdf":
      return s.maxPdfBytes;
    case "video":
      return multipart ? Math.max(s.maxVideoBytes, s.maxMultipartBytes) : s.maxVideoBytes;
    case "blob":
      return multipart ? Math.max(s.maxBlobBytes, s.maxMultipartBytes) : s.maxBlobBytes;
  }
}

/** The largest single `POST /upload` any type may make (the early check of a form's length). */
export function largestUpload(s: MediaSettings): number {
  return Math.max(s.maxImageBytes, s.maxAudioBytes, s.maxPdfBytes, s.maxVideoBytes, s.maxBlobBytes);
}

// --- Magic bytes ---------------------------------------------------------------------------------

const has = (b: Uint8Array, offset: number, sig: readonly number[]) =>
  b.length >= offset + sig.length && sig.every((x, i) => b[offset + i] === x);
const hasText = (b: Uint8Array, offset: number, text: string) =>
  has(b, offset, [...text].map((c) => c.charCodeAt(0)));

function containsText(b: Uint8Array, text: string): boolean {
  for (let i = 0; i + text.length <= b.length; i++) if (hasText(b, i, text)) return true;
  return false;
}

/** ISO base media file (MP4, MOV, M4A, AVIF): an `ftyp` box first; returns its brands. */
function isoBrands(b: Uint8Array): string[] | null {
  if (!hasText(b, 4, "ftyp") || b.length < 16) return null;
  const size = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
  const end = Math.min(size || b.length, b.length);
  const brands: string[] = [];
  const brandAt = (o: number) => String.fromCharCode(b[o]!, b[o + 1]!, b[o + 2]!, b[o + 3]!);
  brands.push(brandAt(8));
  for (let o = 16; o + 4 <= end; o += 4) brands.push(brandAt(o));
  return brands;
}

const isRiff = (b: Uint8Array, form: string) => hasText(b, 0, "RIFF") && hasText(b, 8, form);
const isId3 = (b: Uint8Array) => hasText(b, 0, "ID3");
/** MPEG audio frame sync (11 bits) with a layer other than the reserved 00 (which ADTS uses). */
const isMpegFrame = (b: Uint8Array) => b.length >= 2 && b[0] === 0xff && (b[1]! & 0xe0) === 0xe0 && (b[1]! & 0x06) !== 0;
/** AAC in ADTS: 12-bit sync, layer 00. */
const isAdts = (b: Uint8Array) => b.length >= 2 && b[0] === 0xff && (b[1]! & 0xf6) === 0xf0;
const isWebm = (b: Uint8Array) => has(b, 0, [0x1a, 0x45, 0xdf, 0xa3]) && containsText(b.subarray(0, 64), "webm");
/** QuickTime files made before `ftyp` existed start with another top-level atom. */
const QUICKTIME_ATOMS = ["moov", "mdat", "wide", "free", "skip", "pnot"];

const SNIFFERS: Record<MediaContentType, (b: Uint8Array) => boolean> = {
  "image/jpeg": (b) => has(b, 0, [0xff, 0xd8, 0xff]),
  "image/png": (b) => has(b, 0, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  "image/gif": (b) => hasText(b, 0, "GIF87a") || hasText(b, 0, "GIF89a"),
  "image/webp": (b) => isRiff(b, "WEBP"),
  "image/avif": (b) => isoBrands(b)?.some((x) => x === "avif" || x === "avis") ?? false,
  "video/mp4": (b) => isoBrands(b) !== null,
  "video/webm": isWebm,
  "video/quicktime": (b) => isoBrands(b) !== null || QUICKTIME_ATOMS.some((a) => hasText(b, 4, a)),
  "audio/webm": isWebm,
  "audio/ogg": (b) => hasText(b, 0, "OggS"),
  "audio/mpeg": (b) => isId3(b) || isMpegFrame(b),
  "audio/mp4": (b) => isoBrands(b) !== null,
  "audio/aac": (b) => isAdts(b) || hasText(b, 0, "ADIF") || isId3(b),
  "audio/wav": (b) => isRiff(b, "WAVE"),
  "application/pdf": (b) => hasText(b, 0, "%PDF-"),
  // Client-encrypted bytes look like noise by design.
  "application/octet-stream": () => true,
};

/** Whether the first bytes of a file are plausible for its declared type. */
export function sniffMatches(type: MediaContentType, head: Uint8Array): boolean {
  return SNIFFERS[type](head);
}

// --- Serving -------------------------------------------------------------------------------------

/**
 * Only media a browser renders as media are shown inline. Everything else downloads: a PDF can
 * carry scripts and forms, and an opaque blob is whatever its sender says it is. HTML, SVG and
 * scripts are not on the allow-list at all, so they are never stored, let alone served inline.
 */
export function isInlineSafe(type: MediaContentType): boolean {
  const kind = kindOf(type);
  return kind === "image" || kind === "video" || kind === "audio";
}

const EXTENSIONS: Record<MediaContentType, string> = {
  "image/jpeg": ".jpg",
  "image/png": ".png",
  "image/gif": ".gif",
  "image/webp": ".webp",
  "image/avif": ".avif",
  "video/mp4": ".mp4",
  "video/webm": ".webm",
  "video/quicktime": ".mov",
  "audio/webm": ".weba",
  "audio/ogg": ".ogg",
  "audio/mpeg": ".mp3",
  "audio/mp4": ".m4a",
  "audio/aac": ".aac",
  "audio/wav": ".wav",
  "application/pdf": ".pdf",
  "application/octet-stream": ".bin",
};

/**
 * A display name from whatever the client sent: no directories, no control characters, at most
 * MEDIA_LIMITS.nameMax code units; `file.<ext>` when nothing is left.
 */
export function cleanName(raw: string | null | undefined, type: MediaContentType): string {
  let name = (raw ?? "").normalize("NFC");
  name = name.slice(Math.max(name.lastIndexOf("/"), name.lastIndexOf("\\")) + 1);
  name = name.replace(INVISIBLE_IN_NAMES, "").trim();
  if (name.length > MEDIA_LIMITS.nameMax) {
    let cut = MEDIA_LIMITS.nameMax;
    const last = name.charCodeAt(cut - 1);
    if (last >= 0xd800 && last <= 0xdbff) cut--;
    name = name.slice(0, cut);
  }
  return name || `file${EXTENSIONS[type]}`;
}

/** `content-disposition` with an ASCII fallback and the exact UTF-8 name (RFC 6266, RFC 8187). */
export function contentDisposition(type: MediaContentType, stored: string): string {
  // encodeURIComponent throws on a lone surrogate; the schemas refuse them, but a name stored
  // before they did may hold one, and a download must never fail on its name.
  const name = stored.replace(/\p{Cs}/gu, "\ufffd");
  const ascii = name.replace(/[^\x20-\x7e]|["\\%]/g, "_");
  const utf8 = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `${isInlineSafe(type) ? "inline" : "attachment"}; filename="${ascii}"; filename*=UTF-8''${utf8}`;
}
