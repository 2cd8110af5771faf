// Streaming bytes into R2 without holding a file in memory. Every upload path pulls chunks through
// a ByteSource, which sniffs the first bytes against the declared type and counts the rest
// against the limit, then writes them one of two ways:
//
// - Known length (a raw body with content-length, a multipart part of a known size): R2 `put` /
//   `uploadPart` accept a stream only when its length is known up front, so the chunks go through
//   a FixedLengthStream of that length. Nothing is buffered beyond the chunk in flight.
// - Unknown length (a raw body sent chunked, the file part of a form, whose length the form's
//   content-length does not tell): an internal R2 multipart upload. R2 needs every part but the
//   last to have one size (>= 5 MiB), so one part's worth (MEDIA_PART_BYTES) is buffered at a time
//   and the memory held is bounded by that, whatever the file's size. A file smaller than one part
//   becomes a single `put` and never starts a multipart upload.
import type { MediaContentType } from "../../protocol";
import { ApiError } from "./errors";
import { SNIFF_BYTES, sniffMatches } from "./mediaTypes";

export type Pull = () => Promise<Uint8Array | null>;

export const pullFrom = (reader: ReadableStreamDefaultReader<Uint8Array>): Pull => async () => {
  const { done, value } = await reader.read();
  return done ? null : value;
};

const tooLarge = (limit: number) => new ApiError("payload_too_large", `file over ${limit} bytes`);

/** Chunks from `pull`, with the first bytes held back for sniffing and a running byte count. */
export class ByteSource {
  private held: Uint8Array[] = [];
  total = 0;

  constructor(
    private readonly pull: Pull,
    private readonly limit: number,
  ) {}

  /** Reads until SNIFF_BYTES are held (or the input ends) and checks them against `type`. */
  async sniff(type: MediaContentType): Promise<void> {
    let held = 0;
    while (held < SNIFF_BYTES) {
      const chunk = await this.pull();
      if (!chunk) break;
      if (chunk.length === 0) continue;
      this.held.push(chunk);
      held += chunk.length;
    }
    if (held === 0) throw new ApiError("bad_request", "the file is empty");
    const head = new Uint8Array(Math.min(held, SNIFF_BYTES));
    let offset = 0;
    for (const c of this.held) {
      if (offset >= head.length) break;
      const n = Math.min(c.length, head.length - offset);
      head.set(c.subarray(0, n), offset);
      offset += n;
    }
    if (!sniffMatches(type, head)) {
      throw new ApiError("unsupported_media_type", `the file's first bytes are not ${type}`);
    }
  }

  async next(): Promise<Uint8Array | null> {
    const chunk = this.held.shift() ?? (await this.pull());
    if (!chunk) return null;
    this.total += chunk.length;
    if (this.total > this.limit) throw tooLarge(this.limit);
    return chunk;
  }
}

/**
 * Runs `consume` on a stream of exactly `length` bytes fed from `source`. If the source fails
 * (too large, client gone) the stream is aborted so R2 gives up too, and the source's error wins.
 */
async function throughFixedLength<T>(
  source: ByteSource,
  length: number,
  consume: (stream: ReadableStream<Uint8Array>) => Promise<T>,
): Promise<T> {
  const fixed = new FixedLengthStream(length);
  const writer = fixed.writable.getWriter();
  let sourceError: unknown = null;
  const pump = (async () => {
    try {
      for (let chunk = await source.next(); chunk; chunk = await source.next()) await writer.write(chunk);
      if (source.total !== length) throw new ApiError("bad_request", `expected ${length} bytes, got ${source.total}`);
      await writer.close();
    } catch (err) {
      sourceError = err;
      await writer.abort(err).catch(() => {});
    }
  })();
  try {
    const result = await consume(fixed.readable);
    await pump;
    if (sourceError) throw sourceError;
    return result;
  } catch (err) {
    // R2 gave up first: unblock a write waiting on it.
    await writer.abort(err).catch(() => {});
    await pump;
    throw sourceError ?? err;
  }
}

export interface PutOptions {
  httpMetadata: R2HTTPMetadata;
  customMetadata: Record<string, string>;
}

/** Streams `source` into `key`; `length` when known (declared), else buffered by part. Returns the size. */
export async function putStream(
  bucket: R2Bucket,
  key: string,
  source: ByteSource,
  length: number | null,
  partBytes: number,
  options: PutOptions,
): Promise<number> {
  if (length !== null) {
    const object = await throughFixedLength(source, length, (stream) => bucket.put(key, stream, options));
    return object.size;
  }
  return putByParts(bucket, key, source, partBytes, options);
}

async function putByParts(bucket: R2Bucket, key: string, source: ByteSource, partBytes: number, options: PutOptions): Promise<number> {
  // Grows to one part, then is reused for every part: uploadPart has finished with it when it resolves.
  let buf = new Uint8Array(Math.min(partBytes, 64 * 1024));
  let len = 0;
  let upload: R2MultipartUpload | null = null;
  const parts: R2UploadedPart[] = [];
  const flush = async () => {
    upload ??= await bucket.createMultipartUpload(key, options);
    parts.push(await upload.uploadPart(parts.length + 1, buf.subarray(0, len)));
    len = 0;
  };
  try {
    for (let chunk = await source.next(); chunk; chunk = await source.next()) {
      let offset = 0;
      while (offset < chunk.length) {
        if (len === partBytes) await flush();
        const want = len + chunk.length - offset;
        if (want > buf.length && buf.length < partBytes) {
          const grown = new Uint8Array(Math.min(partBytes, Math.max(want, buf.length * 2)));
          grown.set(buf.subarray(0, len));
          buf = grown;
        }
        const n = Math.min(chunk.length - offset, buf.length - len);
        buf.set(chunk.subarray(offset, offset + n), len);
        len += n;
        offset += n;
      }
    }
    if (!upload) return (await bucket.put(key, buf.subarray(0, len), options)).size;
    if (len > 0) await flush();
    return (await (upload as R2MultipartUpload).complete(parts)).size;
  } catch (err) {
    if (upload) await (upload as R2MultipartUpload).abort().catch(() => {});
    throw err;
  }
}

/** One part of a client's resumable upload, of exactly `length` bytes. */
export function uploadPart(upload: R2MultipartUpload, partNumber: number, source: ByteSource, length: number): Promise<R2UploadedPart> {
  return throughFixedLength(source, length, (stream) => upload.uploadPart(partNumber, stream));
}
