// Message actions in the web client (docs/api.md, Message actions): edit, react, delete for
// everyone and delete for me from a message's menu, seen live by the other user.
import type { BrowserContext, Locator, Page } from "playwright-core";
import { waitUntil, type Ctx, type Test } from "./harness.ts";

/** What these tests use of run.ts's page helpers (passed in: run.ts imports this module). */
export interface ActionHelpers {
  user(ctx: Ctx, name: string): Promise<{ context: BrowserContext; page: Page; username: string }>;
  openDirect(page: Page, username: string): Promise<string>;
  openConversation(page: Page, id: string): Promise<void>;
  send(page: Page, text: string): Promise<void>;
  expectMessage(page: Page, text: string): Promise<void>;
  bubble(page: Page, text: string): Locator;
}

async function choose(page: Page, row: Locator, item: string, dialog?: string): Promise<void> {
  if (dialog !== undefined) page.once("dialog", (d) => void d.accept(dialog));
  await row.getByRole("button", { name: "Message actions" }).click();
  await page.getByRole("menuitem", { name: item }).click();
}

export function actionTests(h: ActionHelpers): Test[] {
  return [
    {
      name: "message actions: edit, react, delete for everyone and delete for me, seen live by the other user",
      fn: async (ctx) => {
        const ann = await h.user(ctx, "Ann");
        const bob = await h.user(ctx, "Bob");
        const id = await h.openDirect(ann.page, bob.username);
        await h.send(ann.page, "helo wrold");
        await h.openConversation(bob.page, id);
        await h.expectMessage(bob.page, "helo wrold");

        await choose(ann.page, h.bubble(ann.page, "helo wrold").first(), "Edit", "hello world");
        await h.expectMessage(bob.page, "hello world");
        await h.bubble(bob.page, "hello world").locator(".edited").waitFor({ timeout: 15_000 });

        await choose(bob.page, h.bubble(bob.page, "hello world").first(), "React 👍");
        await h.bubble(ann.page, "hello world").locator(".reaction", { hasText: "👍 1" }).waitFor({ timeout: 15_000 });

        await choose(ann.page, h.bubble(ann.page, "hello world").first(), "Delete for everyone", "");
        for (const page of [ann.page, bob.page]) {
          await page.locator(".chat .deleted", { hasText: "This message was deleted" }).waitFor({ timeout: 15_000 });
          await waitUntil("the text gone", async () => (await h.bubble(page, "hello world").count()) === 0);
        }

        await h.send(bob.page, "only for me to forget");
        await h.expectMessage(ann.page, "only for me to forget");
        await choose(bob.page, h.bubble(bob.page, "only for me to forget").first(), "Delete for me");
        await waitUntil("hidden for Bob", async () => (await h.bubble(bob.page, "only for me to forget").count()) === 0);
        // Still there for Ann, after a reload too; gone for Bob after his.
        await bob.page.reload();
        await h.openConversation(bob.page, id);
        await bob.page.locator(".chat .deleted").waitFor({ timeout: 15_000 });
        await h.expectMessage(ann.page, "only for me to forget");
        if ((await h.bubble(bob.page, "only for me to forget").count()) !== 0) throw new Error("a hidden message came back after a reload");
      },
    },
  ];
}
