// The rules of message actions in one conversation (protocol/actions.ts): who may edit, delete,
// react and pin, what each does to its target, and what a send's reply, mentions and forward must
// name. An action is an event in the conversation's sequence (a message of kind `action` whose
// body is the ActionEvent), so it reaches every device live and by sync in order, like any
// message; the target's row is rewritten in the same step, so history read later shows the
// message as it now is. Deleting for everyone erases the target's body, media and ciphertext, and
// the text of its edits, here and (through the outbox) in D1, its search index and R2.
import {
  ACTION_LIMITS,
  type Action,
  type ActionEvent,
  type Message,
  type Reaction,
} from "../../protocol";
import { fail, type Failure, type Result } from "../../kernel/result";
import type { Identity } from "../../kernel/identity";
import type { ConversationStore, EncodedMessage } from "./conversationStore";
import { ActionTables, annotationsOf, hiddenView, type Annotations } from "./actionsStore";

export interface ActionDeps {
  /** Appends an `action` message with this body and delivers it like any message; null if the clientMsgId is taken. */
  appendAction(actor: Identity, clientMsgId: string, event: ActionEvent, now: number, origin: WebSocket | null): Message | null;
  /** Takes one token of the user's message rate limit: 0 when allowed, else the seconds to wait. */
  takeRateToken(userId: string, now: number): number;
  /** Sends the user's own sockets here a frame (delete for me). */
  sendToUser(userId: string, frame: string): void;
  /** Tells the user's object (their other devices' user sockets) which messages they hid. */
  notifyHidden(userId: string, seqs: number[]): void;
  /**
   * The seqs `userId` may read (./conversation.ts: from the message that added them, through the
   * one that removed them), or null for someone who never was a member.
   */
  spanOf(userId: string): { from: number; through: number } | null;
}

/** Kinds a member wrote and can act on: not membership records, commits or other actions. */
const ACTIONABLE = new Set(["text", "media", "encrypted"]);

export class MessageActions {
  readonly tables: ActionTables;

  constructor(
    private readonly store: ConversationStore,
    private readonly deps: ActionDeps,
  ) {
    this.tables = new ActionTables(store.database);
  }

  /**
   * Checks and applies an action, appending its event. A retry with a known clientMsgId answers
   * the stored event (200), whatever the action says, and changes nothing.
   */
  act(
    actor: Identity,
    clientMsgId: string,
    action: Action,
    now: number,
    origin: WebSocket | null,
  ): Result<{ message: Message; duplicate: boolean }> {
    const meta = this.store.meta;
    if (!meta || !this.store.members.has(actor.userId)) return fail("not_found", "no such conversation");
    const existing = this.store.findByClientMsgId(actor.userId, clientMsgId);
    if (existing) return { ok: true, message: existing, duplicate: true };
    const refused = this.refusal(actor, action, now, this.readableFrom(actor.userId));
    if (refused) return refused;
    const wait = this.deps.takeRateToken(actor.userId, now);
    if (wait > 0) return fail("rate_limited", "too many messages", wait);

    const target = this.store.getMessage(action.targetSeq)!;
    const event: ActionEvent = action;
    const message = this.deps.appendAction(actor, clientMsgId, event, now, origin);
    // findByClientMsgId just found none, in this same synchronous step.
    if (!message) return fail("internal", "action clientMsgId already stored");
    this.apply(target, action, actor.userId, now, message.seq);
    return { ok: true, message, duplicate: false };
  }

  /** Why `actor` may not take `action` now, or null. Changes nothing. */
  private refusal(actor: Identity, action: Action, now: number, readableFrom: number): Failure | null {
    const meta = this.store.requireMeta();
    if (meta.e2ee && action.type !== "delete") {
      return fail("bad_request", "in an end-to-end encrypted conversation this action travels inside a ciphertext");
    }
    // A message from before the actor joined is one they cannot read: as good as none.
    const target = action.targetSeq <= meta.lastSeq && action.targetSeq >= readableFrom ? this.store.getMessage(action.targetSeq) : null;
    if (!target || !ACTIONABLE.has(target.kind)) return fail("bad_request", "targetSeq names no message that can be acted on");
    if (target.deletedAt !== undefined) return fail("conflict", "the message was deleted");
    switch (action.type) {
      case "edit":
        if (target.senderId !== actor.userId) return fail("forbidden", "only its sender edits a message");
        // A text message, or the caption of a media message (a caption cannot be added later).
        if (target.body === null) return fail("bad_request", "only a message's text is edited");
        if (now - target.createdAt > ACTION_LIMITS.editWindowMs) return fail("forbidden", "the time to edit this message has passed");
        return null;
      case "delete": {
        const admin = meta.type === "group" && this.store.members.get(actor.userId)?.role === "admin";
        if (target.senderId !== actor.userId && !admin) return fail("forbidden", "only its sender or a group admin deletes a message for everyone");
        return null;
      }
      case "react": {
        if (!action.on) return null;
        const reactions = target.reactions ?? [];
        const mine = reactions.filter((r) => r.userIds.includes(actor.userId) && r.emoji !== action.emoji).length;
        if (mine >= ACTION_LIMITS.reactionsPerUser) return fail("bad_request", `at most ${ACTION_LIMITS.reactionsPerUser} reactions per member on a message`);
        if (!reactions.some((r) => r.emoji === action.emoji) && reactions.length >= ACTION_LIMITS.emojiPerMessage) {
          return fail("bad_request", `at most ${ACTION_LIMITS.emojiPerMessage} different reactions on a message`);
        }
        return null;
      }
      case "pin":
        if (action.on && target.pinned === undefined && this.tables.pinCount() >= ACTION_LIMITS.pinsMax) {
          return fail("bad_request", `at most ${ACTION_LIMITS.pinsMax} pinned messages in a conversation`);
        }
        return null;
    }
  }

  /**
   * Rewrites the target as the action leaves it (a repeated reaction or pin changes nothing),
   * marked with the event's seq.
   */
  private apply(target: Message, action: Action, userId: string, now: number, eventSeq: number): void {
    const extra: Annotations = { ...annotationsOf(target), revisedSeq: eventSeq };
    const content = { body: target.body, payload: target.ciphertext ?? null, media: target.media };
    switch (action.type) {
      case "edit":
        this.store.rewriteMessage(target.seq, { ...content, body: action.body, extra: { ...extra, editedAt: now } });
        return;
      case "delete":
        this.erase(target, now, eventSeq);
        return;
      case "react": {
        const before = target.reactions ?? [];
        const reactions = react(before, action.emoji, userId, action.on);
        if (reactions === before) return;
        const next: Annotations = { ...extra };
        if (reactions.length > 0) next.reactions = reactions;
        else delete next.reactions;
        this.store.rewriteMessage(target.seq, { ...content, extra: next });
        return;
      }
      case "pin": {
        const next: Annotations = { ...extra };
        if (action.on) {
          if (target.pinned) return;
          this.tables.pin(target.seq, userId, now);
          next.pinned = { by: userId, at: now };
        } else {
          if (!this.tables.unpin(target.seq)) return;
          delete next.pinned;
        }
        this.store.rewriteMessage(target.seq, { ...content, extra: next });
        return;
      }
    }
  }

  /**
   * Deleting for everyone: the target keeps its place (seq, sender, time, thread) and loses its
   * body, ciphertext, media, mentions, reactions and pin; its edit events lose their text; its
   * media (and their thumbnails) are queued for erasure from D1 and R2.
   */
  private erase(target: Message, now: number, eventSeq: number): void {
    const { replyToSeq } = target;
    this.store.rewriteMessage(target.seq, {
      body: null,
      payload: null,
      media: [],
      extra: { ...(replyToSeq !== undefined ? { replyToSeq } : {}), deletedAt: now, revisedSeq: eventSeq },
    });
    this.tables.unpin(target.seq);
    for (const edit of this.editsOf(target.seq)) {
      this.store.rewriteMessage(edit.seq, { body: JSON.stringify({ type: "edit", targetSeq: target.seq } satisfies ActionEvent), payload: null, media: [], extra: null });
    }
    const mediaIds = target.media.flatMap((m) => (m.thumbnailId ? [m.id, m.thumbnailId] : [m.id]));
    if (mediaIds.length > 0) this.store.queueForD1({ kind: "media_erase", payload: { mediaIds: [...new Set(mediaIds)] } });
  }

  /** The edit events of a message, oldest first. */
  private editsOf(seq: number): { seq: number }[] {
    return this.store.database
      .exec<{ seq: number }>(
        `SELECT seq FROM messages WHERE kind = 'action' AND seq > ? AND json_extract(body, '$.targetSeq') = ? AND json_extract(body, '$.type') = 'edit' ORDER BY seq`,
        seq,
        seq,
      )
      .toArray();
  }

  /**
   * Why a send's reply, mentions or forward mark cannot be stored, or null. An E2EE send carries
   * its reply and forward inside the ciphertext; `mentions` may stay outside, so that a mentioned
   * member can be notified (the one thing it reveals: who was mentioned).
   */
  invalidAnnotations(
    senderId: string,
    request: { replyToSeq?: number | undefined; mentions?: string[] | undefined; forwarded?: true | undefined },
  ): Failure | null {
    const meta = this.store.requireMeta();
    if (meta.e2ee && (request.replyToSeq !== undefined || request.forwarded !== undefined)) {
      return fail("bad_request", "in an end-to-end encrypted conversation a reply or a forward is marked inside the ciphertext");
    }
    if (request.replyToSeq !== undefined) {
      const readable = request.replyToSeq <= meta.lastSeq && request.replyToSeq >= this.readableFrom(senderId);
      const target = readable ? this.store.getMessage(request.replyToSeq) : null;
      if (!target || !ACTIONABLE.has(target.kind)) return fail("bad_request", "replyToSeq names no message");
    }
    if (request.mentions !== undefined) {
      if (new Set(request.mentions).size !== request.mentions.length) return fail("bad_request", "a member is mentioned twice");
      const stranger = request.mentions.find((id) => !this.store.members.has(id));
      if (stranger !== undefined) return fail("bad_request", `mentions names ${stranger}, who is not a member`);
    }
    return null;
  }

  /** Records that `userId` deleted these messages for themself; tells their devices. */
  hide(userId: string, seqs: number[]): Result<{ seqs: number[] }> {
    const meta = this.store.meta;
    if (!meta || !this.store.members.has(userId)) return fail("not_found", "no such conversation");
    const beyond = seqs.find((seq) => seq > meta.lastSeq);
    if (beyond !== undefined) return fail("bad_request", `seq ${beyond} is above lastSeq ${meta.lastSeq}`);
    const from = this.readableFrom(userId);
    const before = seqs.find((seq) => seq < from);
    if (before !== undefined) return fail("bad_request", `seq ${before} is from before you joined`);
    const unique = [...new Set(seqs)].sort((a, b) => a - b);
    const added = this.tables.hide(userId, unique);
    if (added.length > 0) {
      this.store.queueForD1({ kind: "hidden", payload: { userId, seqs: added } });
      this.deps.sendToUser(userId, JSON.stringify({ type: "hidden", conversationId: meta.id, seqs: added }));
      this.deps.notifyHidden(userId, added);
    }
    return { ok: true, seqs: unique };
  }

  /**
   * Messages as `userId` sees them: those they deleted for themself keep their seq and lose their
   * content; an edit of a message from before their joining loses its text (they cannot read the
   * message it changes, so they may not read what it now says either).
   */
  viewFor(userId: string, messages: Message[]): Message[] {
    if (messages.length === 0) return messages;
    const from = this.readableFrom(userId);
    const hidden = this.tables.hiddenBetween(userId, messages[0]!.seq, messages[messages.length - 1]!.seq);
    if (hidden.size === 0 && from <= 1) return messages;
    return messages.map((m) => viewOf(m, hidden, from));
  }

  /**
   * viewFor on messages SQLite encoded (ascending, ConversationStore.encodedBetween): only those
   * whose view may differ for `userId` (deleted for them; an edit, when they joined late) are
   * read back, changed and encoded again; the rest pass as they are.
   */
  encodedViewFor(userId: string, messages: EncodedMessage[]): Array<{ seq: number; json: string }> {
    if (messages.length === 0) return [];
    const from = this.readableFrom(userId);
    const hidden = this.tables.hiddenBetween(userId, messages[0]!.seq, messages[messages.length - 1]!.seq);
    return messages.map(({ seq, kind, json }) => {
      if (!hidden.has(seq) && !(from > 1 && kind === "action")) return { seq, json };
      // Read in the same synchronous step as the encoded row: it is there.
      const message = this.store.getMessage(seq)!;
      return { seq, json: JSON.stringify(viewOf(message, hidden, from)) };
    });
  }

  /** The first seq `userId` may read (everything for those who joined before spans were kept). */
  private readableFrom(userId: string): number {
    return this.deps.spanOf(userId)?.from ?? Number.MAX_SAFE_INTEGER;
  }

  /** The pinned messages `userId` may read, latest pin first, as they see them. */
  pins(userId: string): Result<{ messages: Message[] }> {
    if (!this.store.meta || !this.store.members.has(userId)) return fail("not_found", "no such conversation");
    const from = this.readableFrom(userId);
    const messages = this.tables.pinnedSeqs().flatMap((seq) => {
      const m = seq >= from ? this.store.getMessage(seq) : null;
      return m ? this.viewFor(userId, [m]) : [];
    });
    return { ok: true, messages };
  }
}

/** `message` as a reader sees it who hid `hidden` and may read from seq `from`. */
function viewOf(message: Message, hidden: Set<number>, from: number): Message {
  if (hidden.has(message.seq)) return hiddenView(message);
  const target = from > 1 ? editTargetOf(message) : null;
  return target !== null && target < from ? withoutEditText(message) : message;
}

/** The seq an `action` message edits, if it is an edit that still carries its text; else null. */
export function editTargetOf(message: Message): number | null {
  if (message.kind !== "action" || message.body === null) return null;
  const event = JSON.parse(message.body) as ActionEvent;
  return event.type === "edit" && event.body !== undefined ? event.targetSeq : null;
}

/** An edit event without its text (as one whose target was deleted for everyone reads). */
export function withoutEditText(message: Message): Message {
  const target = editTargetOf(message);
  if (target === null) return message;
  return { ...message, body: JSON.stringify({ type: "edit", targetSeq: target } satisfies ActionEvent) };
}

/** `reactions` with `userId`'s `emoji` on or off; emoji nobody holds any more are dropped. */
export function react(reactions: Reaction[], emoji: string, userId: string, on: boolean): Reaction[] {
  const held = reactions.some((r) => r.emoji === emoji && r.userIds.includes(userId));
  if (on === held) return reactions;
  if (!on) {
    return reactions
      .map((r) => (r.emoji === emoji ? { emoji, userIds: r.userIds.filter((id) => id !== userId) } : r))
      .filter((r) => r.userIds.length > 0);
  }
  const entry = reactions.find((r) => r.emoji === emoji);
  if (!entry) return [...reactions, { emoji, userIds: [userId] }];
  return reactions.map((r) => (r === entry ? { emoji, userIds: [...r.userIds, userId] } : r));
}
