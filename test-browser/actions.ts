// Message actions in the web client (docs/api.md, Message actions): edit, react, delete for
// everyone and delete for me from a message's menu, seen live by the other user.
import type { Locator, Page } from "playwright-core";
import { waitUntil, type Test } from "./harness.ts";
import { bubble, expectMessage, openConversation, openDirect, send, user } from "./pages.ts";

async function choose(page: Page, row: Locator, item: string, dialog?: string): Promise<void> {
  if (dialog !== undefined) page.once("dialog", (d) => void d.accept(dialog));
  await row.getByRole("button", { name: "Message actions" }).click();
  await page.getByRole("menuitem", { name: item }).click();
}

export const actionTests: Test[] = [
  {
    name: "message actions: edit, react, delete for everyone and delete for me, seen live by the other user",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const id = await openDirect(ann.page, bob.username);
      await send(ann.page, "helo wrold");
      await openConversation(bob.page, id);
      await expectMessage(bob.page, "helo wrold");

      await choose(ann.page, bubble(ann.page, "helo wrold").first(), "Edit", "hello world");
      await expectMessage(bob.page, "hello world");
      await bubble(bob.page, "hello world").locator(".edited").waitFor({ timeout: 15_000 });

      await choose(bob.page, bubble(bob.page, "hello world").first(), "React 👍");
      await bubble(ann.page, "hello world").locator(".reaction", { hasText: "👍 1" }).waitFor({ timeout: 15_000 });

      await choose(ann.page, bubble(ann.page, "hello world").first(), "Delete for everyone", "");
      for (const page of [ann.page, bob.page]) {
        await page.locator(".chat .deleted", { hasText: "This message was deleted" }).waitFor({ timeout: 15_000 });
        await waitUntil("the text gone", async () => (await bubble(page, "hello world").count()) === 0);
      }

      await send(bob.page, "only for me to forget");
      await expectMessage(ann.page, "only for me to forget");
      await choose(bob.page, bubble(bob.page, "only for me to forget").first(), "Delete for me");
      await waitUntil("hidden for Bob", async () => (await bubble(bob.page, "only for me to forget").count()) === 0);
      // Still there for Ann, after a reload too; gone for Bob after his.
      await bob.page.reload();
      await openConversation(bob.page, id);
      await bob.page.locator(".chat .deleted").waitFor({ timeout: 15_000 });
      await expectMessage(ann.page, "only for me to forget");
      if ((await bubble(bob.page, "only for me to forget").count()) !== 0) throw new Error("a hidden message came back after a reload");
    },
  },
];
