// One user's settings of a conversation (mute, archive, pin to top): the caller's own, kept by
// their user object, the same on every device of theirs. Other members never see them.
//
// Imports only ./text: ./schemas imports the conversation's new field and the frame from here.
import * as z from "zod";
import { text } from "./text";

export const CONVERSATION_SETTINGS_LIMITS = {
  /** Conversations one user may pin to the top of their list. */
  pinsMax: 5,
} as const;

/**
 * `mutedUntil` of a conversation muted until it is unmuted: the latest time a JavaScript Date
 * holds, so that a client may read every `mutedUntil` as a time.
 */
export const MUTED_ALWAYS = 8_640_000_000_000_000;

const Id = text().min(1).max(128);
const Time = z.number().int().nonnegative();

/**
 * The caller's settings of one conversation. `mutedUntil`: no notification for its messages
 * until then (epoch ms; MUTED_ALWAYS for always; a time past is not muted), but for one that
 * mentions the caller; unread counts still count. `archived`: shown apart, in "Archived" (a new
 * message leaves it there). `pinnedAt`: pinned to the top of the list when, the earliest first.
 */
export const ConversationSettings = z.object({
  mutedUntil: Time.max(MUTED_ALWAYS).nullable(),
  archived: z.boolean(),
  pinnedAt: Time.nullable(),
});
export type ConversationSettings = z.infer<typeof ConversationSettings>;

/** A conversation's settings until its user changes one. */
export const DEFAULT_CONVERSATION_SETTINGS: ConversationSettings = { mutedUntil: null, archived: false, pinnedAt: null };

/**
 * `PUT /conversations/:id/settings`: the fields to change, at least one. `mutedUntil: null`
 * unmutes; `pinned: true` on a pinned conversation keeps its place.
 */
export const ConversationSettingsBody = z
  .strictObject({
    mutedUntil: Time.max(MUTED_ALWAYS).nullable().optional(),
    archived: z.boolean().optional(),
    pinned: z.boolean().optional(),
  })
  .refine((b) => b.mutedUntil !== undefined || b.archived !== undefined || b.pinned !== undefined, {
    message: "a change needs mutedUntil, archived or pinned",
  });
export type ConversationSettingsBody = z.infer<typeof ConversationSettingsBody>;

/** To every user socket of the caller: a conversation's settings as they now are. */
export const ConversationSettingsFrame = z.object({
  type: z.literal("conversationSettings"),
  conversationId: Id,
  settings: ConversationSettings,
});

/** Whether a conversation with these settings is muted at `now`. */
export function isMuted(settings: Pick<ConversationSettings, "mutedUntil"> | undefined, now: number): boolean {
  return settings?.mutedUntil != null && settings.mutedUntil > now;
}
