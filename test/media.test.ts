// Media through the real Worker, R2 and D1: uploads of every allowed type, sniffing, limits,
// signed URLs, access control, resumable multipart uploads and media messages.
// Limits are lowered in vitest.config.ts: images, audio and PDF 64 KiB, video 1 MiB by POST /upload,
// blobs 16 MiB, multipart 32 MiB with 5 MiB parts.
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { Message, type MediaInfo, type MultipartUpload } from "../protocol";
import { conversationStub } from "../kernel/objects";
import { MESSAGE_JSON_SQL } from "../kernel/d1/rows";
import { signMediaUrl } from "../worker/lib/signing";
import { call, ciphertextFor, d1Of, direct, expectError, group, json, openConversation, register, unique, waitFor, type Session } from "./helpers";

const MiB = 1024 * 1024;
const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));

/** Deterministic filler so a fixture has a body and a digest worth comparing. */
function filler(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function bytes(head: number[], length = 512): Uint8Array {
  const out = filler(Math.max(length, head.length), head.length);
  out.set(head, 0);
  return out;
}

const u32be = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
const u32le = (n: number) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
const ftyp = (major: string, ...compatible: string[]) => [
  ...u32be(16 + 4 * compatible.length),
  ...ascii("ftyp"),
  ...ascii(major),
  0,
  0,
  0,
  0,
  ...compatible.flatMap(ascii),
];
const riff = (form: string) => [...ascii("RIFF"), ...u32le(504), ...ascii(form)];
// EBML header as Chrome's MediaRecorder writes it: version fields, then DocType "webm".
const ebml = [0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x86, 0x81, 0x01, 0x42, 0xf7, 0x81, 0x01, 0x42, 0xf2, 0x81, 0x04, 0x42, 0xf3, 0x81, 0x08, 0x42, 0x82, 0x84, ...ascii("webm")];

/** A tiny file of every allowed type, its first bytes as real files of that type have them. */
const FIXTURES: Record<string, { head: number[]; inline: boolean }> = {
  "image/jpeg": { head: [0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, ...ascii("JFIF"), 0], inline: true },
  "image/png": { head: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, ...ascii("IHDR")], inline: true },
  "image/gif": { head: ascii("GIF89a"), inline: true },
  "image/webp": { head: [...riff("WEBP"), ...ascii("VP8 ")], inline: true },
  "image/avif": { head: ftyp("avif", "avif", "mif1", "miaf"), inline: true },
  "video/mp4": { head: ftyp("isom", "isom", "iso2", "mp41"), inline: true },
  "video/webm": { head: ebml, inline: true },
  "video/quicktime": { head: ftyp("qt  ", "qt  "), inline: true },
  "audio/webm": { head: ebml, inline: true },
  "audio/ogg": { head: [...ascii("OggS"), 0, 2], inline: true },
  "audio/mpeg": { head: [...ascii("ID3"), 4, 0, 0], inline: true },
  "audio/mp4": { head: ftyp("M4A ", "M4A ", "mp42", "isom"), inline: true },
  "audio/aac": { head: [0xff, 0xf1, 0x50, 0x80], inline: true },
  "audio/wav": { head: [...riff("WAVE"), ...ascii("fmt ")], inline: true },
  "application/pdf": { head: ascii("%PDF-1.7\n"), inline: false },
  "application/octet-stream": { head: [0x00, 0x13, 0x37], inline: false },
};

async function sha256(data: ArrayBuffer | Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The path and query of a URL the Worker handed out (tests call the Worker by path). */
const pathOf = (url: string) => {
  const u = new URL(url);
  return `${u.pathname}${u.search}`;
};

async function uploadRaw(s: Session, type: string, data: Uint8Array, query = "", expected = 201): Promise<{ media: MediaInfo }> {
  return json<{ media: MediaInfo }>(`/upload${query}`, {
    token: s.token,
    rawBody: data,
    headers: { "content-type": type, "content-length": String(data.length) },
  }, expected);
}

/** A body with no content-length: the Worker must count while streaming. */
function streamOf(data: Uint8Array, chunk = 64 * 1024): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= data.length) return controller.close();
      controller.enqueue(data.slice(offset, offset + chunk));
      offset += chunk;
    },
  });
}

async function mediaRows(userId: string): Promise<number> {
  const row = await d1Of(userId).prepare("SELECT count(*) AS n FROM media WHERE uploader_id = ?").bind(userId).first<{ n: number }>();
  return row?.n ?? 0;
}

async function objectCount(): Promise<number> {
  let n = 0;
  let cursor: string | undefined;
  do {
    const page = await env.MEDIA.list({ prefix: "media/", ...(cursor ? { cursor } : {}) });
    n += page.objects.length;
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return n;
}

/** GET /media/:id without following the redirect (a Request follows redirects by default). */
function getMedia(mediaId: string, token: string | null, query = ""): Promise<Response> {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  return exports.default.fetch(new Request(`http://chat.test/media/${mediaId}${query}`, { headers, redirect: "manual" }));
}

const BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** A base64url character with the same four high bits: the same bytes once decoded. */
const otherSpelling = (last: string) => BASE64URL[BASE64URL.indexOf(last) ^ 1]!;

async function download(url: string, headers: Record<string, string> = {}): Promise<Response> {
  return call(pathOf(url), { headers });
}

describe("uploads", () => {
  it("stores and serves every allowed type from a raw body", async () => {
    const a = await register();
    for (const [type, { head, inline }] of Object.entries(FIXTURES)) {
      const data = bytes(head);
      const { media } = await uploadRaw(a, type, data, `?name=${encodeURIComponent(`tiny ${type.split("/")[1]}`)}`);
      expect(media).toMatchObject({ contentType: type, size: data.length, name: `tiny ${type.split("/")[1]}` });
      expect(media.urlExpiresAt - Date.now()).toBeLessThanOrEqual(3600_000);
      expect(media.urlExpiresAt).toBeGreaterThan(Date.now());
      const res = await download(media.url);
      expect(res.status, type).toBe(200);
      expect(res.headers.get("content-type")).toBe(type);
      expect(res.headers.get("content-disposition")).toMatch(inline ? /^inline; / : /^attachment; /);
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(res.headers.get("accept-ranges")).toBe("bytes");
      const maxAge = Number(/private, max-age=(\d+)/.exec(res.headers.get("cache-control") ?? "")?.[1]);
      expect(maxAge).toBeGreaterThan(0);
      expect(maxAge).toBeLessThanOrEqual(3600);
      expect(await sha256(await res.arrayBuffer())).toBe(await sha256(data));
    }
  });

  it("maps type aliases and keeps metadata", async () => {
    const a = await register();
    const thumb = await uploadRaw(a, "image/jpg", bytes(FIXTURES["image/jpeg"]!.head), "?name=thumb.jpg");
    expect(thumb.media.contentType).toBe("image/jpeg");
    const { media } = await uploadRaw(
      a,
      "video/mp4; codecs=avc1",
      bytes(FIXTURES["video/mp4"]!.head),
      `?name=clip.mp4&width=640&height=360&durationMs=1500&thumbnailId=${thumb.media.id}`,
    );
    expect(media).toMatchObject({ contentType: "video/mp4", width: 640, height: 360, durationMs: 1500, thumbnailId: thumb.media.id });
    // A thumbnail must be one of the caller's images.
    const b = await register();
    await expectError(
      await call(`/upload?thumbnailId=${thumb.media.id}`, { token: b.token, rawBody: bytes(FIXTURES["image/png"]!.head), headers: { "content-type": "image/png" } }),
      400,
      "bad_request",
    );
    await expectError(
      await call(`/upload?thumbnailId=${media.id}`, { token: a.token, rawBody: bytes(FIXTURES["image/png"]!.head), headers: { "content-type": "image/png" } }),
      400,
      "bad_request",
    );
  });

  it("cleans file names and names unnamed files", async () => {
    const a = await register();
    const { media } = await uploadRaw(a, "application/pdf", bytes(FIXTURES["application/pdf"]!.head), `?name=${encodeURIComponent("../../etc/pass\u0000wd \"ä\".pdf")}`);
    expect(media.name).toBe('passwd "ä".pdf');
    const res = await download(media.url);
    expect(res.headers.get("content-disposition")).toBe(`attachment; filename="passwd ___.pdf"; filename*=UTF-8''passwd%20%22%C3%A4%22.pdf`);
    await res.arrayBuffer();
    const unnamed = await uploadRaw(a, "image/png", bytes(FIXTURES["image/png"]!.head));
    expect(unnamed.media.name).toBe("file.png");
  });

  it("answers 415 for types not allowed and bytes that contradict the type, storing nothing", async () => {
    const a = await register();
    const objects = await objectCount();
    const html = new TextEncoder().encode("<!doctype html><script>alert(1)</script>");
    for (const [type, data] of [
      ["text/html", html],
      ["image/svg+xml", new TextEncoder().encode('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')],
      ["application/javascript", new TextEncoder().encode("alert(1)")],
      ["text/plain", new TextEncoder().encode("hello")],
      ["application/x-msdownload", bytes(ascii("MZ"))],
      ["image/png", html],
      ["image/jpeg", bytes(FIXTURES["image/png"]!.head)],
      ["image/avif", bytes(FIXTURES["video/mp4"]!.head)],
      ["video/webm", bytes([0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x82, 0x88, ...ascii("matroska")])],
      ["audio/mpeg", bytes(FIXTURES["audio/aac"]!.head)],
      ["application/pdf", bytes(ascii("%PD"), 3)],
    ] as const) {
      await expectError(await call("/upload", { token: a.token, rawBody: data, headers: { "content-type": type } }), 415, "unsupported_media_type");
    }
    await expectError(await call("/upload", { token: a.token, rawBody: html }), 415, "unsupported_media_type");
    // In a form, the file part's type counts.
    const form = new FormData();
    form.append("file", new File([html], "page.html", { type: "text/html" }));
    await expectError(await call("/upload", { token: a.token, rawBody: form }), 415, "unsupported_media_type");
    const lying = new FormData();
    lying.append("file", new File([html], "cat.png", { type: "image/png" }));
    await expectError(await call("/upload", { token: a.token, rawBody: lying }), 415, "unsupported_media_type");
    expect(await mediaRows(a.user.id)).toBe(0);
    expect(await objectCount()).toBe(objects);
  });

  it("answers 413 over a limit: by content-length before reading, and while streaming without it", async () => {
    const a = await register();
    const objects = await objectCount();
    const big = bytes(FIXTURES["image/png"]!.head, 64 * 1024 + 1);
    await expectError(
      await call("/upload", { token: a.token, rawBody: big, headers: { "content-type": "image/png", "content-length": String(big.length) } }),
      413,
      "payload_too_large",
    );
    await expectError(await call("/upload", { token: a.token, rawBody: streamOf(big, 4096), headers: { "content-type": "image/png" } }), 413, "payload_too_large");
    const form = new FormData();
    form.append("file", new File([big], "big.png", { type: "image/png" }));
    await expectError(await call("/upload", { token: a.token, rawBody: form }), 413, "payload_too_large");
    // Exactly at the limit is fine, streamed or not.
    await uploadRaw(a, "image/png", big.subarray(0, 64 * 1024));
    await json("/upload", { token: a.token, rawBody: streamOf(big.subarray(0, 64 * 1024), 1000), headers: { "content-type": "image/png" } }, 201);
    expect(await mediaRows(a.user.id)).toBe(2);
    expect(await objectCount()).toBe(objects + 2);
  });

  it("rejects empty files, bad queries and missing auth", async () => {
    const a = await register();
    await expectError(await call("/upload", { token: a.token, rawBody: new Uint8Array(0), headers: { "content-type": "image/png" } }), 400, "bad_request");
    await expectError(await call("/upload?width=-1", { token: a.token, rawBody: bytes(FIXTURES["image/png"]!.head), headers: { "content-type": "image/png" } }), 400, "bad_request");
    await expectError(await call("/upload?colour=red", { token: a.token, rawBody: bytes(FIXTURES["image/png"]!.head), headers: { "content-type": "image/png" } }), 400, "bad_request");
    await expectError(await call("/upload", { rawBody: bytes(FIXTURES["image/png"]!.head), headers: { "content-type": "image/png" } }), 401, "unauthorized");
    expect(await mediaRows(a.user.id)).toBe(0);
  });

  it("streams a 6 MiB form upload of unknown length through R2 multipart, byte-exact", async () => {
    const a = await register();
    const data = bytes([0xde, 0xad], 6 * MiB + 123);
    const form = new FormData();
    form.append("width", "10");
    form.append("file", new File([data], "secret.bin", { type: "application/octet-stream" }));
    form.append("height", "20");
    const { media } = await json<{ media: MediaInfo }>("/upload", { token: a.token, rawBody: form }, 201);
    expect(media).toMatchObject({ contentType: "application/octet-stream", size: data.length, name: "secret.bin", width: 10, height: 20 });
    const res = await download(media.url);
    expect(await sha256(await res.arrayBuffer())).toBe(await sha256(data));
  });
});

describe("signed URLs", () => {
  let a: Session;
  let media: MediaInfo;
  const data = bytes(FIXTURES["image/png"]!.head, 1000);

  it("serves 200, ranges with 206, 416 when unsatisfiable, and 304 for a known ETag", async () => {
    a = await register();
    ({ media } = await uploadRaw(a, "image/png", data, "?name=p.png"));
    const full = await download(media.url);
    expect(full.status).toBe(200);
    expect(full.headers.get("content-length")).toBe("1000");
    const etag = full.headers.get("etag");
    expect(etag).toMatch(/^"/);
    await full.arrayBuffer();

    const part = await download(media.url, { range: "bytes=10-19" });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe("bytes 10-19/1000");
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(data.subarray(10, 20));
    const tail = await download(media.url, { range: "bytes=-5" });
    expect(tail.status).toBe(206);
    expect(tail.headers.get("content-range")).toBe("bytes 995-999/1000");
    expect(new Uint8Array(await tail.arrayBuffer())).toEqual(data.subarray(995));
    const open = await download(media.url, { range: "bytes=990-" });
    expect(open.status).toBe(206);
    expect((await open.arrayBuffer()).byteLength).toBe(10);
    const clipped = await download(media.url, { range: "bytes=998-5000" });
    expect(clipped.headers.get("content-range")).toBe("bytes 998-999/1000");
    await clipped.arrayBuffer();

    for (const range of ["bytes=1000-", "bytes=5000-6000", "bytes=-0"]) {
      const res = await download(media.url, { range });
      expect(res.status, range).toBe(416);
      expect(res.headers.get("content-range")).toBe("bytes */1000");
      await res.arrayBuffer();
    }
    // Malformed or multiple ranges are ignored: the whole file.
    const many = await download(media.url, { range: "bytes=0-1,5-6" });
    expect(many.status).toBe(200);
    await many.arrayBuffer();

    const cached = await download(media.url, { "if-none-match": etag! });
    expect(cached.status).toBe(304);
    expect(cached.headers.get("etag")).toBe(etag);
    expect(await cached.text()).toBe("");
    const stale = await download(media.url, { "if-none-match": '"other"' });
    expect(stale.status).toBe(200);
    await stale.arrayBuffer();
    // If-Range with another ETag: the range is ignored.
    const changed = await download(media.url, { range: "bytes=0-1", "if-range": '"other"' });
    expect(changed.status).toBe(200);
    await changed.arrayBuffer();
    const head = await exports.default.fetch(new Request(`http://chat.test${pathOf(media.url)}`, { method: "HEAD" }));
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("1000");
    expect(await head.text()).toBe("");
  });

  it("answers 403 for any change to the URL, and once expired", async () => {
    const url = new URL(media.url);
    const sig = url.searchParams.get("sig")!;
    const exp = url.searchParams.get("exp")!;
    const flipped = `${sig[0] === "A" ? "B" : "A"}${sig.slice(1)}`;
    const other = await uploadRaw(a, "image/png", data);
    for (const path of [
      `${url.pathname}?exp=${exp}&sig=${flipped}`,
      `${url.pathname}?exp=${Number(exp) + 1000}&sig=${sig}`,
      `/media/${other.media.id}/content?exp=${exp}&sig=${sig}`,
      `${url.pathname}?exp=${exp}&sig=${sig}&download=1`,
      `${url.pathname}?exp=${exp}`,
      `${url.pathname}?sig=${sig}`,
      `${url.pathname}?exp=soon&sig=${sig}`,
      // The same expiry and MAC spelled otherwise: a leading zero, and a last character that
      // differs only in the two bits base64url drops (43 characters carry 258 bits for 256).
      `${url.pathname}?exp=0${exp}&sig=${sig}`,
      `${url.pathname}?exp=${exp}&sig=${sig.slice(0, -1)}${otherSpelling(sig.at(-1)!)}`,
    ]) {
      await expectError(await call(path), 403, "forbidden");
    }
    const expired = await signMediaUrl("http://chat.test", media.id, Date.now() - 1, "test-only-media-url-secret");
    await expectError(await call(pathOf(expired)), 403, "forbidden");
    // Signed with another secret.
    const forged = await signMediaUrl("http://chat.test", media.id, Date.now() + 60_000, "not-the-secret");
    await expectError(await call(pathOf(forged)), 403, "forbidden");
    // A validly signed URL beyond 7 days is refused too.
    const tooLong = await signMediaUrl("http://chat.test", media.id, Date.now() + 8 * 86_400_000, "test-only-media-url-secret");
    await expectError(await call(pathOf(tooLong)), 403, "forbidden");
    const fine = await signMediaUrl("http://chat.test", media.id, Date.now() + 60_000, "test-only-media-url-secret");
    const res = await call(pathOf(fine));
    expect(res.status).toBe(200);
    expect(Number(/max-age=(\d+)/.exec(res.headers.get("cache-control") ?? "")?.[1])).toBeLessThanOrEqual(60);
    await res.arrayBuffer();
  });

  it("redirects the uploader to a fresh URL, with a lifetime of up to 7 days; strangers get 404", async () => {
    const res = await getMedia(media.id, a.token);
    expect(res.status).toBe(302);
    const location = res.headers.get("location")!;
    // The URL names PUBLIC_ORIGIN (vitest.config.ts), never the Host the request came with.
    const forged = await exports.default.fetch(
      new Request(`http://evil.example/media/${media.id}`, { headers: { authorization: `Bearer ${a.token}`, host: "evil.example" }, redirect: "manual" }),
    );
    expect(new URL(forged.headers.get("location")!).origin).toBe("http://chat.test");
    expect(new URL(location).origin).toBe("http://chat.test");
    expect(new URL(location).pathname).toBe(`/media/${media.id}/content`);
    const bytesRes = await call(pathOf(location));
    expect(bytesRes.status).toBe(200);
    await bytesRes.arrayBuffer();

    const week = await json<{ media: MediaInfo }>(`/media/${media.id}/info?ttl=604800`, { token: a.token });
    expect(week.media.urlExpiresAt - Date.now()).toBeGreaterThan(604_700_000);
    expect(week.media.urlExpiresAt - Date.now()).toBeLessThanOrEqual(604_800_000);
    await expectError(await getMedia(media.id, a.token, "?ttl=604801"), 400, "bad_request");
    await expectError(await getMedia(media.id, a.token, "?ttl=0"), 400, "bad_request");

    const stranger = await register();
    await expectError(await getMedia(media.id, stranger.token), 404, "not_found");
    await expectError(await call(`/media/${media.id}/info`, { token: stranger.token }), 404, "not_found");
    await expectError(await getMedia("nope", stranger.token), 404, "not_found");
    await expectError(await getMedia(media.id, null), 401, "unauthorized");
  });
});

describe("resumable multipart upload", () => {
  it("uploads 12 MiB in parts, out of order and resumed, and downloads it byte-exact", async () => {
    const a = await register();
    const data = bytes(FIXTURES["video/mp4"]!.head, 12 * MiB + 12_345);
    const init = await json<MultipartUpload>("/upload/multipart", { token: a.token, body: { contentType: "video/mp4", size: data.length, name: "big.mp4" } }, 201);
    expect(init).toMatchObject({ partSize: 5 * MiB, partCount: 3, size: data.length, parts: [] });
    expect(init.uploadId).toBeTruthy();
    const part = (n: number) => data.subarray((n - 1) * init.partSize, Math.min(n * init.partSize, data.length));
    const put = (n: number, body: Uint8Array, s: Session = a) =>
      call(`/upload/multipart/${init.mediaId}/parts/${n}`, { method: "PUT", token: s.token, rawBody: body, headers: { "content-length": String(body.length) } });

    // Wrong sizes, numbers and first bytes change nothing.
    await expectError(await put(2, part(2).subarray(1)), 400, "bad_request");
    await expectError(await put(3, data.subarray(0, part(3).length + 1)), 413, "payload_too_large");
    await expectError(await put(4, part(3)), 400, "bad_request");
    await expectError(await put(0, part(1)), 400, "bad_request");
    await expectError(await put(1, bytes(FIXTURES["image/png"]!.head, 5 * MiB)), 415, "unsupported_media_type");
    // Someone else's upload does not exist for them.
    await expectError(await put(1, part(1), await register()), 404, "not_found");

    const p2 = await put(2, part(2));
    expect(p2.status).toBe(200);
    expect(((await p2.json()) as { etag: string }).etag).toBeTruthy();
    // Streamed without a length, a part still has to be exactly its size.
    const streamed = await call(`/upload/multipart/${init.mediaId}/parts/1`, { method: "PUT", token: a.token, rawBody: streamOf(part(1), 256 * 1024) });
    expect(streamed.status).toBe(200);
    await streamed.arrayBuffer();

    // Completing early names what is missing; resuming lists what arrived.
    await expectError(await call(`/upload/multipart/${init.mediaId}/complete`, { method: "POST", token: a.token }), 400, "bad_request");
    const state = await json<MultipartUpload>(`/upload/multipart/${init.mediaId}`, { token: a.token });
    expect(state.parts.map((p) => [p.partNumber, p.size])).toEqual([
      [1, 5 * MiB],
      [2, 5 * MiB],
    ]);
    expect((await put(3, part(3))).status).toBe(200);

    const done = await json<{ media: MediaInfo }>(`/upload/multipart/${init.mediaId}/complete`, { method: "POST", token: a.token }, 201);
    expect(done.media).toMatchObject({ id: init.mediaId, contentType: "video/mp4", size: data.length, name: "big.mp4" });
    const again = await json<{ media: MediaInfo }>(`/upload/multipart/${init.mediaId}/complete`, { method: "POST", token: a.token }, 200);
    expect(again.media.id).toBe(init.mediaId);
    const res = await download(done.media.url);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-length")).toBe(String(data.length));
    expect(await sha256(await res.arrayBuffer())).toBe(await sha256(data));
    const range = await download(done.media.url, { range: `bytes=${5 * MiB - 2}-${5 * MiB + 1}` });
    expect(new Uint8Array(await range.arrayBuffer())).toEqual(data.subarray(5 * MiB - 2, 5 * MiB + 2));
    await expectError(await put(1, part(1)), 409, "conflict");
  });

  it("refuses types and sizes it would not store", async () => {
    const a = await register();
    for (const body of [
      { contentType: "text/html", size: 100, name: "x.html" },
      { contentType: "image/svg+xml", size: 100, name: "x.svg" },
    ]) {
      await expectError(await call("/upload/multipart", { token: a.token, body }), 415, "unsupported_media_type");
    }
    await expectError(await call("/upload/multipart", { token: a.token, body: { contentType: "video/mp4", size: 32 * MiB + 1, name: "x" } }), 413, "payload_too_large");
    // A lone surrogate in the name was a 500 (encodeURIComponent threw in content-disposition).
    await expectError(await call("/upload/multipart", { token: a.token, body: { contentType: "video/mp4", size: 1000, name: "x\ud800y" } }), 400, "bad_request");
    // Images keep their own limit even by multipart.
    await expectError(await call("/upload/multipart", { token: a.token, body: { contentType: "image/png", size: 64 * 1024 + 1, name: "x" } }), 413, "payload_too_large");
    for (const body of [
      { contentType: "video/mp4", size: 0, name: "x" },
      { contentType: "video/mp4", name: "x" },
      { contentType: "video/mp4", size: 10, name: "x", extra: 1 },
    ]) {
      await expectError(await call("/upload/multipart", { token: a.token, body }), 400, "bad_request");
    }
    expect(await mediaRows(a.user.id)).toBe(0);
  });

  it("keeps each user within the stored and pending quotas", async () => {
    const a = await register();
    const init = (size: number) => call("/upload/multipart", { token: a.token, body: { contentType: "video/mp4", size, name: "v.mp4" } });
    // Pending reservations: 48 MiB at once (vitest.config.ts).
    const first = (await init(32 * MiB).then((r) => r.json())) as MultipartUpload;
    await expectError(await init(17 * MiB), 413, "payload_too_large");
    expect((await init(16 * MiB)).status).toBe(201);
    // Aborting one frees its reservation.
    expect((await call(`/upload/multipart/${first.mediaId}`, { method: "DELETE", token: a.token })).status).toBe(204);
    expect((await init(32 * MiB)).status).toBe(201);
    // Stored bytes: 100 MiB in all, pending reservations included (48 MiB now): a stored item of
    // 52 MiB fills it, and every upload after is refused before a byte is stored.
    await d1Of(a.user.id).prepare("INSERT INTO media (id, uploader_id, content_type, size, name, r2_key, status, created_at) VALUES (?, ?, 'video/mp4', ?, 'big.mp4', 'media/none', 'complete', ?)")
      .bind(unique("fake"), a.user.id, 52 * MiB, Date.now())
      .run();
    const before = await mediaRows(a.user.id);
    await expectError(await call("/upload?name=x.png", { token: a.token, rawBody: bytes(FIXTURES["image/png"]!.head), headers: { "content-type": "image/png" } }), 413, "payload_too_large");
    await expectError(await init(1), 413, "payload_too_large");
    expect(await mediaRows(a.user.id)).toBe(before);
  });

  it("sweeps uploads left pending past MEDIA_PENDING_MAX_AGE_HOURS from the cron trigger", async () => {
    const a = await register();
    const init = () => json<MultipartUpload>("/upload/multipart", { token: a.token, body: { contentType: "video/mp4", size: 6 * MiB, name: "v.mp4" } }, 201);
    const [old, fresh] = [await init(), await init()];
    expect((await call(`/upload/multipart/${old.mediaId}/parts/1`, { method: "PUT", token: a.token, rawBody: bytes(FIXTURES["video/mp4"]!.head, 5 * MiB), headers: { "content-length": String(5 * MiB) } })).status).toBe(200);
    await d1Of(old.mediaId).prepare("UPDATE media SET created_at = ? WHERE id = ?").bind(Date.now() - 25 * 3_600_000, old.mediaId).run();
    // The Worker's own entrypoint, as the cron trigger calls it (its type lists fetch only).
    await (exports.default as unknown as { scheduled(o: { scheduledTime: Date; cron: string }): Promise<unknown> }).scheduled({ scheduledTime: new Date(), cron: "17 * * * *" });
    const ids = (await d1Of(a.user.id).prepare("SELECT id FROM media WHERE uploader_id = ?").bind(a.user.id).all<{ id: string }>()).results.map((r) => r.id);
    expect(ids).toEqual([fresh.mediaId]);
    const parts = await d1Of(old.mediaId).prepare("SELECT count(*) AS n FROM media_parts WHERE media_id = ?").bind(old.mediaId).first<{ n: number }>();
    expect(parts?.n).toBe(0);
    await expectError(await call(`/upload/multipart/${old.mediaId}`, { token: a.token }), 404, "not_found");
  });

  it("aborts: the upload, its parts and its row are gone", async () => {
    const a = await register();
    const data = bytes(FIXTURES["video/webm"]!.head, 6 * MiB);
    const init = await json<MultipartUpload>("/upload/multipart", { token: a.token, body: { contentType: "video/webm", size: data.length, name: "v.webm" } }, 201);
    const p1 = await call(`/upload/multipart/${init.mediaId}/parts/1`, { method: "PUT", token: a.token, rawBody: data.subarray(0, 5 * MiB) });
    expect(p1.status).toBe(200);
    await p1.arrayBuffer();
    await expectError(await call(`/upload/multipart/${init.mediaId}`, { method: "DELETE", token: (await register()).token }), 404, "not_found");
    expect((await call(`/upload/multipart/${init.mediaId}`, { method: "DELETE", token: a.token })).status).toBe(204);
    await expectError(await call(`/upload/multipart/${init.mediaId}`, { token: a.token }), 404, "not_found");
    await expectError(await call(`/upload/multipart/${init.mediaId}/parts/2`, { method: "PUT", token: a.token, rawBody: data.subarray(5 * MiB) }), 404, "not_found");
    await expectError(await call(`/upload/multipart/${init.mediaId}/complete`, { method: "POST", token: a.token }), 404, "not_found");
    expect(await mediaRows(a.user.id)).toBe(0);
    const parts = await d1Of(init.mediaId).prepare("SELECT count(*) AS n FROM media_parts WHERE media_id = ?").bind(init.mediaId).first<{ n: number }>();
    expect(parts?.n).toBe(0);
    expect(await env.MEDIA.head(`media/${init.mediaId}`)).toBeNull();
  });
});

describe("media messages", () => {
  it("sends media by REST and by socket; the other member sees it live and can fetch it", async () => {
    const [a, b, stranger] = [await register(), await register(), await register()];
    const conv = await direct(a, b);
    const photo = await uploadRaw(a, "image/webp", bytes(FIXTURES["image/webp"]!.head), "?name=cat.webp&width=4&height=3");
    const voice = await uploadRaw(a, "audio/ogg", bytes(FIXTURES["audio/ogg"]!.head), "?name=voice.ogg&durationMs=2500");
    // Before it is shared, b cannot see it.
    await expectError(await getMedia(photo.media.id, b.token), 404, "not_found");

    const bSocket = await openConversation(b, conv.id);
    const sent = await json<{ message: Message }>(
      "/send",
      { token: a.token, body: { conversationId: conv.id, clientMsgId: "photo", body: "look", mediaIds: [photo.media.id] } },
      201,
    );
    expect(sent.message).toMatchObject({ kind: "media", body: "look", media: [{ id: photo.media.id, contentType: "image/webp", size: 512, name: "cat.webp", width: 4, height: 3 }] });
    const live = await bSocket.next("message", (f) => f.message?.clientMsgId === "photo");
    expect(live.message?.media).toEqual(sent.message.media);
    const redirect = await getMedia(photo.media.id, b.token);
    expect(redirect.status).toBe(302);
    const fetched = await call(pathOf(redirect.headers.get("location")!));
    expect(await sha256(await fetched.arrayBuffer())).toBe(await sha256(bytes(FIXTURES["image/webp"]!.head)));
    await expectError(await getMedia(photo.media.id, stranger.token), 404, "not_found");

    // Over a's socket: an ack for a, a message for b.
    const aSocket = await openConversation(a, conv.id);
    aSocket.send({ type: "send", clientMsgId: "voice", mediaIds: [voice.media.id] });
    const ack = await aSocket.next("ack", (f) => f.clientMsgId === "voice");
    expect(ack.message).toMatchObject({ kind: "media", body: null, media: [{ id: voice.media.id, contentType: "audio/ogg", durationMs: 2500 }] });
    const heard = await bSocket.next("message", (f) => f.message?.clientMsgId === "voice");
    expect(heard.message?.seq).toBe(ack.message?.seq);
    expect((await getMedia(voice.media.id, b.token)).status).toBe(302);
    // Frames after a media send keep their order.
    aSocket.send({ type: "send", clientMsgId: "m1", mediaIds: [photo.media.id] });
    aSocket.send({ type: "send", clientMsgId: "t2", body: "after" });
    const m1 = await aSocket.next("ack", (f) => f.clientMsgId === "m1");
    const t2 = await aSocket.next("ack", (f) => f.clientMsgId === "t2");
    expect(t2.message!.seq).toBe(m1.message!.seq + 1);

    // Only the uploader may send an item; unknown and foreign ids are alike, and nothing is stored.
    const before = (await json<{ conversation: { lastSeq: number } }>(`/conversations/${conv.id}`, { token: a.token })).conversation.lastSeq;
    await expectError(await call("/send", { token: b.token, body: { conversationId: conv.id, clientMsgId: "steal", mediaIds: [photo.media.id] } }), 400, "bad_request");
    await expectError(await call("/send", { token: a.token, body: { conversationId: conv.id, clientMsgId: "twice", mediaIds: [photo.media.id, photo.media.id] } }), 400, "bad_request");
    bSocket.send({ type: "send", clientMsgId: "steal2", mediaIds: [voice.media.id] });
    const error = await bSocket.next("error", (f) => f.ref === "steal2");
    expect(error.code).toBe("bad_request");
    // A stranger sending their own media into a conversation they are not in: 404, and no share is left.
    const theirs = await uploadRaw(stranger, "image/gif", bytes(FIXTURES["image/gif"]!.head));
    await expectError(await call("/send", { token: stranger.token, body: { conversationId: conv.id, clientMsgId: "x", mediaIds: [theirs.media.id] } }), 404, "not_found");
    await expectError(await getMedia(theirs.media.id, a.token), 404, "not_found");
    const after = (await json<{ conversation: { lastSeq: number } }>(`/conversations/${conv.id}`, { token: a.token })).conversation.lastSeq;
    expect(after).toBe(before);
    aSocket.close();
    bSocket.close();
  });

  it("shows a member added later only what was sent since they joined, and a former member what was sent while they were in", async () => {
    const [a, b, c] = [await register(), await register(), await register()];
    const g = await group(a, [b], "spans");
    const png = () => uploadRaw(a, "image/png", bytes(FIXTURES["image/png"]!.head));
    const sendPhoto = async (id: string) =>
      json("/send", { token: a.token, body: { conversationId: g.id, clientMsgId: unique("p"), mediaIds: [id] } }, 201);
    // Shares and joinings are compared by time: a tick apart, so that none falls in the same millisecond.
    const tick = () => new Promise((r) => setTimeout(r, 5));
    const before = await png();
    await sendPhoto(before.media.id);
    await tick();
    await json(`/conversations/${g.id}/members`, { token: a.token, body: { userIds: [c.user.id] } });
    await tick();
    const during = await png();
    await sendPhoto(during.media.id);
    await tick();
    expect((await call(`/conversations/${g.id}/members/${c.user.id}`, { method: "DELETE", token: a.token })).status).toBe(204);
    await tick();
    const after = await png();
    await sendPhoto(after.media.id);
    await expectError(await getMedia(before.media.id, c.token), 404, "not_found");
    expect((await getMedia(during.media.id, c.token)).status).toBe(302);
    await expectError(await getMedia(after.media.id, c.token), 404, "not_found");
    for (const item of [before, during, after]) expect((await getMedia(item.media.id, b.token)).status).toBe(302);
  });

  it("uploads and sends in one call, idempotently, sharing the thumbnail too", async () => {
    const [a, b, c] = [await register(), await register(), await register()];
    const g = await group(a, [b], "photos");
    const thumb = await uploadRaw(a, "image/jpeg", bytes(FIXTURES["image/jpeg"]!.head), "?name=t.jpg");
    const bSocket = await openConversation(b, g.id);
    const video = bytes(FIXTURES["video/quicktime"]!.head, 4096);
    const form = () => {
      const f = new FormData();
      f.append("conversationId", g.id);
      f.append("clientMsgId", "upload-1");
      f.append("body", "our trip");
      f.append("file", new File([video], "trip.mov", { type: "video/quicktime" }));
      f.append("durationMs", "3000");
      f.append("thumbnailId", thumb.media.id);
      return f;
    };
    const res = await call("/upload", { token: a.token, rawBody: form() });
    expect(res.status).toBe(201);
    const first = (await res.json()) as { media: MediaInfo; message: Message };
    expect(first.media).toMatchObject({ contentType: "video/quicktime", size: 4096, name: "trip.mov", durationMs: 3000, thumbnailId: thumb.media.id });
    expect(first.message).toMatchObject({ kind: "media", body: "our trip", clientMsgId: "upload-1" });
    expect(first.message.media).toEqual([expect.objectContaining({ id: first.media.id, thumbnailId: thumb.media.id })]);
    const live = await bSocket.next("message", (f) => f.message?.clientMsgId === "upload-1");
    expect(live.message?.id).toBe(first.message.id);
    expect((await getMedia(first.media.id, b.token)).status).toBe(302);
    expect((await getMedia(thumb.media.id, b.token)).status).toBe(302);
    await expectError(await getMedia(first.media.id, c.token), 404, "not_found");

    // A retry: the same message, and the second upload is not kept.
    const rows = await mediaRows(a.user.id);
    const retry = await call("/upload", { token: a.token, rawBody: form() });
    expect(retry.status).toBe(200);
    const second = (await retry.json()) as { media: MediaInfo; message: Message };
    expect(second.message).toEqual(first.message);
    expect(second.media.id).toBe(first.media.id);
    expect(await mediaRows(a.user.id)).toBe(rows);

    // A send that fails (not a member, bad fields) keeps nothing.
    const objects = await objectCount();
    const outsider = new FormData();
    outsider.append("conversationId", g.id);
    outsider.append("clientMsgId", "nope");
    outsider.append("file", new File([video], "x.mov", { type: "video/quicktime" }));
    await expectError(await call("/upload", { token: c.token, rawBody: outsider }), 404, "not_found");
    for (const fields of [{ clientMsgId: "lonely" }, { body: "no conversation" }, { conversationId: g.id, clientMsgId: "t", threadRootSeq: "99" }, { colour: "red" }]) {
      const f = new FormData();
      f.append("file", new File([video], "x.mov", { type: "video/quicktime" }));
      for (const [k, v] of Object.entries(fields)) f.append(k, v);
      await expectError(await call("/upload", { token: a.token, rawBody: f }), 400, "bad_request");
    }
    const noFile = new FormData();
    noFile.append("conversationId", g.id);
    noFile.append("clientMsgId", "nofile");
    await expectError(await call("/upload", { token: a.token, rawBody: noFile }), 400, "bad_request");
    expect(await mediaRows(c.user.id)).toBe(0);
    expect(await mediaRows(a.user.id)).toBe(rows);
    expect(await objectCount()).toBe(objects);
    bSocket.close();
  });

  it("sync serves each message as the conversation's history does", async () => {
    // GET /messages?since= pages through the user object's index and has each conversation encode
    // the messages of a page (syncSlice); a conversation's history is encoded by the Worker from the
    // same rows. Every field of every kind must come out the same from both.
    const [a, b] = [await register(), await register()];
    const g = await group(a, [b], "both ways");
    const { conversation: secret } = await json<{ conversation: { id: string } }>("/group/create", { token: a.token, body: { title: "secret", memberIds: [b.user.id], e2ee: true } }, 201);
    const photo = await uploadRaw(a, "image/png", bytes(FIXTURES["image/png"]!.head), "?name=p.png&width=40&height=30");
    const voice = await uploadRaw(a, "audio/ogg", bytes(FIXTURES["audio/ogg"]!.head), "?name=v.ogg&durationMs=1500");
    const blob = await uploadRaw(a, "application/octet-stream", filler(100, 3), `?name=${unique("blob")}`);
    const send = async (conversationId: string, fields: Record<string, unknown>) =>
      (await json<{ message: Message }>("/send", { token: a.token, body: { conversationId, clientMsgId: unique("m"), ...fields } }, 201)).message;
    const root = await send(g.id, { body: `quotes " \\ and\nlines\t, \u2028, \u0001, emoji \u{1F600}, <tag> & é` });
    await send(g.id, { body: "look", mediaIds: [photo.media.id] });
    await send(g.id, { mediaIds: [voice.media.id] });
    await send(g.id, { body: "first reply", threadRootSeq: root.seq });
    await send(g.id, { body: "second reply", threadRootSeq: root.seq });
    await send(secret.id, { ciphertext: await ciphertextFor(secret.id), mediaIds: [blob.media.id] });
    for (const id of [g.id, secret.id]) {
      await waitFor(
        async () => (await conversationStub(env, id).pendingFanout()) === 0 && (await conversationStub(env, id).pendingOutbox()) === 0,
        "every message told to the members' objects and in D1",
      );
    }

    const synced: Message[] = [];
    let cursor = "0";
    for (let more = true; more; ) {
      const res = await call(`/messages?since=${cursor}&limit=3`, { token: b.token });
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      const page = (await res.json()) as { messages: Message[]; cursor: string; hasMore: boolean };
      synced.push(...page.messages);
      cursor = page.cursor;
      more = page.hasMore;
    }
    const history: Message[] = [];
    for (const id of [g.id, secret.id]) {
      history.push(...(await json<{ messages: Message[] }>(`/conversations/${id}/messages?limit=100`, { token: b.token })).messages);
    }
    // Two "created" messages and six sends, each kind among them, and the root's thread summary.
    expect(history).toHaveLength(8);
    expect(new Set(history.map((m) => m.kind))).toEqual(new Set(["system", "text", "media", "encrypted"]));
    expect(history.find((m) => m.id === root.id)?.thread).toMatchObject({ replyCount: 2 });
    const byId = (list: Message[]) => Object.fromEntries(list.map((m) => [m.id, m]));
    expect(byId(synced)).toStrictEqual(byId(history));
    for (const m of synced) expect(Message.strict().safeParse(m).error).toBeUndefined();
    // D1's archive, which search answers from, has SQLite encode them (MESSAGE_JSON_SQL): the same again.
    const archived: Message[] = [];
    for (const id of [g.id, secret.id]) {
      const { results } = await d1Of(id).prepare(`SELECT ${MESSAGE_JSON_SQL} AS json FROM messages WHERE conversation_id = ?`).bind(id).all<{ json: string }>();
      archived.push(...results.map((r) => JSON.parse(r.json) as Message));
    }
    expect(byId(archived)).toStrictEqual(byId(history));
  });

  it("keeps kind encrypted in an E2EE conversation", async () => {
    const [a, b] = [await register(), await register()];
    const { conversation } = await json<{ conversation: { id: string } }>("/group/create", { token: a.token, body: { title: "secret", memberIds: [b.user.id], e2ee: true } }, 201);
    const blob = await uploadRaw(a, "application/octet-stream", filler(300, 7), `?name=${unique("blob")}`);
    const { message } = await json<{ message: Message }>("/send", { token: a.token, body: { conversationId: conversation.id, clientMsgId: "enc", ciphertext: await ciphertextFor(conversation.id), mediaIds: [blob.media.id] } }, 201);
    expect(message.kind).toBe("encrypted");
    expect(message.body).toBeNull();
    expect(message.media.map((m) => m.id)).toEqual([blob.media.id]);
    expect((await getMedia(blob.media.id, b.token)).status).toBe(302);
  });
});
