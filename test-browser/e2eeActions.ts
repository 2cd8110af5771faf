// Message actions in an E2EE conversation (docs/api.md, Message actions; docs/e2ee.md): edit,
// react, pin and a reply travel inside ciphertexts and each device applies them; delete for
// everyone goes to the server, which erases the ciphertext. Two users, and a second device of one
// of them signed in later and away while it all happens: live on the first two, by catching up on
// the later one; the server's copy holds no plaintext of any of it.
import type { Locator, Page } from "playwright-core";
import { newPage, waitUntil, type Test } from "./harness.ts";
import { DESKTOP, bubble, conversationIdOf, expectMessage, openConversation, send, session, user, signIn } from "./pages.ts";

async function encryptionReady(page: Page): Promise<void> {
  await page.getByRole("textbox", { name: "Message" }).waitFor();
  await waitUntil("end-to-end encryption set up on this device", async () => (await page.locator('[data-testid="e2ee-status"]').count()) === 0, 30_000);
}

async function choose(page: Page, row: Locator, item: string, dialog?: string): Promise<void> {
  if (dialog !== undefined) page.once("dialog", (d) => void d.accept(dialog));
  await row.getByRole("button", { name: "Message actions" }).click();
  await page.getByRole("menuitem", { name: item }).click();
}

/** The menu of a message offers "Unpin": it is pinned on this device. */
async function expectPinned(page: Page, text: string): Promise<void> {
  const row = bubble(page, text).first();
  await waitUntil(`"${text}" pinned`, async () => {
    await row.getByRole("button", { name: "Message actions" }).click();
    const pinned = (await page.getByRole("menuitem", { name: "Unpin" }).count()) === 1;
    await row.getByRole("button", { name: "Message actions" }).click();
    return pinned;
  }, 15_000, 500);
}

/** What a later device, or one back from time away, must show. */
async function expectFolded(page: Page): Promise<void> {
  await expectMessage(page, "hello world");
  const edited = bubble(page, "hello world").first();
  await edited.locator(".edited").waitFor({ timeout: 15_000 });
  await edited.locator(".reaction", { hasText: "👍 1" }).waitFor({ timeout: 15_000 });
  if ((await bubble(page, "helo wrold").count()) !== 0) throw new Error("the text before the edit still shows");
  const reply = bubble(page, "a reply to it").first();
  await reply.locator(".reply-quote", { hasText: "hello world" }).waitFor({ timeout: 15_000 });
  await page.locator(".chat .deleted", { hasText: "This message was deleted" }).waitFor({ timeout: 15_000 });
  if ((await bubble(page, "regrettable").count()) !== 0) throw new Error("a message deleted for everyone still shows its text");
  await expectPinned(page, "hello world");
}

export const e2eeActionsTests: Test[] = [
  {
    name: "E2EE message actions: edit, react, pin, a reply with its quote and delete for everyone, live and on a later device; the server holds no plaintext of them",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");

      // An encrypted direct chat.
      await ann.page.getByRole("button", { name: "New chat" }).click();
      await ann.page.getByRole("checkbox", { name: /End-to-end encrypted/ }).check();
      await ann.page.getByLabel("Find people by username").fill(bob.username);
      await ann.page.locator(`button.person[data-username="${bob.username}"]`).click({ timeout: 10_000 });
      const id = await conversationIdOf(ann.page);
      await encryptionReady(ann.page);
      await openConversation(bob.page, id);
      await encryptionReady(bob.page);

      // Bob signs in on a second browser later: that device joins the group, then goes away.
      const later = await newPage(ctx, DESKTOP);
      await signIn(later.page, bob.username);
      await openConversation(later.page, id);
      await encryptionReady(later.page);
      await send(ann.page, "before the actions");
      await expectMessage(later.page, "before the actions");
      await later.page.close();

      await send(ann.page, "helo wrold");
      await expectMessage(bob.page, "helo wrold");

      await choose(ann.page, bubble(ann.page, "helo wrold").first(), "Edit", "hello world");
      await expectMessage(bob.page, "hello world");
      await bubble(bob.page, "hello world").first().locator(".edited").waitFor({ timeout: 15_000 });
      await expectMessage(ann.page, "hello world");

      await choose(bob.page, bubble(bob.page, "hello world").first(), "React 👍");
      await bubble(ann.page, "hello world").first().locator(".reaction", { hasText: "👍 1" }).waitFor({ timeout: 15_000 });
      await bubble(bob.page, "hello world").first().locator(".reaction", { hasText: "👍 1" }).waitFor({ timeout: 15_000 });

      await choose(ann.page, bubble(ann.page, "hello world").first(), "Pin");
      await expectPinned(bob.page, "hello world");
      // The list's preview is the message, not the encrypted actions after it.
      for (const page of [ann.page, bob.page]) {
        const item = page.locator(`a.conv-item[data-conversation="${id}"]`);
        await waitUntil("the preview of the edited message", async () => (await item.textContent())?.includes("hello world"), 15_000);
      }

      // The pins list comes from what each device decrypted.
      const pinsButton = bob.page.getByRole("button", { name: "Pinned messages: 1" });
      await pinsButton.waitFor({ timeout: 15_000 });
      await pinsButton.click();
      await bob.page.locator(".pins-panel", { hasText: "hello world" }).waitFor({ timeout: 10_000 });
      await bob.page.getByRole("button", { name: "Close pinned messages" }).click();

      // A reply from the message's menu: its reference travels sealed.
      await choose(ann.page, bubble(ann.page, "hello world").first(), "Reply");
      await ann.page.locator(".composer-reply .quote-text", { hasText: "hello world" }).waitFor({ timeout: 5000 });
      await send(ann.page, "a reply to it");
      for (const page of [ann.page, bob.page]) await bubble(page, "a reply to it").first().locator(".reply-quote", { hasText: "hello world" }).waitFor({ timeout: 20_000 });

      // Delete for everyone: through the server, which erases the ciphertext.
      await send(bob.page, "regrettable");
      await expectMessage(ann.page, "regrettable");
      await choose(bob.page, bubble(bob.page, "regrettable").first(), "Delete for everyone", "");
      for (const page of [ann.page, bob.page]) {
        await page.locator(".chat .deleted", { hasText: "This message was deleted" }).waitFor({ timeout: 15_000 });
        await waitUntil("the deleted text gone", async () => (await bubble(page, "regrettable").count()) === 0);
      }

      // The later device comes back and catches up: the same result.
      const back = await later.context.newPage();
      await back.goto("/");
      await back.getByRole("heading", { name: "Chats" }).waitFor({ timeout: 15_000 });
      await openConversation(back, id);
      await encryptionReady(back);
      await expectFolded(back);
      // Bob's first device after a reload (its decrypted cache), the same again.
      await bob.page.reload();
      await encryptionReady(bob.page);
      await expectFolded(bob.page);

      // The actions are no messages: no bubble, no unread, not the list's preview.
      for (const page of [ann.page, back]) {
        const texts = await page.locator(".chat .msg-row .text").allTextContents();
        if (texts.some((t) => t.includes("targetSeq") || t.includes("Cannot decrypt this message"))) throw new Error(`an action shows as a message: ${texts.join(" | ")}`);
      }

      // The server's copy: ciphertexts, and one plaintext event (the delete), naming a seq only.
      // (Quoted forms: quotes never occur in base64url, so a ciphertext cannot match by chance.)
      const { token } = await session(bob.page);
      const raw = await bob.page.evaluate(
        async ([c, t]) => (await fetch(`/conversations/${encodeURIComponent(c)}/messages?after=0&limit=500`, { headers: { authorization: `Bearer ${t}` } })).text(),
        [id, token] as const,
      );
      for (const secret of ["helo wrold", "hello world", "👍", "a reply to it", "regrettable", "replyToSeq", '\\"edit\\"', '\\"react\\"', '\\"pin\\"', '"edit"', '"react"', '"pin"']) {
        if (raw.includes(secret)) throw new Error(`the server's history holds ${secret}`);
      }
      const { messages } = JSON.parse(raw) as { messages: { kind: string; body: string | null; replyToSeq?: number }[] };
      const events = messages.filter((m) => m.kind === "action");
      if (events.length !== 1 || !/^\{"type":"delete","targetSeq":\d+\}$/.test(events[0]!.body ?? "")) throw new Error(`expected one delete event, got ${JSON.stringify(events)}`);
      if (messages.some((m) => m.replyToSeq !== undefined)) throw new Error("a reply's reference is in the clear");
      // The edit, the reaction and the pin are three more encrypted messages like any other.
      const encrypted = messages.filter((m) => m.kind === "encrypted");
      if (encrypted.length !== 7 || encrypted.some((m) => m.body !== null)) throw new Error(`expected 7 encrypted messages without a body, got ${messages.map((m) => m.kind).join(",")}`);
    },
  },
];
