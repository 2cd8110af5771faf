// The app with a timeline of its conversation objects' work: the bench's `--trace` (bench/run.ts,
// S1). It shows where a stall the receivers saw began: before the conversation object took the
// late messages (its thread was busy elsewhere), or after.
//
// Nothing of the app's behaviour differs; this only records times. A conversation object records
// when it took each bench frame (their bodies carry the time they were sent) and when each deferred
// pass's D1 batch and fan-out began and ended; a user object records each `deliver` call. Under
// `wrangler dev` the Worker and every object share one isolate, so one module-level list holds
// it all, and GET /__bench/trace hands it over (and empties it). Started by the bench as
// `npm run dev -- bench/traced/worker.ts` in place of the app's own entry point.
import app from "../../worker/index";
import { ConversationDO as AppConversationDO } from "../../durable-objects/conversation/ConversationDO";
import { UserDO as AppUserDO } from "../../durable-objects/user/UserDO";

export { ThrottleDO } from "../../worker/index";

/** `[kind, at, detail]`: `at` is Date.now() when it happened; for "took", `detail` is when the frame was sent. */
type TraceEvent = [kind: "took" | "d1" | "d1-done" | "fanout" | "fanout-done" | "deliver", at: number, detail: number];

/** Bounded, so a run left tracing cannot grow without limit (S1 at 1,000 msg/s for 8 s is ~9,000). */
const TRACE_MAX = 200_000;
const events: TraceEvent[] = [];

function record(kind: TraceEvent[0], detail = 0): void {
  if (events.length < TRACE_MAX) events.push([kind, Date.now(), detail]);
}

/** The bench's frames end their body with `@<the sender's clock in ms>` (bench/lib/rooms.ts). */
const SENT_AT = /@(\d+(?:\.\d+)?)"/;

export class ConversationDO extends AppConversationDO {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const flush = this.outbox.flush.bind(this.outbox);
    this.outbox.flush = async (untilEmpty) => {
      record("d1");
      try {
        return await flush(untilEmpty);
      } finally {
        record("d1-done");
      }
    };
    const run = this.fanout.run.bind(this.fanout);
    this.fanout.run = async (throughSeq, inD1) => {
      record("fanout");
      try {
        return await run(throughSeq, inD1);
      } finally {
        record("fanout-done");
      }
    };
  }

  override webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): void | Promise<void> {
    if (typeof data === "string") {
      const sent = SENT_AT.exec(data);
      if (sent) record("took", Number(sent[1]));
    }
    return super.webSocketMessage(ws, data);
  }
}

export class UserDO extends AppUserDO {
  override deliver(...args: Parameters<AppUserDO["deliver"]>): ReturnType<AppUserDO["deliver"]> {
    record("deliver");
    return super.deliver(...args);
  }
}

export default {
  ...app,
  fetch(request, env, ctx) {
    if (new URL(request.url).pathname === "/__bench/trace") return Response.json(events.splice(0));
    return app.fetch(request, env, ctx);
  },
} satisfies ExportedHandler<Env>;
