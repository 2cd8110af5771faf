// Browser tests of conversation settings: mute, pin and archive chosen in a chat's info panel on
// one device are seen live on the same user's second device (the marks, the order, the Archived
// list); there a muted chat raises no notification while the page is hidden, but a message that
// mentions the user does. Every new screen is checked by axe.
import type { Page } from "playwright-core";
import { newPage, waitUntil, type Test } from "./harness.ts";
import { auditor } from "./accessibility.ts";
import { DESKTOP, createGroup, openConversation, openDirect, send, session, shot, user, focusedName, signIn } from "./pages.ts";

const row = (page: Page, id: string) => page.locator(`.conv-item[data-conversation="${id}"]`);
const firstRowId = (page: Page) => page.locator(".conv-item[data-conversation]").first().getAttribute("data-conversation", { timeout: 5000 });
async function expectFlag(page: Page, id: string, flag: "muted" | "pinned", on: boolean): Promise<void> {
  await waitUntil(`${flag} ${on ? "shown" : "gone"} on ${id}`, async () => ((await row(page, id).locator(`[data-flag="${flag}"]`).count()) === 1) === on, 15_000);
}

export const prefsTests: Test[] = [
  {
    name: "conversation settings: mute, pin and archive on one device reach the user's second device live; a muted chat notifies only a mention",
    fn: async (ctx) => {
      const audit = auditor();
      await audit.around(async () => {
        const ann = await user(ctx, "Ann");
        const bob = await user(ctx, "Bob");
        const dm = await openDirect(ann.page, bob.username);
        await send(ann.page, "hello Bob");
        const groupId = await createGroup(ann.page, "Book club", bob.username);
        await send(ann.page, "welcome");
        await openConversation(ann.page, dm);

        const phone = await newPage(ctx, DESKTOP);
        await signIn(phone.page, ann.username);
        await row(phone.page, dm).waitFor({ timeout: 15_000 });
        await waitUntil("the group first, by activity", async () => (await firstRowId(phone.page)) === groupId, 15_000);

        // Mute from the contact's info panel; the focus moves to what replaced the pressed button.
        const page = ann.page;
        await page.getByRole("button", { name: "Contact info" }).click();
        const panel = page.getByRole("complementary", { name: "Contact info" });
        await panel.getByRole("button", { name: "Mute always" }).click();
        await panel.getByTestId("muted-state").filter({ hasText: "Muted" }).waitFor({ timeout: 10_000 });
        await waitUntil("focus on Unmute", async () => (await focusedName(page)) === "Unmute", 5000);
        await expectFlag(phone.page, dm, "muted", true);
        await waitUntil("the row's name to say muted", async () => ((await row(phone.page, dm).getAttribute("aria-label")) ?? "").includes("muted"), 5000);
        await audit.check(page, "contact info with a muted chat");

        // Unmute, then mute for 8 hours: the panel says until when; the phone follows each change.
        await panel.getByRole("button", { name: "Unmute" }).click();
        await expectFlag(phone.page, dm, "muted", false);
        await waitUntil("focus back on the mute choices", async () => (await focusedName(page)) === "Mute for 8 hours", 5000);
        await page.keyboard.press("Enter");
        await panel.getByTestId("muted-state").filter({ hasText: "Muted until" }).waitFor({ timeout: 10_000 });
        await expectFlag(phone.page, dm, "muted", true);

        // Pin: the older chat goes to the top on both devices.
        await panel.getByRole("button", { name: "Pin to top" }).click();
        await panel.getByRole("button", { name: "Unpin" }).waitFor({ timeout: 10_000 });
        await expectFlag(phone.page, dm, "pinned", true);
        await waitUntil("the pinned chat first on the phone", async () => (await firstRowId(phone.page)) === dm, 10_000);
        await waitUntil("the pinned chat first here", async () => (await firstRowId(page)) === dm, 10_000);
        await shot(page, "desktop-chat-settings");

        // Archive: it leaves the phone's main list for the Archived row, which opens a list of its own.
        await panel.getByRole("button", { name: "Archive", exact: true }).click();
        await panel.getByRole("button", { name: "Unarchive" }).waitFor({ timeout: 10_000 });
        const archivedRow = phone.page.getByRole("button", { name: /^Archived 1 chat$/ });
        await archivedRow.waitFor({ timeout: 10_000 });
        await row(phone.page, dm).waitFor({ state: "detached", timeout: 10_000 });
        await audit.check(phone.page, "the list with an Archived row");
        await archivedRow.focus();
        await phone.page.keyboard.press("Enter");
        await phone.page.getByRole("heading", { name: "Archived" }).waitFor({ timeout: 5000 });
        await row(phone.page, dm).waitFor({ timeout: 5000 });
        if ((await row(phone.page, groupId).count()) !== 0) throw new Error("the archived list shows a chat that is not archived");
        await waitUntil("focus on Back to chats", async () => (await focusedName(phone.page)) === "Back to chats", 5000);
        await audit.check(phone.page, "the Archived list");
        await phone.page.keyboard.press("Enter");
        await row(phone.page, groupId).waitFor({ timeout: 5000 });

        // Unarchived, it is back in the main list, still pinned first.
        await panel.getByRole("button", { name: "Unarchive" }).click();
        await row(phone.page, dm).waitFor({ timeout: 10_000 });
        await waitUntil("the pinned chat first again", async () => (await firstRowId(phone.page)) === dm, 10_000);
        if ((await archivedRow.count()) !== 0) throw new Error("the Archived row stayed with nothing archived");

        // Notifications on the phone, hidden: every notification shown is recorded.
        await phone.context.grantPermissions(["notifications"], { origin: ctx.server.origin });
        await phone.page.waitForFunction(() => navigator.serviceWorker.controller !== null, undefined, { timeout: 15_000 });
        await phone.page.evaluate(() => {
          const shown: string[] = [];
          Object.assign(window, { shownBodies: shown });
          const original = ServiceWorkerRegistration.prototype.showNotification;
          ServiceWorkerRegistration.prototype.showNotification = function (title, options) {
            shown.push(options?.body ?? "");
            return original.call(this, title, options);
          };
          Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
          document.dispatchEvent(new Event("visibilitychange"));
        });
        const shownBodies = () => phone.page.evaluate(() => ("shownBodies" in window && Array.isArray(window.shownBodies) ? window.shownBodies.map(String) : []));

        // Ann's laptop looks at another chat, so nothing reads the muted one's messages.
        await openConversation(page, groupId);
        await openConversation(bob.page, dm);
        await send(bob.page, "a quiet message");
        // The phone has it (its unread count), and raised nothing for it.
        await waitUntil("the unread count on the phone", async () => (await row(phone.page, dm).locator(".badge").textContent()) === "1", 15_000);
        // A mention is notified although the chat is muted (Bob's client has no mention picker: the API).
        const [bobSession, annSession] = [await session(bob.page), await session(ann.page)];
        const res = await fetch(`${ctx.server.origin}/send`, {
          method: "POST",
          headers: { authorization: `Bearer ${bobSession.token}`, "content-type": "application/json" },
          body: JSON.stringify({ conversationId: dm, clientMsgId: `mention-${Date.now()}`, body: "Ann, look at this", mentions: [annSession.userId] }),
        });
        if (res.status !== 201) throw new Error(`POST /send: ${res.status} ${await res.text()}`);
        await waitUntil("the mention notified", async () => (await shownBodies()).includes("Ann, look at this"), 15_000);
        const bodies = await shownBodies();
        if (bodies.includes("a quiet message")) throw new Error(`a muted chat raised a notification: ${JSON.stringify(bodies)}`);
        await waitUntil("the unread count counting both", async () => (await row(phone.page, dm).locator(".badge").textContent()) === "2", 15_000);
      });
    },
  },
];
