// Parsing at the edge: bodies and queries reach the routes typed, or become a 400/413 with the
// API's error shape.
import { describe, expect, it } from "vitest";
import * as z from "zod";
import { HistoryQuery } from "../../../protocol";
import { parseWith, readJson, readQuery } from "../../../worker/lib/validate";

const Body = z.strictObject({ name: z.string().min(1), count: z.number().int().optional() });
const MAX = 64;

/** A POST with `body` (text, or bytes as they are); `chunked` sends it as a stream with no content-length. */
function post(body: string | Uint8Array, { type = "application/json", chunked = false } = {}): Request {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < bytes.length; i += 16) controller.enqueue(bytes.slice(i, i + 16));
      controller.close();
    },
  });
  return new Request("https://chat.example/x", {
    method: "POST",
    headers: { "content-type": type },
    body: chunked ? stream : bytes,
    ...(chunked ? { duplex: "half" } : {}),
  } as RequestInit);
}

describe("readJson", () => {
  it.each([
    ["application/json", false],
    ["application/json; charset=utf-8", false],
    ["Application/JSON", false],
    ["application/json", true],
  ])("reads a body of type %s (chunked: %s)", async (type, chunked) => {
    expect(await readJson(post('{"name":"a","count":2}', { type, chunked }), Body, MAX)).toEqual({ name: "a", count: 2 });
  });

  it.each([
    ["a declared length over the limit", post(`{"name":"${"a".repeat(MAX)}"}`), "payload_too_large"],
    ["a chunked body over the limit", post(`{"name":"${"a".repeat(MAX)}"}`, { chunked: true }), "payload_too_large"],
    ["fewer characters than the limit but more bytes", post(`{"name":"${"é".repeat(30)}"}`, { chunked: true }), "payload_too_large"],
    ["another content type", post('{"name":"a"}', { type: "text/plain" }), "bad_request"],
    ["no content type", new Request("https://chat.example/x", { method: "POST", body: '{"name":"a"}', headers: { "content-type": "" } }), "bad_request"],
    ["a body that is not JSON", post("{name:"), "bad_request"],
    ["an empty body", post(""), "bad_request"],
    ["a body the schema refuses", post('{"name":""}'), "bad_request"],
    ["a field the schema does not know", post('{"name":"a","admin":true}'), "bad_request"],
  ])("refuses %s", async (_, request, code) => {
    await expect(readJson(request, Body, MAX)).rejects.toMatchObject({ code });
  });

  /** `{"name":"a<bad>b"}` with `bad` raw in the string. */
  const withBytes = (bad: number[]) => new Uint8Array([...new TextEncoder().encode('{"name":"a'), ...bad, ...new TextEncoder().encode('b"}')]);

  it.each([
    ["FF", [0xff]],
    ["an overlong slash C0 AF", [0xc0, 0xaf]],
    ["an encoded surrogate ED A0 80", [0xed, 0xa0, 0x80]],
    ["a truncated sequence E2 82", [0xe2, 0x82]],
    ["a stray continuation byte 80", [0x80]],
    ["past U+10FFFF F4 90 80 80", [0xf4, 0x90, 0x80, 0x80]],
  ])("refuses ill-formed UTF-8 inside a string (%s) with 400, whole or chunked", async (_, bad) => {
    for (const chunked of [false, true]) {
      await expect(readJson(post(withBytes(bad), { chunked }), Body, MAX)).rejects.toMatchObject({ code: "bad_request", message: "body is not valid UTF-8" });
    }
  });

  it("reads well-formed UTF-8 split across chunks, U+FFFD itself included", async () => {
    const name = "é😀\ufffd".repeat(3);
    expect(await readJson(post(`{"name":"${name}"}`, { chunked: true }), Body, MAX)).toEqual({ name });
  });

  it("names each issue by its path", async () => {
    const error = await readJson(post('{"name":"","count":1.5}'), Body, MAX).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "bad_request", status: 400, message: "invalid body" });
    expect((error as { toBody(): { error: { issues: { path: string }[] } } }).toBody().error.issues.map((i) => i.path).sort()).toEqual(["count", "name"]);
  });
});

describe("readQuery and parseWith", () => {
  it.each([
    ["", { limit: 100 }],
    ["?after=5&limit=20", { after: 5, limit: 20 }],
    ["?before=9&thread=3", { before: 9, thread: 3, limit: 100 }],
  ])("parses %j", (search, expected) => {
    expect(readQuery(`https://chat.example/conversations/c/messages${search}`, HistoryQuery)).toEqual(expected);
  });

  it.each([
    ["a parameter given twice", "?after=1&after=2"],
    ["after and before together", "?after=1&before=2"],
    ["a negative number", "?after=-1"],
    ["a limit over the page size", "?limit=100000"],
    ["an unknown parameter", "?afterr=1"],
  ])("refuses %s", (_, search) => {
    expect(() => readQuery(`https://chat.example/m${search}`, HistoryQuery)).toThrow(expect.objectContaining({ code: "bad_request" }));
  });

  it("returns the parsed value, or throws bad_request naming what was parsed", () => {
    expect(parseWith(Body, { name: "a" }, "frame")).toEqual({ name: "a" });
    expect(() => parseWith(Body, { name: 1 }, "frame")).toThrow("invalid frame");
  });
});
