// QR codes, drawn as an SVG path of our own from the module matrix of qrcode-generator (MIT): no
// markup strings, so nothing goes through innerHTML. Loaded on first use (the safety-number
// panel), never in the initial bundle.
import qrcode from "qrcode-generator";

/** The modules of the QR code of `text` (true: dark), row by row. Digits only: numeric mode, the densest. */
export function qrMatrix(text: string): boolean[][] {
  // Level M (15% of the code may be lost): a 60-digit number still fits a 25x25 code (version 2).
  const qr = qrcode(0, "M");
  qr.addData(text, /^\d+$/.test(text) ? "Numeric" : "Byte");
  qr.make();
  const size = qr.getModuleCount();
  return Array.from({ length: size }, (_, row) => Array.from({ length: size }, (_, col) => qr.isDark(row, col)));
}

/** A quiet zone of 4 modules around the code, as the standard asks. */
export const QUIET_ZONE = 4;

/** The SVG path of the dark modules, one unit per module, offset by the quiet zone; and the side of the whole square. */
export function qrPath(matrix: boolean[][]): { d: string; side: number } {
  let d = "";
  matrix.forEach((row, y) => {
    row.forEach((dark, x) => {
      if (dark) d += `M${x + QUIET_ZONE} ${y + QUIET_ZONE}h1v1h-1z`;
    });
  });
  return { d, side: matrix.length + 2 * QUIET_ZONE };
}
