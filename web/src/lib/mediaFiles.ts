// Attachments: upload with progress (XMLHttpRequest, because fetch has no upload progress),
// client-made thumbnails and dimensions, authorised media fetches, and voice notes.
import type { MediaRef } from "../../../protocol";
import { ApiRequestError, NetworkError, Schemas, toApiError, type Api } from "./api";
import type { FileSeal } from "../e2ee/content";
import { openFile } from "../e2ee/files";
import type { LocalStore } from "./idb";

export interface UploadResult {
  id: string;
  contentType: string;
  size: number;
  name: string;
}

export interface UploadHandle {
  done: Promise<UploadResult>;
  abort: () => void;
}

/** Extra facts the server cannot compute (it does not transcode): sent as form fields. */
export interface MediaFacts {
  width?: number;
  height?: number;
  durationMs?: number;
  thumbnailId?: string;
}

/** POST /upload as multipart form data, reporting progress. */
export function upload(token: string, file: Blob, name: string, facts: MediaFacts, onProgress: (loaded: number, total: number) => void): UploadHandle {
  const xhr = new XMLHttpRequest();
  const done = new Promise<UploadResult>((resolve, reject) => {
    const form = new FormData();
    form.set("file", file, name);
    for (const [k, v] of Object.entries(facts)) if (v !== undefined) form.set(k, String(v));
    xhr.open("POST", "/upload");
    xhr.setRequestHeader("authorization", `Bearer ${token}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new NetworkError("upload failed"));
    xhr.onabort = () => reject(new NetworkError("upload cancelled"));
    xhr.onload = () => {
      const json: unknown = xhr.response;
      if (xhr.status < 200 || xhr.status >= 300) {
        reject(toApiError({ status: xhr.status, headers: { get: (h) => xhr.getResponseHeader(h) } }, json, null));
        return;
      }
      const parsed = Schemas.upload.safeParse(json);
      if (!parsed.success) reject(new ApiRequestError(xhr.status, "bad_response", "unexpected upload answer"));
      else resolve(parsed.data.media);
    };
    xhr.send(form);
  });
  return { done, abort: () => xhr.abort() };
}

/** Whether an upload failed because the server has no media routes yet (issue 4). */
export const uploadsMissing = (err: unknown): boolean =>
  err instanceof ApiRequestError && err.status === 404 && /route/.test(err.message);

const THUMB_MAX = 320;

/** Width, height and a small JPEG of an image or a video's first frame, made in the browser. */
export async function describeVisual(file: File): Promise<{ width: number; height: number; thumbnail: Blob | null; durationMs?: number }> {
  const url = URL.createObjectURL(file);
  try {
    if (file.type.startsWith("image/")) {
      const img = new Image();
      img.src = url;
      await img.decode();
      return { width: img.naturalWidth, height: img.naturalHeight, thumbnail: await thumbnailOf(img, img.naturalWidth, img.naturalHeight) };
    }
    const video = document.createElement("video");
    video.muted = true;
    video.preload = "auto";
    video.src = url;
    await new Promise<void>((resolve, reject) => {
      video.onloadeddata = () => resolve();
      video.onerror = () => reject(new Error("cannot read video"));
      setTimeout(() => reject(new Error("video metadata timeout")), 5000);
    });
    const out = {
      width: video.videoWidth,
      height: video.videoHeight,
      thumbnail: await thumbnailOf(video, video.videoWidth, video.videoHeight),
    };
    return Number.isFinite(video.duration) ? { ...out, durationMs: Math.round(video.duration * 1000) } : out;
  } finally {
    URL.revokeObjectURL(url);
  }
}

async function thumbnailOf(source: CanvasImageSource, width: number, height: number): Promise<Blob | null> {
  if (!width || !height) return null;
  const scale = Math.min(1, THUMB_MAX / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  const ctx = canvas.getContext("2d");
  if (!ctx) return null;
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob((b) => resolve(b), "image/jpeg", 0.7));
}

/**
 * URLs to show media with. `GET /media/:id/info` (bearer token) names a signed URL that works
 * without the token and serves ranges, so an <img> or a <video> streams it directly; the URL is
 * reused until shortly before it expires. A file this device just uploaded is shown from memory.
 * Thumbnails are also kept in the account's local store (the latest THUMBS_KEPT), so the chats
 * the app opens offline show them.
 */
const THUMBS_KEPT = 300;

export class MediaCache {
  private readonly urls = new Map<string, { url: Promise<string>; until: number }>();
  private readonly keeping = new Set<string>();
  /** What this device uploaded in this page's life: kept without a download. */
  private readonly seeded = new Map<string, Blob>();
  /** Keeping runs one at a time: each updates the list of kept ids. */
  private kept: Promise<void> = Promise.resolve();

  constructor(
    private readonly api: Api,
    private readonly localStore: () => LocalStore | null = () => null,
  ) {}

  /** A thumbnail's URL: as `url`, and from the local store when the server cannot be reached. */
  async thumbnail(id: string): Promise<string> {
    const db = this.localStore();
    try {
      const url = await this.url(id);
      if (db && !this.keeping.has(id)) {
        this.keeping.add(id);
        this.kept = this.kept.then(() => this.keep(db, id)).catch(() => void this.keeping.delete(id));
      }
      return url;
    } catch (err) {
      const blob = await db?.get(`thumb:${id}`);
      if (!(blob instanceof Blob)) throw err;
      this.seed(id, blob);
      return this.url(id);
    }
  }

  /** The bytes: from memory when this device uploaded them (a blob: URL is not fetched), else downloaded. */
  async blob(id: string): Promise<Blob> {
    const seeded = this.seeded.get(id);
    if (seeded) return seeded;
    const res = await fetch(await this.url(id));
    if (!res.ok) throw new Error(`media ${res.status}`);
    return res.blob();
  }

  private async keep(db: LocalStore, id: string): Promise<void> {
    if ((await db.get(`thumb:${id}`)) instanceof Blob) return;
    await db.set(`thumb:${id}`, await this.blob(id));
    const kept = await db.get("thumbs");
    const ids = [...(Array.isArray(kept) ? kept.filter((k): k is string => typeof k === "string" && k !== id) : []), id];
    for (const old of ids.splice(0, Math.max(0, ids.length - THUMBS_KEPT))) await db.remove(`thumb:${old}`);
    await db.set("thumbs", ids);
  }

  url(id: string): Promise<string> {
    const hit = this.urls.get(id);
    if (hit && hit.until > Date.now()) return hit.url;
    const url = this.api.call("GET", `/media/${encodeURIComponent(id)}/info`, Schemas.mediaInfo).then(({ media }) => {
      const entry = this.urls.get(id);
      // Renew a minute early, so an element never gets a URL that dies while it loads.
      if (entry) entry.until = media.urlExpiresAt - 60_000;
      return media.url;
    });
    this.urls.set(id, { url, until: Number.MAX_SAFE_INTEGER });
    url.catch(() => this.urls.delete(id));
    return url;
  }

  /**
   * A sealed attachment of an E2EE conversation, opened on this device: the encrypted blob is
   * downloaded, checked against its hash and decrypted into a blob: URL (kept for the page's life).
   * One this device uploaded is shown from memory.
   */
  sealedUrl(source: SealedSource): Promise<string> {
    let url = this.opened.get(source.id);
    if (!url) {
      url = this.sealedBlob(source).then((blob) => URL.createObjectURL(blob));
      this.opened.set(source.id, url);
      url.catch(() => this.opened.delete(source.id));
    }
    return url;
  }

  async sealedBlob(source: SealedSource): Promise<Blob> {
    const seeded = this.seeded.get(source.id);
    if (seeded) return seeded;
    const res = await fetch(await this.url(source.id));
    if (!res.ok) throw new Error(`media ${res.status}`);
    const plain = await openFile(new Uint8Array(await res.arrayBuffer()), source.seal);
    return new Blob([plain], { type: source.contentType });
  }

  private readonly opened = new Map<string, Promise<string>>();

  seed(id: string, blob: Blob): void {
    this.seeded.set(id, blob);
    if (!this.urls.has(id)) this.urls.set(id, { url: Promise.resolve(URL.createObjectURL(blob)), until: Number.MAX_SAFE_INTEGER });
  }
}

/** Where a sealed file is and what opens it. */
export interface SealedSource {
  id: string;
  seal: FileSeal;
  contentType: string;
}

export const isImage = (m: Pick<MediaRef, "contentType">) => m.contentType.startsWith("image/");
export const isVideo = (m: Pick<MediaRef, "contentType">) => m.contentType.startsWith("video/");
export const isAudio = (m: Pick<MediaRef, "contentType">) => m.contentType.startsWith("audio/");

// --- voice notes ----------------------------------------------------------------------------------

export interface Recording {
  stop: () => Promise<{ blob: Blob; durationMs: number; type: string }>;
  cancel: () => void;
  startedAt: number;
}

/** Starts recording from the microphone; the browser asks for permission the first time. */
export async function recordVoice(): Promise<Recording> {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"].find((t) => MediaRecorder.isTypeSupported(t)) ?? "";
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
  const chunks: Blob[] = [];
  recorder.ondataavailable = (e) => {
    if (e.data.size > 0) chunks.push(e.data);
  };
  const startedAt = performance.now();
  recorder.start(250);
  const release = () => stream.getTracks().forEach((t) => t.stop());
  return {
    startedAt,
    cancel: () => {
      recorder.onstop = null;
      if (recorder.state !== "inactive") recorder.stop();
      release();
    },
    stop: () =>
      new Promise((resolve) => {
        recorder.onstop = () => {
          release();
          const baseType = (recorder.mimeType || type || "audio/webm").split(";")[0]!;
          resolve({ blob: new Blob(chunks, { type: baseType }), durationMs: Math.round(performance.now() - startedAt), type: baseType });
        };
        recorder.stop();
      }),
  };
}
