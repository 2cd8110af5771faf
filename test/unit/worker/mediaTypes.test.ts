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
});
