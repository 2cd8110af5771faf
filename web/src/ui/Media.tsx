import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import type { MediaRef } from "../../../protocol";
import type { AppStore, Upload } from "../app/appStore";
import { bytes, duration, peaks } from "../state/format";
import { isSealed, type FileSeal, type SealedMedia } from "../e2ee/content";
import { sealFile } from "../e2ee/files";
import { describeVisual, isAudio, isImage, isVideo, upload, uploadsMissing, type MediaCache, type MediaFacts, type SealedSource, type UploadHandle } from "../lib/mediaFiles";
import { useServices } from "./context";
import { useFocusHandoff } from "./focus";
import { Icon } from "./icons";

/**
 * Uploads files one by one with a progress card each, then sends each as a media message
 * through the outbox (so the send itself is exactly-once like any text).
 */
export async function startUploads(store: AppStore, cache: MediaCache, conversationId: string, files: File[], threadRootSeq: number | null, caption = ""): Promise<void> {
  for (const [i, file] of files.entries()) {
    await uploadOne(store, cache, conversationId, file, file.name || "file", {}, threadRootSeq, i === 0 ? caption : "");
  }
}

/**
 * Uploads one file. In an E2EE conversation it is sealed first (a fresh key per file) and goes up
 * as application/octet-stream under a neutral name, with no facts but its thumbnail's id (which
 * lets the members fetch the thumbnail's blob too); its real name, type, size and dimensions
 * travel inside the MLS message with the seal. Returns the seal, if any.
 */
async function sendUp(token: string, file: Blob, name: string, facts: MediaFacts, onProgress: (loaded: number) => void, sealed: boolean, started: (h: UploadHandle) => void) {
  if (!sealed) {
    const handle = upload(token, file, name, facts, onProgress);
    started(handle);
    return { media: await handle.done, seal: undefined };
  }
  const { blob, seal } = await sealFile(new Uint8Array(await file.arrayBuffer()));
  const handle = upload(token, new Blob([blob], { type: "application/octet-stream" }), "encrypted", facts.thumbnailId ? { thumbnailId: facts.thumbnailId } : {}, onProgress);
  started(handle);
  return { media: await handle.done, seal: seal as FileSeal | undefined };
}

export async function uploadOne(store: AppStore, cache: MediaCache, conversationId: string, file: Blob, name: string, known: MediaFacts, threadRootSeq: number | null, caption: string): Promise<void> {
  const token = store.state.session?.token;
  if (!token) return;
  // A reply chosen before the file goes with it, taken now: the composer may quote another meanwhile.
  const reply = store.takeReply(conversationId, threadRootSeq);
  const sealed = store.state.conversations.get(conversationId)?.e2ee === true;
  const visual = file.type.startsWith("image/") || file.type.startsWith("video/");
  const id = crypto.randomUUID();
  let handle: { abort: () => void } = { abort: () => undefined };
  store.addUpload({
    id,
    conversationId,
    threadRootSeq,
    name,
    size: file.size,
    contentType: file.type || "application/octet-stream",
    loaded: 0,
    previewUrl: visual ? URL.createObjectURL(file) : null,
    status: "uploading",
    error: null,
    createdAt: Date.now(),
    abort: () => handle.abort(),
  });
  try {
    const facts: MediaFacts = { ...known };
    let thumbnailSeal: FileSeal | undefined;
    if (visual && file instanceof File) {
      const d = await describeVisual(file).catch(() => null);
      if (d) {
        facts.width = d.width;
        facts.height = d.height;
        if (d.durationMs !== undefined) facts.durationMs = d.durationMs;
        if (d.thumbnail) {
          const t = await sendUp(token, d.thumbnail, `thumb-${name}.jpg`, {}, () => undefined, sealed, (h) => (handle = h));
          facts.thumbnailId = t.media.id;
          thumbnailSeal = t.seal;
          cache.seed(t.media.id, d.thumbnail);
        }
      }
    }
    const main = await sendUp(token, file, name, facts, (loaded) => store.updateUpload(id, { loaded }), sealed, (h) => (handle = h));
    const media = main.media;
    cache.seed(media.id, file);
    const ref: MediaRef | SealedMedia = main.seal
      ? { id: media.id, contentType: file.type || "application/octet-stream", size: file.size, name, seal: main.seal, ...(thumbnailSeal ? { thumbnailSeal } : {}) }
      : { id: media.id, contentType: media.contentType, size: media.size, name: media.name };
    for (const k of ["width", "height", "durationMs"] as const) if (facts[k] !== undefined) ref[k] = facts[k];
    if (facts.thumbnailId !== undefined) ref.thumbnailId = facts.thumbnailId;
    await store.sendMedia(conversationId, [ref], caption, threadRootSeq, reply);
    store.removeUpload(id);
  } catch (err) {
    if (uploadsMissing(err)) {
      store.removeUpload(id);
      store.disableUploads();
      return;
    }
    store.updateUpload(id, { status: "failed", error: err instanceof Error ? err.message : "upload failed" });
  }
}

export function UploadCard({ upload: u }: { upload: Upload }) {
  const { store } = useServices();
  const pct = u.size > 0 ? Math.min(100, Math.round((u.loaded / u.size) * 100)) : 0;
  return (
    <div class="bubble upload-card" aria-label={`Uploading ${u.name}`}>
      {u.previewUrl && u.contentType.startsWith("image/") ? <img class="upload-preview" src={u.previewUrl} alt="" /> : null}
      {u.previewUrl && u.contentType.startsWith("video/") ? <video class="upload-preview" src={u.previewUrl} muted /> : null}
      <div class="file-line">
        <Icon name="file" />
        <span class="file-name">{u.name}</span>
        <span class="muted">{bytes(u.size)}</span>
      </div>
      {u.status === "uploading" ? (
        <>
          <progress max={100} value={pct} aria-label={`Upload progress for ${u.name}`} />
          <div class="upload-actions">
            <span class="muted">{pct}%</span>
            <button class="link-btn" type="button" onClick={() => { u.abort(); store.removeUpload(u.id); }}>Cancel</button>
          </div>
        </>
      ) : (
        <div class="upload-actions" role="alert">
          <span>Upload failed{u.error ? `: ${u.error}` : ""}</span>
          <button class="link-btn" type="button" onClick={() => store.removeUpload(u.id)}>Dismiss</button>
        </div>
      )}
    </div>
  );
}

/** A file to show: its id and, for an E2EE attachment, what opens it. */
type Source = { id: string; sealed?: SealedSource };

/** The file itself. */
function mainOf(m: MediaRef): Source {
  return isSealed(m) ? { id: m.id, sealed: { id: m.id, seal: m.seal, contentType: m.contentType } } : { id: m.id };
}

/** Its thumbnail (a JPEG made on the sender's device), if it has one. */
function thumbOf(m: MediaRef): Source | undefined {
  if (m.thumbnailId === undefined) return undefined;
  if (!isSealed(m)) return { id: m.thumbnailId };
  return m.thumbnailSeal ? { id: m.thumbnailId, sealed: { id: m.thumbnailId, seal: m.thumbnailSeal, contentType: "image/jpeg" } } : undefined;
}

/**
 * `thumbnail`: a small image also kept on the device, so it shows offline (not for sealed
 * files, which are opened from the network each time the page starts).
 */
function useMediaUrl(source: Source | undefined, enabled = true, thumbnail = false): string | null {
  const { media } = useServices();
  const [url, setUrl] = useState<string | null>(null);
  const id = source?.id;
  useEffect(() => {
    if (!source || !enabled) return;
    let live = true;
    (source.sealed ? media.sealedUrl(source.sealed) : thumbnail ? media.thumbnail(source.id) : media.url(source.id)).then((u) => live && setUrl(u)).catch(() => undefined);
    return () => {
      live = false;
    };
  }, [id, enabled]);
  return url;
}

export function MediaBlock({ media }: { media: MediaRef[] }) {
  return (
    <div class="media-block">
      {media.map((m) => (isImage(m) ? <ImageMedia key={m.id} m={m} /> : isVideo(m) ? <VideoMedia key={m.id} m={m} /> : isAudio(m) ? <AudioMedia key={m.id} m={m} /> : <FileCard key={m.id} m={m} />))}
    </div>
  );
}

/** A box with the image's aspect ratio is reserved before the bytes arrive: nothing jumps. */
function frameStyle(m: MediaRef) {
  const w = m.width ?? 4;
  const h = m.height ?? 3;
  return { aspectRatio: `${w} / ${h}`, width: `min(100%, ${Math.min(320, Math.round((w / h) * 320))}px)` };
}

function ImageMedia({ m }: { m: MediaRef }) {
  const thumbnail = thumbOf(m);
  const thumb = useMediaUrl(thumbnail ?? mainOf(m), true, thumbnail !== undefined);
  const [open, setOpen] = useState(false);
  const full = useMediaUrl(mainOf(m), open);
  return (
    <>
      <button class="media-frame" type="button" style={frameStyle(m)} onClick={() => setOpen(true)} aria-label={`Open image ${m.name}`}>
        {thumb ? <img src={thumb} alt={m.name} width={m.width} height={m.height} /> : <span class="media-placeholder" />}
      </button>
      {open ? <Lightbox onClose={() => setOpen(false)}>{full ? <img src={full} alt={m.name} /> : <span class="spinner">Loading…</span>}</Lightbox> : null}
    </>
  );
}

function VideoMedia({ m }: { m: MediaRef }) {
  const poster = useMediaUrl(thumbOf(m), true, true);
  const [play, setPlay] = useState(false);
  const src = useMediaUrl(mainOf(m), play);
  return (
    <div class="media-frame" style={frameStyle(m)}>
      {play && src ? (
        <video src={src} poster={poster ?? undefined} controls autoPlay playsInline />
      ) : (
        <button class="video-poster" type="button" onClick={() => setPlay(true)} aria-label={`Play video ${m.name}`}>
          {poster ? <img src={poster} alt="" /> : null}
          <span class="play-badge"><Icon name="play" size={28} /></span>
          {m.durationMs ? <span class="duration">{duration(m.durationMs)}</span> : null}
        </button>
      )}
    </div>
  );
}

const BARS = 32;
const FLAT = Array.from({ length: BARS }, () => 0.3);

/** A voice note's waveform and its length, from its decoded samples. */
async function waveformOf(note: Blob): Promise<{ peaks: number[]; durationMs: number }> {
  const bytes = await note.arrayBuffer();
  const decoded = await new OfflineAudioContext(1, 1, 48_000).decodeAudioData(bytes);
  return { peaks: peaks(decoded.getChannelData(0), BARS), durationMs: decoded.duration * 1000 };
}

/**
 * A player of our own: the browser's shows no length for a recorded WebM (its `duration` is
 * Infinity until played through). The length comes from the message (or the decoded samples),
 * the bars from the samples; a click or the arrow keys on the bars seek.
 */
function AudioMedia({ m }: { m: MediaRef }) {
  const { media } = useServices();
  const source = mainOf(m);
  const src = useMediaUrl(source);
  const audio = useRef<HTMLAudioElement>(null);
  const [playing, setPlaying] = useState(false);
  const [at, setAt] = useState(0);
  const [wave, setWave] = useState<{ peaks: number[]; durationMs: number } | null>(null);
  useEffect(() => {
    if (!src) return;
    let live = true;
    (source.sealed ? media.sealedBlob(source.sealed) : media.blob(m.id)).then(waveformOf).then((w) => live && setWave(w)).catch(() => undefined);
    return () => {
      live = false;
    };
  }, [src]);
  const total = m.durationMs ?? wave?.durationMs ?? 0;
  const seekTo = (ms: number) => {
    const a = audio.current;
    if (!a || total <= 0) return;
    const t = Math.max(0, Math.min(total, ms));
    a.currentTime = t / 1000;
    setAt(t);
  };
  const played = total > 0 ? at / total : 0;
  return (
    <div class="voice-note">
      <button class="icon-btn voice-play" type="button" disabled={!src} aria-label={playing ? "Pause voice message" : `Play voice message, ${duration(total)}`} onClick={() => {
        const a = audio.current;
        if (a?.paused) void a.play().catch(() => undefined);
        else a?.pause();
      }}>
        <Icon name={playing ? "pause" : "play"} size={20} />
      </button>
      <div
        class="waveform"
        role="slider"
        tabIndex={0}
        aria-label="Voice message position"
        aria-valuemin={0}
        aria-valuemax={Math.round(total / 1000)}
        aria-valuenow={Math.round(at / 1000)}
        aria-valuetext={`${duration(at)} of ${duration(total)}`}
        onClick={(e) => {
          const r = e.currentTarget.getBoundingClientRect();
          seekTo(((e.clientX - r.left) / r.width) * total);
        }}
        onKeyDown={(e) => {
          if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
            e.preventDefault();
            seekTo(at + (e.key === "ArrowRight" ? 5000 : -5000));
          }
        }}
      >
        {(wave?.peaks ?? FLAT).map((p, i) => (
          <i key={i} class={(i + 0.5) / BARS <= played ? "played" : undefined} style={{ height: `${Math.max(12, Math.round(p * 100))}%` }} />
        ))}
      </div>
      <span class="muted voice-time">{duration(playing || at > 0 ? at : total)}</span>
      {src ? (
        <audio
          ref={audio}
          src={src}
          preload="metadata"
          onPlay={() => setPlaying(true)}
          onPause={() => setPlaying(false)}
          onEnded={() => {
            setPlaying(false);
            setAt(0);
          }}
          onTimeUpdate={(e) => setAt(e.currentTarget.currentTime * 1000)}
        />
      ) : null}
    </div>
  );
}

function FileCard({ m }: { m: MediaRef }) {
  const { media } = useServices();
  const download = async () => {
    const source = mainOf(m);
    const url = await (source.sealed ? media.sealedUrl(source.sealed) : media.url(m.id));
    const a = document.createElement("a");
    a.href = url;
    a.download = m.name;
    a.click();
  };
  return (
    <button class="file-card" type="button" onClick={() => void download()}>
      <Icon name="file" size={28} />
      <span class="file-info">
        <span class="visually-hidden">Download </span>
        <span class="file-name">{m.name}</span>
        <span class="muted">{bytes(m.size)} · {m.contentType.split("/")[1] ?? m.contentType}</span>
      </span>
    </button>
  );
}

function Lightbox({ children, onClose }: { children: ComponentChildren; onClose: () => void }) {
  const dialog = useRef<HTMLDivElement>(null);
  const closeButton = useRef<HTMLButtonElement>(null);
  useFocusHandoff(dialog, closeButton);
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") onClose();
      // A modal dialog keeps the focus: Close is the one thing in it to focus.
      if (e.key === "Tab") {
        e.preventDefault();
        closeButton.current?.focus();
      }
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, []);
  return (
    <div class="lightbox" ref={dialog} role="dialog" aria-modal="true" aria-label="Image" onClick={onClose}>
      <button class="icon-btn lightbox-close" ref={closeButton} type="button" aria-label="Close" onClick={onClose}>
        <Icon name="close" />
      </button>
      {children}
    </div>
  );
}
