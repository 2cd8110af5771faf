// File names as stored and as served.
import { describe, expect, it } from "vitest";
import { cleanName, contentDisposition } from "../../../worker/lib/mediaTypes";

describe("contentDisposition", () => {
  it("never throws on a stored name with a lone surrogate (one stored before the schemas refused them)", () => {
    const header = contentDisposition("video/mp4", "x\ud800y.mp4");
    expect(header).toBe(`inline; filename="x_y.mp4"; filename*=UTF-8''x%EF%BF%BDy.mp4`);
  });
});

describe("cleanName", () => {
  it("keeps a plain name", () => {
    expect(cleanName("holiday.jpg", "image/jpeg")).toBe("holiday.jpg");
  });
  it("drops controls, NUL and bidi controls, so a name reads as it is", () => {
    expect(cleanName("photo\u202Egpj.exe", "application/octet-stream")).toBe("photogpj.exe");
    expect(cleanName("a\u0000b\u2066c\u2069\u200e\u200f\u061c.pdf", "application/pdf")).toBe("abc.pdf");
    expect(cleanName("\u202E\u0000", "image/png")).toBe("file.png");
  });
});
