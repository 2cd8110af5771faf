// The one rule every string of the protocol follows: well-formed UTF-16. A lone surrogate
// ("\ud800" in JSON) cannot be stored as text: SQLite and UTF-8 replace it, so what was acked
// would differ from what is stored (and a body of 8,192 of them would grow to 24,576 characters).
// It is refused with 400 (or an error frame) wherever a string comes in.
import * as z from "zod";

/** No code point of the surrogate category: `u` mode reads a valid pair as one code point. */
const WELL_FORMED = /^\P{Cs}*$/u;

export const text = () => z.string().regex(WELL_FORMED, "ill-formed UTF-16 (a lone surrogate)");
