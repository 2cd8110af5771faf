// Message actions (reply, edit, delete, react, pin, forward, mentions, delete for me, search),
// defined once for both kinds of conversation. In a plaintext conversation an action is a server-
// checked event: a message of kind `action` in the conversation's sequence, whose `body` is an
// `ActionEvent` (JSON, as a `system` message's body is a SystemEvent), referring to its target by
// seq. In an end-to-end encrypted conversation the same `Action` is the plaintext inside an MLS
// application message (`E2eePlaintext`): the server sees an `encrypted` message and the clients
// apply it. The one exception is deleting for everyone, which the server must do itself to erase
// what it stores (docs/api.md, Message actions).
//
// Imports only ./text: ./schemas imports the message's new fields from here.
import * as z from "zod";
import { text } from "./text";

export const ACTION_LIMITS = {
  /** A sender edits a text message for this long after sending it. */
  editWindowMs: 48 * 60 * 60 * 1000,
  /** Distinct reactions one user may hold on one message. */
  reactionsPerUser: 10,
  /** Distinct emoji on one message. */
  emojiPerMessage: 50,
  /** Characters of one reaction (a family or flag sequence is several code points). */
  emojiMax: 32,
  /** Pinned messages per conversation. */
  pinsMax: 50,
  mentionsMax: 50,
  searchQueryMax: 200,
  searchPageMax: 50,
} as const;

const Id = text().min(1).max(128);
const Seq = z.number().int().positive();
const Time = z.number().int().nonnegative();

const EMOJI = /\p{Extended_Pictographic}|\p{Regional_Indicator}|\u20e3/u;
const LETTERS_OR_SPACE = /[\p{L}\p{N}\p{Z}\p{Cc}]/u;

/** One emoji (one grapheme cluster holding a pictograph, a flag or a keycap), and nothing else. */
export function isOneEmoji(value: string): boolean {
  if (!EMOJI.test(value)) return false;
  // Keycaps are a digit (or # or *) plus U+20E3: digits are letters-or-numbers otherwise.
  if (LETTERS_OR_SPACE.test(value.replace(/[0-9#*]\ufe0f?\u20e3/gu, ""))) return false;
  const segments = [...new Intl.Segmenter(undefined, { granularity: "grapheme" }).segment(value)];
  return segments.length === 1;
}

export const Emoji = text().min(1).max(ACTION_LIMITS.emojiMax).refine(isOneEmoji, "one emoji");

/**
 * What a member does to a message, by its seq. The same object is a plaintext conversation's
 * action event and an E2EE message's plaintext (`E2eePlaintext`).
 * - `edit`: the sender replaces a text message's body.
 * - `delete`: the message is deleted for everyone (its sender, or an admin of a group).
 * - `react`: `on` adds the member's `emoji`, `!on` takes it away.
 * - `pin`: `on` pins the message in the conversation, `!on` unpins it.
 */
export const Action = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("edit"), targetSeq: Seq, body: text().min(1).max(8192) }),
  z.strictObject({ type: z.literal("delete"), targetSeq: Seq }),
  z.strictObject({ type: z.literal("react"), targetSeq: Seq, emoji: Emoji, on: z.boolean() }),
  z.strictObject({ type: z.literal("pin"), targetSeq: Seq, on: z.boolean() }),
]);
export type Action = z.infer<typeof Action>;

/**
 * The body of a message of kind `action`: the action as applied. An edit's `body` is erased (the
 * key is left out) when its target is deleted for everyone.
 */
export const ActionEvent = z.discriminatedUnion("type", [
  z.object({ type: z.literal("edit"), targetSeq: Seq, body: text().optional() }),
  z.object({ type: z.literal("delete"), targetSeq: Seq }),
  z.object({ type: z.literal("react"), targetSeq: Seq, emoji: text(), on: z.boolean() }),
  z.object({ type: z.literal("pin"), targetSeq: Seq, on: z.boolean() }),
]);
export type ActionEvent = z.infer<typeof ActionEvent>;

/** A message's reactions: each emoji with the members who hold it, in the order they reacted. */
export const Reaction = z.object({ emoji: text(), userIds: z.array(Id) });
export type Reaction = z.infer<typeof Reaction>;

/**
 * A message's fields beyond the contract's, each present only when it applies. Set at sending:
 * `replyToSeq`, `mentions`, `forwarded`. Kept current by action events (plaintext conversations;
 * an E2EE conversation's clients fold the encrypted actions themselves): `editedAt`,
 * `deletedAt`, `reactions`, `pinned`, with `revisedSeq` naming the last event that changed them.
 * `hidden`: the caller deleted it for themself.
 */
export const MessageAnnotations = {
  replyToSeq: Seq.optional(),
  mentions: z.array(Id).optional(),
  forwarded: z.literal(true).optional(),
  editedAt: Time.optional(),
  deletedAt: Time.optional(),
  reactions: z.array(Reaction).optional(),
  pinned: z.object({ by: Id, at: Time }).optional(),
  /** The seq of the last action event that changed this message: of two copies, the higher is current. */
  revisedSeq: Seq.optional(),
  hidden: z.literal(true).optional(),
};

/** What a send may add (POST /send, /group/send, the socket's `send`). */
export const SendAnnotations = {
  /** A message of the conversation this one replies to (quoted above it; not a thread). */
  replyToSeq: Seq.optional(),
  /** Members mentioned (`@`): each is notified, even where the conversation is muted. */
  mentions: z.array(Id).min(1).max(ACTION_LIMITS.mentionsMax).optional(),
  /** The body and media are another message's, forwarded (media by id, not uploaded again). */
  forwarded: z.literal(true).optional(),
};

const ClientMsgId = text().min(1).max(64);

/** `POST /conversations/:id/actions`. */
export const ActionBody = z.strictObject({ clientMsgId: ClientMsgId, action: Action });
/** The conversation socket's `{type: "action", clientMsgId, action}`: answered by an `ack`. */
export const ActionFrame = z.strictObject({ type: z.literal("action"), clientMsgId: ClientMsgId, action: Action });

/** `POST /conversations/:id/hidden`: delete these messages for the caller only. */
export const HideBody = z.strictObject({ seqs: z.array(Seq).min(1).max(100) });
/** To the caller's own sockets (conversation and user): messages they deleted for themself. */
export const HiddenFrame = z.object({ type: z.literal("hidden"), conversationId: Id, seqs: z.array(Seq) });

const IntString = z
  .string()
  .regex(/^\d{1,16}$/, "a non-negative integer")
  .transform(Number);

/** `GET /search?q=&conversationId=&limit=&before=`. */
export const SearchQuery = z.strictObject({
  q: text().trim().min(1).max(ACTION_LIMITS.searchQueryMax),
  conversationId: Id.optional(),
  limit: IntString.pipe(z.number().int().min(1).max(ACTION_LIMITS.searchPageMax)).default(20),
  /** The `cursor` of the previous page: a position per D1 shard. */
  before: text().regex(/^\d{1,16}(\.\d{1,16}){0,255}$/, "a cursor").optional(),
});

/**
 * The plaintext of an MLS application message in an E2EE conversation (what clients encrypt and
 * decrypt; the server never sees it): a message with its annotations and its media's keys, or an
 * action on an earlier message. Clients apply an action only if its MLS sender may take it (an
 * edit from the target's own sender, within the edit window; a delete from the sender or an admin).
 */
export const E2eePlaintext = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("message"),
    body: text().max(8192).optional(),
    replyToSeq: Seq.optional(),
    mentions: z.array(Id).max(ACTION_LIMITS.mentionsMax).optional(),
    forwarded: z.literal(true).optional(),
    /** Per media id of the send: how to decrypt the blob (the web client's format). */
    media: z.array(z.object({ id: Id }).catchall(z.unknown())).optional(),
  }),
  z.object({ type: z.literal("action"), action: Action }),
]);
export type E2eePlaintext = z.infer<typeof E2eePlaintext>;
