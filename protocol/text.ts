// The one rule every string of the protocol follows: well-formed UTF-16. A lone surrogate
// ("\ud800" in JSON) cannot be stored as text: SQLite and UTF-8 replace it, so what was acked
// would differ from what is stored (and a body of 8,192 of them would grow to 24,576 characters).
// It is refused with 400 (or an error frame) wherever a string comes in.
import * as z from "zod";

/** No code point of the surrogate category: `u` mode reads a valid pair as one code point. */
const WELL_FORMED = /^\P{Cs}*$/u;

export const text = () => z.string().regex(WELL_FORMED, "ill-formed UTF-16 (a lone surrogate)");

/**
 * Characters a name shown to others must not hold: C0 and C1 controls (NUL included), and the
 * bidirectional controls that reorder what follows them (U+202A-202E embeddings and overrides,
 * U+2066-2069 isolates, U+200E/200F and U+061C marks), with which "gpj.exe" reads "exe.jpg".
 */
// eslint-disable-next-line no-control-regex
export const INVISIBLE_IN_NAMES = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** A name shown to others (display name, device name, group title): those characters stripped, then trimmed. */
export const shownName = (max: number) =>
  text()
    .overwrite((s) => s.replace(INVISIBLE_IN_NAMES, ""))
    .trim()
    .min(1)
    .max(max);
