// Browser tests of membership and what it lets a member read: removed and added back while the
// group is open, a former member's history, what a member added later sees, thread replies in
// the list, and signing out with messages still waiting (offline).
import type { Page } from "playwright-core";
import { waitUntil, type Test } from "./harness.ts";
import { bubble, createGroup, expectMessage, openConversation, send, session, user } from "./pages.ts";

/** Ann adds `username` from the group info panel (the chat is open on her side). */
async function addMember(page: Page, username: string, name: string): Promise<void> {
  await page.getByRole("button", { name: "Group info" }).click();
  await page.getByLabel("Add people").fill(username);
  await page.locator(`.side-panel button.person[data-username="${username}"]`).click();
  await page.getByRole("button", { name: "Add 1 to group" }).click();
  await page.getByRole("button", { name: "Close", exact: true }).click();
  await page.locator(".chat .system-msg", { hasText: new RegExp(`added ${name}$`) }).last().waitFor({ timeout: 15_000 });
}

async function removeMember(page: Page, name: string): Promise<void> {
  await page.getByRole("button", { name: "Group info" }).click();
  await page.getByRole("button", { name: `Remove ${name}` }).click();
  await page.getByRole("alertdialog").getByRole("button", { name: "Remove", exact: true }).click();
  await page.getByRole("button", { name: "Close", exact: true }).click();
  await page.locator(".chat .system-msg", { hasText: `removed ${name}` }).last().waitFor({ timeout: 15_000 });
}

/** The server's answer to GET /me for a token, asked from outside the browser. */
async function meStatus(origin: string, token: string): Promise<number> {
  return (await fetch(`${origin}/me`, { headers: { authorization: `Bearer ${token}` } })).status;
}

export const membershipTests: Test[] = [
  {
    name: "membership: removed while the group is open, the history stays with why and no composer; added back, it is live again without what was said meanwhile",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const id = await createGroup(ann.page, "Book club", bob.username);
      await send(ann.page, "First chapter tonight");
      await openConversation(bob.page, id);
      await expectMessage(bob.page, "First chapter tonight");

      await removeMember(ann.page, "Bob");
      // Bob keeps what he could read, and is told why he can no longer write.
      await bob.page.locator(".removed-note", { hasText: "You were removed from this group." }).waitFor({ timeout: 15_000 });
      await expectMessage(bob.page, "First chapter tonight");
      if ((await bob.page.getByRole("textbox", { name: "Message" }).count()) !== 0) throw new Error("a composer for a removed member");
      if ((await bob.page.locator(".loading-messages").count()) !== 0) throw new Error("the removed member's pane is loading");

      // Reloaded, the group and its history are still there.
      await bob.page.reload();
      await bob.page.locator(`a.conv-item[data-conversation="${id}"]`).waitFor({ timeout: 15_000 });
      await expectMessage(bob.page, "First chapter tonight");
      await bob.page.locator(".chat .system-msg", { hasText: "removed you" }).waitFor({ timeout: 15_000 });
      await bob.page.locator(".removed-note", { hasText: "You were removed from this group." }).waitFor();

      // What is said while he is out, he never sees; added back, the open chat is live again.
      await send(ann.page, "Said while Bob was out");
      await expectMessage(ann.page, "Said while Bob was out");
      await addMember(ann.page, bob.username, "Bob");
      await bob.page.getByRole("textbox", { name: "Message" }).waitFor({ timeout: 15_000 });
      await send(ann.page, "Welcome back, Bob");
      await expectMessage(bob.page, "Welcome back, Bob");
      await send(bob.page, "Glad to be back");
      await expectMessage(ann.page, "Glad to be back");
      if ((await bubble(bob.page, "Said while Bob was out").count()) !== 0) throw new Error("a message from while Bob was out is shown");
      const { token } = await session(bob.page);
      const history = await bob.page.evaluate(
        async ([cid, t]: readonly [string, string]) => {
          const res = await fetch(`/conversations/${encodeURIComponent(cid)}/messages?after=0&limit=500`, { headers: { authorization: `Bearer ${t}` } });
          return ((await res.json()) as { messages: { body: string | null }[] }).messages.map((m) => m.body);
        },
        [id, token] as const,
      );
      if (history.includes("Said while Bob was out") || history.includes("First chapter tonight")) throw new Error(`the server gave Bob more than his span: ${JSON.stringify(history)}`);
      if ((await bob.page.locator(".removed-note").count()) !== 0) throw new Error("still shown as removed");
    },
  },
  {
    name: "membership: a member added later sees nothing from before, and has nothing unread from then",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const cy = await user(ctx, "Cy");
      const id = await createGroup(ann.page, "Planning", bob.username);
      await send(ann.page, "Secret from before Cy");
      await openConversation(bob.page, id);
      await expectMessage(bob.page, "Secret from before Cy");
      const tick = () => bubble(ann.page, "Secret from before Cy").locator(".ticks").getAttribute("data-tick");
      await waitUntil("Ann's message read by Bob", async () => (await tick()) === "read");
      await addMember(ann.page, cy.username, "Cy");
      // Cy counts as having read what came before her: Ann's tick does not turn back (her receipt
      // comes before the message that added her, and the member list with the answer to the add).
      await ann.page.getByTestId("chat-subtitle").filter({ hasText: "3 members" }).waitFor();
      if ((await tick()) !== "read") throw new Error(`Ann's earlier message turned ${await tick()} when Cy joined`);
      await send(ann.page, "Hello Cy");
      const item = cy.page.locator(`a.conv-item[data-conversation="${id}"]`);
      await item.waitFor({ timeout: 20_000 });
      await waitUntil("one unread for Cy", async () => (await item.locator(".badge").textContent()) === "1", 20_000);
      await openConversation(cy.page, id);
      await expectMessage(cy.page, "Hello Cy");
      await cy.page.locator(".chat .system-msg", { hasText: "added you" }).waitFor();
      if ((await bubble(cy.page, "Secret from before Cy").count()) !== 0) throw new Error("Cy sees a message from before she joined");
    },
  },
  {
    name: "membership: thread replies are counted apart in the list and are not its preview",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const id = await createGroup(ann.page, "Threads", bob.username);
      await send(ann.page, "The root question");
      await bubble(ann.page, "The root question").getByRole("button", { name: "Reply in thread" }).click();
      const panel = ann.page.getByRole("complementary", { name: "Thread" });
      await panel.waitFor();
      for (const text of ["First answer", "Second answer"]) {
        await send(ann.page, text, "Reply in thread");
        await expectMessage(ann.page, text, ".thread-panel");
      }
      const item = bob.page.locator(`a.conv-item[data-conversation="${id}"]`);
      await item.waitFor({ timeout: 20_000 });
      await waitUntil("the thread badge", async () => ((await item.locator(".thread-badge").textContent()) ?? "").trim() === "2", 20_000);
      await waitUntil("one unread", async () => (await item.locator(".badge").textContent()) === "1");
      const preview = (await item.locator(".conv-preview").textContent()) ?? "";
      if (!preview.includes("The root question")) throw new Error(`the preview is not the top-level message: ${preview}`);
      // After a reload the server's counts say the same.
      await bob.page.reload();
      await waitUntil("the thread badge after a reload", async () => ((await item.locator(".thread-badge").textContent()) ?? "").trim() === "2", 20_000);
      if ((await item.locator(".badge").textContent()) !== "1") throw new Error("the unread badge counts the replies");
    },
  },
  {
    name: "sign-out offline: warns with the count of waiting messages, and the token is revoked when the network returns",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const id = await createGroup(ann.page, "Offline", bob.username);
      await send(ann.page, "Sent online");
      await expectMessage(ann.page, "Sent online");
      const { token } = await session(ann.page);
      await ann.context.setOffline(true);
      await ann.page.getByText("You are offline").first().waitFor({ timeout: 15_000 });
      await send(ann.page, "Waiting one");
      await send(ann.page, "Waiting two");
      await ann.page.getByRole("button", { name: "Settings", exact: true }).click();
      await ann.page.getByRole("button", { name: "Sign out" }).click();
      const warning = ann.page.getByRole("alertdialog", { name: "Confirm signing out" });
      await warning.getByText("2 messages are still waiting to be sent and will be lost.").waitFor();
      await warning.getByText("signed out of the server when it is back online").waitFor();
      // Cancel keeps everything.
      await warning.getByRole("button", { name: "Cancel" }).click();
      await ann.page.getByRole("button", { name: "Sign out" }).click();
      await ann.page.getByRole("button", { name: "Sign out anyway" }).click();
      await ann.page.getByRole("heading", { name: "Sign in to Edge Chat" }).waitFor({ timeout: 15_000 });
      // The server could not be told yet: the token still works until the network returns.
      if ((await meStatus(ctx.server.origin, token)) !== 200) throw new Error("the token died without the server being told");
      await ann.context.setOffline(false);
      await waitUntil("the token revoked", async () => (await meStatus(ctx.server.origin, token)) === 401, 20_000);
      await waitUntil("nothing left to revoke", () => ann.page.evaluate(() => localStorage.getItem("edge-chat:revoke") === null));
      // The waiting messages never reached Bob.
      await openConversation(bob.page, id);
      await expectMessage(bob.page, "Sent online");
      if ((await bubble(bob.page, "Waiting one").count()) !== 0) throw new Error("a message sent after signing out");
    },
  },
];
