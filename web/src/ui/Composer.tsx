import { useEffect, useRef, useState } from "preact/hooks";
import { LIMITS, MEDIA_TYPES } from "../../../protocol";
import { duration } from "../state/format";
import { insertMention, mentionAt, mentionsIn, quoteLine, type Candidate } from "../state/compose";
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
  const conv = store.state.conversations.get(conversationId);
  // In an E2EE conversation a reply's reference travels inside the ciphertext, and mentions
  // inside and beside it (sendQueue.ts); the quote shows what this device decrypted.
  const replySeq = conv && threadRootSeq === null ? store.replyTo(conversationId) : undefined;
  const replyHeld = replySeq !== undefined ? store.view(conversationId).messages.find((m) => m.seq === replySeq) : undefined;
  const replyMessage = replyHeld ? store.decrypted(replyHeld) : undefined;
  const canMention = !!conv && conv.type === "group";
  // The `@` being typed, and the members picked so far (sent if the text still names them).
  const [mention, setMention] = useState<{ start: number; query: string } | null>(null);
  const [active, setActive] = useState(0);
  const [picked, setPicked] = useState<Candidate[]>([]);
  const candidates = canMention && mention ? store.mentionCandidates(conv, mention.query) : [];
  const listOpen = candidates.length > 0;
  const listId = `mentions-${threadRootSeq ?? "main"}`;
  const caretAfter = useRef<number | null>(null);

  // Choosing Reply puts the focus in the composer.
  useEffect(() => {
    if (replySeq !== undefined) input.current?.focus();
  }, [replySeq]);

  useEffect(() => {
    const el = input.current;
    if (el && caretAfter.current !== null) {
      el.setSelectionRange(caretAfter.current, caretAfter.current);
      caretAfter.current = null;
    }
  }, [text]);

  const pick = (c: Candidate) => {
    const el = input.current;
    if (!mention || !el) return;
    const next = insertMention(text, mention.start, el.selectionStart ?? text.length, c.name);
    caretAfter.current = next.caret;
    setText(next.text);
    drafts.set(draftKey, next.text);
    setPicked((p) => (p.some((x) => x.userId === c.userId) ? p : [...p, c]));
    setMention(null);
    el.focus();
  };

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
    const mentions = canMention ? mentionsIn(body, picked) : [];
    void store.sendText(conversationId, body, threadRootSeq, {
      ...store.takeReply(conversationId, threadRootSeq),
      ...(mentions.length > 0 ? { mentions } : {}),
    });
    setText("");
    setPicked([]);
    setMention(null);
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

  const textarea = (
    <textarea
      ref={input}
      rows={1}
      value={text}
      maxLength={LIMITS.bodyMax}
      placeholder={threadRootSeq ? "Reply…" : "Message"}
      aria-label={label}
      dir="auto"
      enterkeyhint="send"
      {...(canMention ? { "aria-autocomplete": "list" as const, "aria-controls": listOpen ? listId : undefined, "aria-activedescendant": listOpen ? `${listId}-${Math.min(active, candidates.length - 1)}` : undefined } : {})}
      onInput={(e) => {
        const v = e.currentTarget.value;
        setText(v);
        drafts.set(draftKey, v);
        if (canMention) {
          setMention(mentionAt(v, e.currentTarget.selectionStart ?? v.length));
          setActive(0);
        }
        if (v.trim()) store.typing.keystroke(conversationId);
        else store.stopTyping(conversationId);
      }}
      onKeyDown={(e) => {
        if (listOpen) {
          const n = candidates.length;
          if (e.key === "ArrowDown" || e.key === "ArrowUp") {
            e.preventDefault();
            setActive((a) => (Math.min(a, n - 1) + (e.key === "ArrowDown" ? 1 : n - 1)) % n);
            return;
          }
          if ((e.key === "Enter" && !e.shiftKey && !e.isComposing) || e.key === "Tab") {
            e.preventDefault();
            pick(candidates[Math.min(active, n - 1)]!);
            return;
          }
          if (e.key === "Escape") {
            e.preventDefault();
            e.stopPropagation();
            setMention(null);
            return;
          }
        }
        if (e.key === "Escape" && replySeq !== undefined) {
          e.stopPropagation();
          store.cancelReply(conversationId);
          return;
        }
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
      onBlur={() => {
        store.stopTyping(conversationId);
        setMention(null);
      }}
    />
  );

  return (
    <div class="composer-area">
    {replySeq !== undefined ? (
      <div class="composer-reply" role="group" aria-label="Replying to">
        <div class="reply-quote" data-reply-to={replySeq}>
          <span class="sender" dir="auto">{replyMessage ? store.userName(replyMessage.senderId) : "Earlier message"}</span>
          <span class="quote-text" dir="auto">{quoteLine(replyMessage)}</span>
        </div>
        <button class="icon-btn" type="button" aria-label="Cancel reply" onClick={() => {
          store.cancelReply(conversationId);
          input.current?.focus();
        }}>
          <Icon name="close" />
        </button>
      </div>
    ) : null}
    {listOpen ? (
      <ul class="mention-list" id={listId} role="listbox" aria-label="Members to mention">
        {candidates.map((c, i) => (
          <li
            key={c.userId}
            id={`${listId}-${i}`}
            role="option"
            aria-selected={i === Math.min(active, candidates.length - 1)}
            // Keep the focus in the text while the pointer picks.
            onMouseDown={(e) => e.preventDefault()}
            onClick={() => pick(c)}
          >
            {c.name}
          </li>
        ))}
      </ul>
    ) : null}
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
      {canMention ? (
        <div class="mention-box" role="combobox" aria-label="Mention a member" aria-haspopup="listbox" aria-expanded={listOpen} aria-controls={listOpen ? listId : undefined}>
          {textarea}
        </div>
      ) : (
        textarea
      )}
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
    </div>
  );
}
