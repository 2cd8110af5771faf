// Messages: sending (POST /send, POST /group/send; the conversation socket sends too, through
// routes/realtime.ts), one conversation's history, and multi-device sync (GET /messages?since=,
// every message of every conversation the caller belongs to, exactly once, in the order the
// caller's user object indexed them). Each route authenticates itself: this app is mounted at the root.
import { GroupSendBody, HistoryQuery, SendBody, SinceQuery, type SendInput } from "../../protocol";
import { sendWithMedia } from "../../kernel/d1/mediaRecords";
import { conversationStub, userStub } from "../../kernel/objects";
import type { SyncCursor } from "../../durable-objects/contract";
import { newApp, requireAuth, type AppContext } from "../app";
import { ApiError, unwrap } from "../lib/apiError";
import { readJson, readQuery } from "../lib/validate";

export const messages = newApp();

messages.post("/send", requireAuth, async (c) => {
  const { conversationId, ...content } = await readJson(c.req.raw, SendBody, c.get("settings").maxRequestBytes);
  return sendMessage(c, conversationId, content, null);
});

messages.post("/group/send", requireAuth, async (c) => {
  const { groupId, ...content } = await readJson(c.req.raw, GroupSendBody, c.get("settings").maxRequestBytes);
  return sendMessage(c, groupId, content, "group");
});

async function sendMessage(c: AppContext, conversationId: string, content: SendInput, requiredType: "group" | null) {
  const auth = c.get("auth");
  const stub = conversationStub(c.env, conversationId);
  const result = unwrap(
    await sendWithMedia(c.env, auth.userId, conversationId, content.mediaIds ?? [], async (media) =>
      // Awaited here: the stub's answer is a union of promises, which would not infer as one type.
      await stub.send(auth, { ...content, media }, Date.now(), requiredType),
    content.forwarded === true,
    ),
  );
  return c.json({ message: result.message }, result.duplicate ? 200 : 201);
}

messages.get("/conversations/:id/messages", requireAuth, async (c) => {
  const query = readQuery(c.req.url, HistoryQuery);
  const result = unwrap(await conversationStub(c.env, c.req.param("id")).history(c.get("auth").userId, query));
  return c.json({ messages: result.messages, hasMore: result.hasMore });
});

/**
 * `since` is 0, an epoch-ms time, or a cursor `u<ingestId>.<seq>.<minTime>` (base 36) from a
 * previous page: a place in the caller's inbox index (durable-objects/user/inboxIndex.ts), which
 * orders entries as they reached the caller's object, not by message time, so a message that
 * arrives late is still on a later page. A cursor of the D1 index this replaced
 * (`c<ingestId>.<minTime>`) names a place in nothing that exists now: it starts over from the
 * beginning of the inbox index with its time, so a device holding one misses nothing and may get
 * messages again (clients keep messages by id).
 */
export function parseSince(since: string): SyncCursor {
  if (/^\d{1,16}$/.test(since)) return { ingestId: 0, seq: 0, minTime: safe(Number(since)), resume: false };
  const cursor = /^u([0-9a-z]{1,11})\.([0-9a-z]{1,11})\.([0-9a-z]{1,11})$/.exec(since);
  if (cursor) return { ingestId: safe(parseInt(cursor[1]!, 36)), seq: safe(parseInt(cursor[2]!, 36)), minTime: safe(parseInt(cursor[3]!, 36)), resume: true };
  const d1Cursor = /^c([0-9a-z]{1,11})\.([0-9a-z]{1,11})$/.exec(since);
  if (d1Cursor) return { ingestId: 0, seq: 0, minTime: safe(parseInt(d1Cursor[2]!, 36)), resume: false };
  throw new ApiError("bad_request", "since must be 0, an epoch-ms time or a cursor");
}

function safe(n: number): number {
  if (!Number.isSafeInteger(n)) throw new ApiError("bad_request", "since must be 0, an epoch-ms time or a cursor");
  return n;
}

export const cursorOf = (c: Omit<SyncCursor, "resume">) => `u${c.ingestId.toString(36)}.${c.seq.toString(36)}.${c.minTime.toString(36)}`;

// Served by the caller's user object, which reads no D1: its index of references, resolved by
// the conversations on the page. Each message comes already encoded as its JSON, so the page is
// spliced, not re-encoded.
messages.get("/messages", requireAuth, async (c) => {
  const query = readQuery(c.req.url, SinceQuery);
  const cursor = parseSince(query.since);
  const userId = c.get("auth").userId;
  const page = unwrap(await userStub(c.env, userId).syncPage(userId, cursor, query.limit));
  return c.body(`{"messages":[${page.messages}],"cursor":${JSON.stringify(cursorOf(page.cursor))},"hasMore":${page.hasMore}}`, 200, {
    "content-type": "application/json",
  });
});
