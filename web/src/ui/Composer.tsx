import { useEffect, useRef, useState } from "preact/hooks";
import { LIMITS, MEDIA_TYPES } from "../../../protocol";
import { duration } from "../state/format";
import { recordVoice, type Recording } from "../lib/mediaFiles";
import { useServices } from "./context";
import { Icon } from "./icons";
import { startUploads, uploadOne } from "./Media";

const drafts = new Map<string, string>();

/** What the server stores (protocol's media types): images, video, audio and PDF. */
const SENDABLE: readonly string[] = MEDIA_TYPES.filter((t) => t !== "application/octet-stream");
const ACCEPT = SENDABLE.join(",");
/** Dropped and pasted files skip the picker's filter; the server maps some aliases (image/jpg), so go by kind. */
const sendable = (f: File) => SENDABLE.includes(f.type) || /^(image|video|audio)\//.test(f.type);

export function Composer({ conversationId, threadRootSeq }: { conversationId: string; threadRootSeq: number | null }) {
  const { store, media } = useServices();
  const draftKey = `${conversationId}:${threadRootSeq ?? ""}`;
  const [text, setText] = useState(drafts.get(draftKey) ?? "");
  const [recording, setRecording] = useState<Recording | null>(null);
  const [elapsed, setElapsed] = useState(0);
  const [dragging, setDragging] = useState(false);
  const input = useRef<HTMLTextAreaElement>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const caps = store.state.caps;
  const canRecord = caps.upload && typeof MediaRecorder !== "undefined" && !!navigator.mediaDevices;
  const label = threadRootSeq ? "Reply in thread" : "Message";
  const offline = store.state.connection === "offline";

  // A chat opening focuses the composer only with a mouse or trackpad: on a touch screen focus
  // raises the keyboard over the messages. A thread is opened to reply, so it focuses anywhere.
  useEffect(() => {
    if (threadRootSeq !== null || window.matchMedia("(pointer: fine)").matches) input.current?.focus();
  }, [conversationId, threadRootSeq]);

  useEffect(() => {
    autosize();
  }, [text]);

  useEffect(() => {
    if (!recording) return;
    const t = setInterval(() => setElapsed(performance.now() - recording.startedAt), 250);
    return () => clearInterval(t);
  }, [recording]);

  const autosize = () => {
    const el = input.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, 160)}px`;
  };

  const send = () => {
    const body = text.trim();
    if (!body) return;
    void store.sendText(conversationId, body, threadRootSeq);
    setText("");
    drafts.delete(draftKey);
    input.current?.focus();
  };

  const onFiles = (files: FileList | File[] | null) => {
    const picked = files ? [...files] : [];
    if (picked.length === 0) return;
    if (!caps.upload) {
      store.notify("Attachments are not available on this server yet.");
      return;
    }
    const list = picked.filter(sendable);
    if (list.length < picked.length) store.notify("Only photos, videos, audio and PDF files can be sent.");
    if (list.length === 0) return;
    void startUploads(store, media, conversationId, list, threadRootSeq);
  };

  const startRecording = async () => {
    try {
      setElapsed(0);
      setRecording(await recordVoice());
    } catch {
      store.notify("Microphone unavailable. Check the browser's permission for this site.");
    }
  };

  const stopRecording = async (keep: boolean) => {
    const r = recording;
    setRecording(null);
    if (!r) return;
    if (!keep) {
      r.cancel();
      return;
    }
    const { blob, durationMs, type } = await r.stop();
    if (durationMs < 500 || blob.size === 0) return;
    const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    void uploadOne(store, media, conversationId, blob, `voice-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.${ext}`, { durationMs }, threadRootSeq, "");
  };

  if (recording) {
    return (
      <div class="composer recording" role="group" aria-label="Recording a voice message">
        <button class="icon-btn" type="button" aria-label="Cancel recording" onClick={() => void stopRecording(false)}>
          <Icon name="trash" />
        </button>
        <span class="rec-dot" aria-hidden="true" />
        <span class="rec-time" role="timer" aria-live="off">{duration(elapsed)}</span>
        <span class="muted rec-hint">Recording…</span>
        <button class="icon-btn send" type="button" aria-label="Send voice message" onClick={() => void stopRecording(true)}>
          <Icon name="send" />
        </button>
      </div>
    );
  }

  return (
    <form
      class={`composer${dragging ? " dragging" : ""}`}
      onSubmit={(e) => {
        e.preventDefault();
        send();
      }}
      onDragOver={(e) => {
        if (!caps.upload) return;
        e.preventDefault();
        e.stopPropagation();
        setDragging(true);
      }}
      onDragLeave={() => setDragging(false)}
      onDrop={(e) => {
        e.preventDefault();
        e.stopPropagation();
        setDragging(false);
        onFiles(e.dataTransfer?.files ?? null);
      }}
    >
      {caps.upload ? (
        <>
          <button class="icon-btn" type="button" aria-label="Attach files" title={offline ? "Attach files (when back online)" : "Attach files"} disabled={offline} onClick={() => fileInput.current?.click()}>
            <Icon name="attach" />
          </button>
          <input
            ref={fileInput}
            class="visually-hidden"
            type="file"
            multiple
            tabIndex={-1}
            aria-hidden="true"
            accept={ACCEPT}
            onChange={(e) => {
              onFiles(e.currentTarget.files);
              e.currentTarget.value = "";
            }}
          />
        </>
      ) : null}
      <textarea
        ref={input}
        rows={1}
        value={text}
        maxLength={LIMITS.bodyMax}
        placeholder={threadRootSeq ? "Reply…" : "Message"}
        aria-label={label}
        dir="auto"
        enterkeyhint="send"
        onInput={(e) => {
          const v = e.currentTarget.value;
          setText(v);
          drafts.set(draftKey, v);
          if (v.trim()) store.typing.keystroke(conversationId);
          else store.stopTyping(conversationId);
        }}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            send();
          }
        }}
        onPaste={(e) => {
          const files = e.clipboardData?.files;
          if (files && files.length > 0 && caps.upload) {
            e.preventDefault();
            onFiles(files);
          }
        }}
        onBlur={() => store.stopTyping(conversationId)}
      />
      {text.trim() || !canRecord ? (
        <button class="icon-btn send" type="submit" aria-label="Send" disabled={!text.trim()}>
          <Icon name="send" />
        </button>
      ) : (
        <button class="icon-btn" type="button" aria-label="Record voice message" title={offline ? "Record voice message (when back online)" : "Record voice message"} disabled={offline} onClick={() => void startRecording()}>
          <Icon name="mic" />
        </button>
      )}
    </form>
  );
}
