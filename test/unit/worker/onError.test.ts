// The Worker's one error handler: the API's error shape for every failure, a request id on every
// 5xx (in the answer and the log), and a 503 for an object the platform reports unavailable.
import { afterEach, describe, expect, it, vi } from "vitest";
import { base, newApp, onError } from "../../../worker/app";
import { ApiError } from "../../../worker/lib/apiError";

function appThrowing(err: unknown) {
  const app = newApp();
  app.use(base);
  app.get("/", () => {
    throw err;
  });
  app.onError(onError);
  return app;
}

async function answer(err: unknown) {
  const res = await appThrowing(err).request("https://chat.example/", { headers: { "cf-ray": "ray-123" } }, {} as Env);
  return { status: res.status, retryAfter: res.headers.get("retry-after"), body: (await res.json()) as { error: Record<string, unknown> } };
}

afterEach(() => vi.restoreAllMocks());

describe("onError", () => {
  it("answers a client error in the error shape, with no request id", async () => {
    const { status, body } = await answer(new ApiError("not_found", "no such conversation"));
    expect(status).toBe(404);
    expect(body).toEqual({ error: { code: "not_found", message: "no such conversation" } });
  });

  it("identifies and logs an internal failure an object answered as a value", async () => {
    const log = vi.spyOn(console, "error").mockImplementation(() => {});
    const { status, body } = await answer(new ApiError("internal", "send neither stored nor refused"));
    expect(status).toBe(500);
    expect(body.error).toEqual({ code: "internal", message: "send neither stored nor refused", requestId: "ray-123" });
    expect(String(log.mock.calls[0]?.[0])).toContain("ray-123");
  });

  it("turns anything else into a logged 500 that shows no detail", async () => {
    const log = vi.spyOn(console, "error").mockImplementation(() => {});
    const { status, body } = await answer(new TypeError("secret detail"));
    expect(status).toBe(500);
    expect(body.error).toEqual({ code: "internal", message: "internal error", requestId: "ray-123" });
    expect(JSON.stringify(body)).not.toContain("secret detail");
    expect(log).toHaveBeenCalled();
  });

  it.each([
    [{ durableObjectReset: true }, "1"],
    [{ retryable: true }, "1"],
    [{ overloaded: true }, "5"],
  ])("answers 503 with Retry-After for an object the platform marks %o", async (marks, retryAfter) => {
    vi.spyOn(console, "warn").mockImplementation(() => {});
    const { status, retryAfter: header, body } = await answer(Object.assign(new Error("reset"), marks));
    expect(status).toBe(503);
    expect(header).toBe(retryAfter);
    expect(body.error).toMatchObject({ code: "unavailable", requestId: "ray-123" });
  });
});
