// The message actions of an E2EE conversation, applied by each device to what it decrypted: the
// server cannot check them (it sees ciphertexts), so every client holds them to the server's rules
// for plaintext conversations (docs/api.md, Message actions) against the MLS-authenticated sender.
// An action that breaks a rule changes nothing. Applied strictly in seq order (the client's
// catch-up), so every device that decrypted the same messages ends with the same result.
// Plain data; no cryptography here.
import { ACTION_LIMITS, type Action, type Reaction } from "../../../protocol";
import type { Content } from "./content";
import { isContent, type ActionEntry, type PlainEntry } from "./entries";

export { isAction, isContent, type ActionEntry, type ActionRef, type PlainEntry } from "./entries";

export interface Actor {
  /** The user who sent the action, as MLS authenticated it. */
  userId: string;
  /** When the server stored the action. */
  at: number;
  /** Whether that user is an admin of the group (deletes others' messages). */
  admin: boolean;
}

/**
 * Applies one action to its target in `plain` (changed in place). Returns whether it applied: an
 * action on a message this device cannot read (before it joined, deleted, not decrypted), or one
 * its sender may not take, changes nothing.
 */
export function foldAction(plain: Record<number, PlainEntry>, action: Action, actor: Actor): boolean {
  const target = plain[action.targetSeq];
  if (!isContent(target) || target.deletedAt !== undefined) return false;
  switch (action.type) {
    case "edit": {
      // The sender only, of a message with text, within the window (what the server holds plaintext edits to).
      if (target.from === undefined || target.from !== actor.userId) return false;
      if (target.body === undefined || target.at === undefined) return false;
      if (actor.at - target.at > ACTION_LIMITS.editWindowMs) return false;
      target.body = action.body;
      target.editedAt = actor.at;
      return true;
    }
    case "delete": {
      if (target.from === undefined || (target.from !== actor.userId && !actor.admin)) return false;
      plain[action.targetSeq] = { v: 1, from: target.from, ...(target.at !== undefined ? { at: target.at } : {}), ...(target.replyToSeq !== undefined ? { replyToSeq: target.replyToSeq } : {}), deletedAt: actor.at };
      return true;
    }
    case "react": {
      const reactions = target.reactions ?? [];
      const held = reactions.some((r) => r.emoji === action.emoji && r.userIds.includes(actor.userId));
      if (action.on === held) return true;
      if (action.on) {
        const mine = reactions.filter((r) => r.userIds.includes(actor.userId)).length;
        const known = reactions.some((r) => r.emoji === action.emoji);
        if (mine >= ACTION_LIMITS.reactionsPerUser) return false;
        if (!known && reactions.length >= ACTION_LIMITS.emojiPerMessage) return false;
      }
      const next = react(reactions, action.emoji, actor.userId, action.on);
      if (next.length > 0) target.reactions = next;
      else delete target.reactions;
      return true;
    }
    case "pin": {
      if (!action.on) {
        delete target.pinned;
        return true;
      }
      if (target.pinned) return true;
      const pinned = Object.values(plain).filter((e) => isContent(e) && e.pinned !== undefined).length;
      if (pinned >= ACTION_LIMITS.pinsMax) return false;
      target.pinned = { by: actor.userId, at: actor.at };
      return true;
    }
  }
}

function react(reactions: Reaction[], emoji: string, userId: string, on: boolean): Reaction[] {
  if (!on) return reactions.map((r) => (r.emoji === emoji ? { emoji, userIds: r.userIds.filter((id) => id !== userId) } : r)).filter((r) => r.userIds.length > 0);
  return reactions.some((r) => r.emoji === emoji)
    ? reactions.map((r) => (r.emoji === emoji ? { emoji, userIds: [...r.userIds, userId] } : r))
    : [...reactions, { emoji, userIds: [userId] }];
}
