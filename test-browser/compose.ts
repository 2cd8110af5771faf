// Replies, mentions, forwards, pins and search in the web client (docs/web.md, Message actions),
// between two users of a group: the other user sees each live, a quote, a pin and a search result
// open the message in context (older history loaded down to it), and the message menu works from
// the keyboard. The new screens are axe-checked.
import type { Page } from "playwright-core";
import { auditor } from "./accessibility.ts";
import { newPage, sleep, waitUntil, type Test } from "./harness.ts";
import { bubble, createGroup, expectMessage, focusedName, openConversation, openDirect, send, session, shot, signIn, user } from "./pages.ts";

/** Messages sent over REST with the page's own token, paced under the send rate limit. */
async function sendMany(page: Page, conversationId: string, bodies: string[]): Promise<void> {
  const { token } = await session(page);
  for (const body of bodies) {
    const status = await page.evaluate(
      async ([id, t, b]) => {
        const res = await fetch("/send", { method: "POST", headers: { authorization: `Bearer ${t}`, "content-type": "application/json" }, body: JSON.stringify({ conversationId: id, clientMsgId: crypto.randomUUID(), body: b }) });
        return res.status;
      },
      [conversationId, token, body] as const,
    );
    if (status !== 201) throw new Error(`a filler message was answered ${status}`);
    await sleep(70);
  }
}

const seqOf = async (page: Page, text: string) => Number(await bubble(page, text).first().getAttribute("data-seq"));

async function expectHighlighted(page: Page, seq: number): Promise<void> {
  await page.locator(`.chat .msg-row.highlight[data-seq="${seq}"]`).waitFor({ timeout: 15_000 });
}

export const composeTests: Test[] = [
  {
    name: "compose: reply, mention, forward, pins, search and the message menu's keyboard, between two users of a group",
    fn: async (ctx) => {
      const audit = auditor();
      await audit.around(async () => {
        const ann = await user(ctx, "Ann");
        const bob = await user(ctx, "Bob");
        const direct = await openDirect(ann.page, bob.username);
        const group = await createGroup(ann.page, "Crew", bob.username);
        await send(ann.page, "the very first message");
        await expectMessage(ann.page, "the very first message");
        // More than a page of history after it, so a jump to it has older pages to load.
        await sendMany(ann.page, group, Array.from({ length: 55 }, (_, i) => `filler ${i + 1}`));
        await expectMessage(ann.page, "filler 55");
        await openConversation(bob.page, group);
        await expectMessage(bob.page, "filler 55");
        const firstSeq = await seqOf(bob.page, "the very first message");

        // The menu from the keyboard: the first item takes the focus, arrows move and wrap,
        // Escape closes it and gives the focus back to its button.
        const firstRow = bubble(bob.page, "the very first message").first();
        await firstRow.getByRole("button", { name: "Message actions" }).click();
        await waitUntil("focus on Reply", async () => (await focusedName(bob.page)) === "Reply", 5000);
        await bob.page.keyboard.press("ArrowDown");
        await waitUntil("focus on Forward", async () => (await focusedName(bob.page)) === "Forward", 5000);
        await bob.page.keyboard.press("ArrowUp");
        await bob.page.keyboard.press("ArrowUp");
        await waitUntil("focus on the last item", async () => (await focusedName(bob.page)) === "Delete for me", 5000);
        await bob.page.keyboard.press("Escape");
        await bob.page.getByRole("menu").waitFor({ state: "detached", timeout: 5000 });
        await waitUntil("focus back on the menu button", () => firstRow.getByRole("button", { name: "Message actions" }).evaluate((el) => el === document.activeElement), 5000);

        // Reply: the composer quotes it, the reply carries the quote, live at Ann's.
        await firstRow.getByRole("button", { name: "Message actions" }).click();
        await bob.page.getByRole("menuitem", { name: "Reply" }).click();
        await bob.page.locator(".composer-reply .quote-text", { hasText: "the very first message" }).waitFor({ timeout: 5000 });
        await send(bob.page, "a reply to it");
        await bob.page.locator(".composer-reply").waitFor({ state: "detached", timeout: 5000 });
        await expectMessage(ann.page, "a reply to it");
        await bubble(ann.page, "a reply to it").locator(".reply-quote .quote-text", { hasText: "the very first message" }).waitFor({ timeout: 15_000 });
        await shot(ann.page, "desktop-reply");

        // On a device that holds only the latest page, the quote loads older history down to
        // the original, scrolls to it and highlights it.
        const { page: ann2 } = await newPage(ctx);
        await signIn(ann2, ann.username);
        await openConversation(ann2, group);
        await expectMessage(ann2, "a reply to it");
        if ((await ann2.locator(`.chat .msg-row[data-seq="${firstSeq}"]`).count()) !== 0) throw new Error("the original was already loaded: the jump would load nothing");
        await bubble(ann2, "a reply to it").locator(".reply-quote").click();
        await expectHighlighted(ann2, firstSeq);
        await ann2.locator(`.chat .msg-row[data-seq="${firstSeq}"]`).evaluate((el) => {
          const box = el.getBoundingClientRect();
          const list = el.closest(".messages")!.getBoundingClientRect();
          if (box.bottom < list.top || box.top > list.bottom) throw new Error("the original is not on screen");
        });

        // A mention through the autocomplete, with the keyboard only.
        const box = ann.page.getByRole("textbox", { name: "Message" });
        await box.click();
        await box.pressSequentially("hey @Bo");
        const list = ann.page.getByRole("listbox", { name: "Members to mention" });
        await list.waitFor({ timeout: 5000 });
        await ann.page.getByRole("option", { name: "Bob" }).waitFor();
        await audit.check(ann.page, "mention autocomplete open");
        await box.press("ArrowDown");
        await box.press("Escape");
        await list.waitFor({ state: "detached", timeout: 5000 });
        await box.pressSequentially("b");
        await list.waitFor({ timeout: 5000 });
        await box.press("Enter");
        await list.waitFor({ state: "detached", timeout: 5000 });
        if ((await box.inputValue()) !== "hey @Bob ") throw new Error(`the pick inserted "${await box.inputValue()}"`);
        await box.pressSequentially("look at this");
        await box.press("Enter");
        await expectMessage(bob.page, "hey @Bob look at this");
        await bubble(bob.page, "hey @Bob look at this").locator(".mention", { hasText: "@Bob" }).waitFor({ timeout: 15_000 });
        if (!(await bubble(bob.page, "hey @Bob look at this").first().evaluate((el) => el.classList.contains("mentions-me")))) throw new Error("the mention of Bob is not marked for him");

        // Forward into the direct chat: the dialog takes the focus, finds the chat by name, and
        // gives the focus back to the menu's button as it closes.
        const menuButton = bubble(ann.page, "the very first message").first().getByRole("button", { name: "Message actions" });
        await menuButton.click();
        await ann.page.getByRole("menuitem", { name: "Forward" }).click();
        const dialog = ann.page.getByRole("dialog", { name: "Forward message" });
        await dialog.waitFor({ timeout: 10_000 });
        await waitUntil("focus in the dialog's search", () => dialog.getByLabel("Search conversations").evaluate((el) => el === document.activeElement), 5000);
        await ann.page.keyboard.press("Escape");
        await dialog.waitFor({ state: "detached", timeout: 5000 });
        await waitUntil("focus back on the menu button", () => menuButton.evaluate((el) => el === document.activeElement), 5000);
        await menuButton.click();
        await ann.page.getByRole("menuitem", { name: "Forward" }).click();
        await dialog.waitFor({ timeout: 10_000 });
        await dialog.getByLabel("Search conversations").fill("Bob");
        await dialog.locator(`[data-conversation="${group}"]`).waitFor({ state: "detached", timeout: 5000 });
        await dialog.locator(`[data-conversation="${direct}"] input`).check();
        await audit.check(ann.page, "forward dialog");
        await dialog.getByRole("button", { name: "Forward", exact: true }).click();
        await dialog.waitFor({ state: "detached", timeout: 5000 });
        await openConversation(bob.page, direct);
        await expectMessage(bob.page, "the very first message");
        await bubble(bob.page, "the very first message").locator(".forwarded", { hasText: "Forwarded" }).waitFor({ timeout: 15_000 });

        // Pins: Bob pins the reply; Ann's header offers the list live; a pin opens the message.
        await openConversation(bob.page, group);
        await bubble(bob.page, "a reply to it").first().getByRole("button", { name: "Message actions" }).click();
        await bob.page.getByRole("menuitem", { name: "Pin" }).click();
        const pinsButton = ann.page.getByRole("button", { name: "Pinned messages: 1" });
        await pinsButton.waitFor({ timeout: 15_000 });
        await pinsButton.click();
        const pins = ann.page.getByRole("complementary", { name: "Pinned messages" });
        await pins.locator(".pin-item", { hasText: "a reply to it" }).waitFor({ timeout: 10_000 });
        await audit.check(ann.page, "pins list");
        await pins.locator(".pin-item").first().click();
        await expectHighlighted(ann.page, await seqOf(ann.page, "a reply to it"));
        await bubble(bob.page, "a reply to it").first().getByRole("button", { name: "Message actions" }).click();
        await bob.page.getByRole("menuitem", { name: "Unpin" }).click();
        await pins.getByText("No pinned messages.").waitFor({ timeout: 15_000 });
        await pinsButton.waitFor({ state: "detached", timeout: 15_000 });
        await ann.page.getByRole("button", { name: "Close pinned messages" }).click();

        // Search across every conversation from the sidebar: marked snippets, a result opens the
        // conversation at that message.
        await bob.page.getByRole("button", { name: "Search messages" }).click();
        const search = bob.page.getByRole("searchbox", { name: "Search messages" });
        await search.fill("very fir");
        const result = bob.page.locator(".search-result", { hasText: "very first" });
        await waitUntil("two results (the group's and the forward)", async () => (await result.count()) === 2, 15_000);
        const marked = await bob.page.locator(".search-result mark").allTextContents();
        if (!marked.includes("very") || !marked.includes("first")) throw new Error(`marked: ${marked.join(", ")}`);
        await audit.check(bob.page, "search results");
        await shot(bob.page, "desktop-search");
        await bob.page.locator(`.search-result`, { hasText: "Crew" }).first().click();
        await waitUntil("the group open", () => bob.page.url().includes(`/c/${encodeURIComponent(group)}`), 10_000);
        await expectHighlighted(bob.page, firstSeq);

        // Search in one conversation, from its header.
        await bob.page.getByRole("button", { name: "Search in this conversation" }).click();
        await bob.page.getByRole("searchbox", { name: "Search in this conversation" }).fill("filler 3");
        const inOne = bob.page.locator(".search-panel .search-result", { hasText: "filler 3" }).first();
        await inOne.waitFor({ timeout: 15_000 });
        await audit.check(bob.page, "search in a conversation");
        const seq = Number(await inOne.getAttribute("data-seq"));
        await inOne.click();
        await expectHighlighted(bob.page, seq);
        await bob.page.getByRole("button", { name: "Close search" }).click();

        // The original deleted for everyone: the quote says so (a reference, not a copy).
        ann.page.once("dialog", (d) => void d.accept());
        await bubble(ann.page, "the very first message").first().getByRole("button", { name: "Message actions" }).click();
        await ann.page.getByRole("menuitem", { name: "Delete for everyone" }).click();
        await bubble(bob.page, "a reply to it").locator(".reply-quote .quote-text", { hasText: "This message was deleted" }).waitFor({ timeout: 15_000 });
      });
    },
  },
];
