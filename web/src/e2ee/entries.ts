// What a device keeps of each decrypted message of an E2EE conversation: its content, an action
// (applied by ./fold.ts), or why there is none. Apart from ./fold.ts so that the app's initial
// code reads these without loading the rules, which only the engine's chunk needs.
import type { Action } from "../../../protocol";
import type { Content } from "./content";

/** Which action, on which message: what a device keeps of an action once applied (an edit's text lives in its target). */
export type ActionRef = Pick<Action, "type" | "targetSeq">;

/**
 * A decrypted action: it is shown on its target, never as a message. `applied`: it passed the
 * rules. An edit's text is not kept here, so that a delete of the target erases every version.
 */
export interface ActionEntry {
  action: ActionRef;
  from: string;
  applied: boolean;
}

/** A decrypted message's content, a decrypted action, or why this device has none. */
export type PlainEntry = Content | ActionEntry | { failed: string };

export function isContent(entry: PlainEntry | undefined): entry is Content {
  return entry !== undefined && !("failed" in entry) && !("action" in entry);
}

export function isAction(entry: PlainEntry | undefined): entry is ActionEntry {
  return entry !== undefined && "action" in entry;
}
