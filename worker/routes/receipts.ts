// Receipts: a member's delivered and read watermarks in one conversation. The conversation's object
// keeps them (they only move forward); the socket's `read` and `delivered` frames do the same.
import { ReceiptBody } from "../../protocol";
import { conversationStub } from "../../kernel/objects";
import { newApp, requireAuth } from "../app";
import { unwrap } from "../lib/apiError";
import { readJson } from "../lib/validate";

export const receipts = newApp();
receipts.post("/:id/receipts", requireAuth, async (c) => {
  const body = await readJson(c.req.raw, ReceiptBody, c.get("settings").maxRequestBytes);
  const result = unwrap(await conversationStub(c.env, c.req.param("id")).updateReceipt(c.get("auth").userId, body, Date.now()));
  return c.json({ receipt: result.receipt });
});

receipts.get("/:id/receipts", requireAuth, async (c) => {
  const result = unwrap(await conversationStub(c.env, c.req.param("id")).receipts(c.get("auth").userId));
  return c.json({ receipts: result.receipts });
});
