// A streaming `multipart/form-data` reader (RFC 7578). `Request.formData()` would hold the whole
// body, file included, in memory; this hands out each part's bytes as they arrive, keeping at most
// one network chunk plus a boundary's length buffered.
import { ApiError } from "./apiError";
import { decodeUtf8 } from "./validate";

export interface FormPart {
  name: string;
  filename: string | null;
  contentType: string | null;
}

const encoder = new TextEncoder();
const CRLF = encoder.encode("\r\n");
const HEADERS_END = encoder.encode("\r\n\r\n");
/** Part headers are a few lines; anything longer is not a form a client made. */
const MAX_HEADER_BYTES = 8 * 1024;

export function boundaryOf(contentType: string): string {
  const m = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))/i.exec(contentType);
  const boundary = m?.[1] ?? m?.[2];
  if (!boundary) throw new ApiError("bad_request", "multipart/form-data needs a boundary");
  return boundary;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array, from = 0): number {
  const first = needle[0]!;
  for (let i = haystack.indexOf(first, from); i !== -1 && i + needle.length <= haystack.length; i = haystack.indexOf(first, i + 1)) {
    let j = 1;
    while (j < needle.length && haystack[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

const malformed = () => new ApiError("bad_request", "malformed multipart/form-data body");

export class FormStream {
  /** Bytes read but not handed out. Starts with a CRLF so the first delimiter looks like the rest. */
  private buf: Uint8Array = CRLF;
  private ended = false;
  private inPart = false;
  private finished = false;
  private readonly delimiter: Uint8Array;

  constructor(
    private readonly reader: ReadableStreamDefaultReader<Uint8Array>,
    boundary: string,
  ) {
    this.delimiter = encoder.encode(`\r\n--${boundary}`);
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const { done, value } = await this.reader.read();
    if (done) {
      this.ended = true;
      return false;
    }
    this.buf = concat(this.buf, value);
    return true;
  }

  /** The next part's headers, or null after the closing delimiter. Skips what is left of the current part. */
  async nextPart(): Promise<FormPart | null> {
    while (this.inPart) await this.read();
    if (this.finished) return null;
    // The buffer starts at a delimiter (or the preamble before the first one).
    let at: number;
    while ((at = indexOf(this.buf, this.delimiter)) === -1 || this.buf.length < at + this.delimiter.length + 2) {
      if (this.buf.length > MAX_HEADER_BYTES + this.delimiter.length) throw malformed();
      if (!(await this.fill())) throw malformed();
    }
    const after = at + this.delimiter.length;
    if (this.buf[after] === 0x2d && this.buf[after + 1] === 0x2d) {
      // `--boundary--`: the epilogue after it is ignored.
      this.finished = true;
      await this.reader.cancel().catch(() => {});
      return null;
    }
    let headerEnd: number;
    while ((headerEnd = indexOf(this.buf, HEADERS_END, after)) === -1) {
      if (this.buf.length - after > MAX_HEADER_BYTES) throw malformed();
      if (!(await this.fill())) throw malformed();
    }
    // Transport padding (spaces, tabs) may follow the boundary before its CRLF.
    const lines = decodeUtf8(this.buf.subarray(after, headerEnd), "a form part's headers").split("\r\n");
    if (lines[0]!.trim() !== "") throw malformed();
    this.buf = this.buf.subarray(headerEnd + HEADERS_END.length);
    this.inPart = true;
    return parseHeaders(lines.slice(1));
  }

  /** The next bytes of the current part's body, or null at its end. */
  async read(): Promise<Uint8Array | null> {
    if (!this.inPart) return null;
    for (;;) {
      const at = indexOf(this.buf, this.delimiter);
      if (at !== -1) {
        const out = this.buf.subarray(0, at);
        this.buf = this.buf.subarray(at);
        if (out.length > 0) return out;
        this.inPart = false;
        return null;
      }
      // Everything but a partial delimiter at the very end is body. Keeping only a real partial
      // match (not a delimiter's length, always) usually empties the buffer, so the next chunk is
      // taken as it is instead of being copied behind the leftover.
      const safe = this.buf.length - this.partialDelimiterAtEnd();
      if (safe > 0) {
        const out = this.buf.subarray(0, safe);
        this.buf = this.buf.subarray(safe);
        return out;
      }
      if (!(await this.fill())) throw malformed();
    }
  }

  /** The length of the longest end of the buffer that is a proper prefix of the delimiter. */
  private partialDelimiterAtEnd(): number {
    const d = this.delimiter;
    for (let start = Math.max(0, this.buf.length - d.length + 1); start < this.buf.length; start++) {
      if (this.buf[start] !== d[0]) continue;
      let j = 1;
      while (start + j < this.buf.length && this.buf[start + j] === d[j]) j++;
      if (start + j === this.buf.length) return this.buf.length - start;
    }
    return 0;
  }

  /** Reads the rest of the current part as UTF-8 text of at most `maxBytes`. */
  async text(maxBytes: number): Promise<string> {
    let out: Uint8Array = new Uint8Array(0);
    for (let chunk = await this.read(); chunk; chunk = await this.read()) {
      if (out.length + chunk.length > maxBytes) throw new ApiError("bad_request", `form field over ${maxBytes} bytes`);
      out = concat(out, chunk);
    }
    return decodeUtf8(out, "a form field");
  }

  async cancel(): Promise<void> {
    await this.reader.cancel().catch(() => {});
  }
}

function parseHeaders(lines: string[]): FormPart {
  let disposition = "";
  let contentType: string | null = null;
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw malformed();
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "content-disposition") disposition = value;
    else if (name === "content-type") contentType = value;
  }
  if (!/^form-data\s*(;|$)/i.test(disposition)) throw malformed();
  const name = param(disposition, "name");
  if (name === null) throw malformed();
  const extended = param(disposition, "filename*");
  let filename = param(disposition, "filename");
  if (extended) {
    const m = /^UTF-8''(.*)$/i.exec(extended);
    if (m) {
      try {
        filename = decodeURIComponent(m[1]!);
      } catch {
        // keep the plain filename
      }
    }
  }
  return { name, filename, contentType };
}

/** A parameter of a header value: quoted (with backslash escapes) or a bare token. */
function param(header: string, key: string): string | null {
  const re = new RegExp(`;\\s*${key.replace(/[*]/g, "\\*")}\\s*=\\s*(?:"((?:[^"\\\\]|\\\\.)*)"|([^;\\s]*))`, "i");
  const m = re.exec(header);
  if (!m) return null;
  return m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : (m[2] ?? "");
}
