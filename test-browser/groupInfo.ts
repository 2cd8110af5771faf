// Browser tests of group settings and the profile (docs/web.md): an admin renames and describes a
// group and makes a member an admin, seen live by that member; removing a member asks first in a
// dialog that takes the focus, cancels on Escape and gives the focus back; a name and photo set in
// Settings show to another user. The new screens are checked with axe.
import type { Page } from "playwright-core";
import { auditor } from "./accessibility.ts";
import { waitUntil, type Test } from "./harness.ts";
import { createGroup, drawPng, openConversation, openDirect, shot, user } from "./pages.ts";

const systemLine = (page: Page, text: string) => page.locator(".chat .system-msg", { hasText: text }).last();

const focusedIn = (page: Page, selector: string) => page.evaluate((sel) => !!document.activeElement?.closest(sel), selector);

/** Whether the avatar under `selector` shows a photo that loaded. */
const photoShown = (page: Page, selector: string) =>
  page.evaluate((sel) => {
    const img = document.querySelector<HTMLImageElement>(`${sel} .avatar.has-photo img.avatar-photo`);
    return !!img && img.complete && img.naturalWidth > 0;
  }, selector);

export const groupInfoTests: Test[] = [
  {
    name: "group info: an admin renames and describes the group and makes a member an admin, seen live; removing a member asks first",
    fn: async (ctx) => {
      const audit = auditor();
      await audit.around(async () => {
        const ann = await user(ctx, "Ann");
        const bob = await user(ctx, "Bob");
        const cy = await user(ctx, "Cy");
        const id = await createGroup(ann.page, "Book club", bob.username);
        // Cy joins from the info panel, as an admin adds anyone.
        await ann.page.getByRole("button", { name: "Group info" }).click();
        await ann.page.getByLabel("Add people").fill(cy.username);
        await ann.page.locator(`.side-panel button.person[data-username="${cy.username}"]`).click();
        await ann.page.getByRole("button", { name: "Add 1 to group" }).click();
        await systemLine(ann.page, "You added Cy").waitFor({ timeout: 15_000 });
        await openConversation(bob.page, id);
        await bob.page.getByRole("button", { name: "Group info" }).click();
        // A member has nothing to edit.
        await bob.page.getByRole("heading", { name: "Group info" }).waitFor();
        if ((await bob.page.getByRole("button", { name: "Edit name and description" }).count()) !== 0) throw new Error("a member is offered to edit the group");
        if ((await bob.page.getByRole("button", { name: /^Make admin: / }).count()) !== 0) throw new Error("a member is offered to make admins");

        // Ann renames and describes the group.
        await ann.page.getByRole("button", { name: "Edit name and description" }).click();
        await waitUntil("focus in the group name", () => ann.page.getByRole("textbox", { name: "Group name" }).evaluate((el) => el === document.activeElement), 5000);
        await ann.page.getByRole("textbox", { name: "Group name" }).fill("Hill walkers");
        await ann.page.getByLabel(/Description/).fill("Sundays, weather permitting");
        await audit.check(ann.page, "group info editing the name and description");
        await ann.page.getByRole("button", { name: "Save", exact: true }).click();
        await systemLine(ann.page, "You renamed the group to “Hill walkers”").waitFor({ timeout: 15_000 });

        // Bob sees it live: the sentences, the header, the open panel's name and description.
        await systemLine(bob.page, "Ann renamed the group to “Hill walkers”").waitFor({ timeout: 15_000 });
        await systemLine(bob.page, "Ann changed the group description").waitFor({ timeout: 15_000 });
        await bob.page.locator(".chat-header h2", { hasText: "Hill walkers" }).waitFor({ timeout: 15_000 });
        await bob.page.getByTestId("group-description").filter({ hasText: "Sundays, weather permitting" }).waitFor({ timeout: 15_000 });

        // Ann makes Bob an admin: Bob's open panel offers him what admins do.
        await ann.page.getByRole("button", { name: "Make admin: Bob" }).click();
        await systemLine(ann.page, "You made Bob an admin").waitFor({ timeout: 15_000 });
        await ann.page.getByRole("button", { name: "Dismiss as admin: Bob" }).waitFor({ timeout: 15_000 });
        await systemLine(bob.page, "Ann made you an admin").waitFor({ timeout: 15_000 });
        await bob.page.getByRole("button", { name: "Edit name and description" }).waitFor({ timeout: 15_000 });
        await bob.page.getByRole("button", { name: "Make admin: Cy" }).waitFor({ timeout: 15_000 });
        await audit.check(ann.page, "group info of an admin with another admin");
        await shot(ann.page, "desktop-group-settings");

        // Removing Cy asks first: the dialog takes the focus, Escape cancels it (the panel stays)
        // and the focus returns to the button that opened it; nothing is removed.
        const removeCy = ann.page.getByRole("button", { name: "Remove Cy" });
        await removeCy.click();
        const dialog = ann.page.getByRole("alertdialog", { name: "Remove member?" });
        await dialog.waitFor();
        await waitUntil("focus in the dialog", () => focusedIn(ann.page, "[role=alertdialog]"), 5000);
        await audit.check(ann.page, "remove member confirmation");
        // Tab stays inside the dialog.
        for (let i = 0; i < 3; i++) await ann.page.keyboard.press("Tab");
        if (!(await focusedIn(ann.page, "[role=alertdialog]"))) throw new Error("Tab left the dialog");
        await ann.page.keyboard.press("Escape");
        await dialog.waitFor({ state: "detached" });
        await ann.page.getByRole("heading", { name: "Group info" }).waitFor();
        await waitUntil("focus back on Remove Cy", () => removeCy.evaluate((el) => el === document.activeElement), 5000);
        if ((await ann.page.locator(".chat .system-msg", { hasText: "removed Cy" }).count()) !== 0) throw new Error("Cy was removed without being confirmed");

        await removeCy.click();
        await dialog.getByRole("button", { name: "Remove", exact: true }).click();
        await systemLine(ann.page, "You removed Cy").waitFor({ timeout: 15_000 });
        await systemLine(bob.page, "Ann removed Cy").waitFor({ timeout: 15_000 });
        await cy.page.locator(`a.conv-item[data-conversation="${id}"]`).click({ timeout: 15_000 });
        await cy.page.locator(".removed-note", { hasText: "You were removed from this group." }).waitFor({ timeout: 15_000 });
      });
    },
  },
  {
    name: "profile: a display name and a photo set in Settings show to another user",
    fn: async (ctx) => {
      const audit = auditor();
      await audit.around(async () => {
        const ann = await user(ctx, "Ann");
        const bob = await user(ctx, "Bob");
        const id = await openDirect(ann.page, bob.username);
        const row = `a.conv-item[data-conversation="${id}"]`;
        await bob.page.locator(row).waitFor({ timeout: 15_000 });
        const png = await drawPng(ann.page);

        await ann.page.getByRole("button", { name: "Settings", exact: true }).click();
        await ann.page.getByRole("heading", { name: "Profile" }).waitFor();
        await ann.page.getByLabel("Display name").fill("Ann Adams");
        await ann.page.getByRole("button", { name: "Save name" }).click();
        await ann.page.getByRole("status").filter({ hasText: "Name saved." }).waitFor({ timeout: 15_000 });
        await ann.page.locator(".profile-settings h4", { hasText: "Ann Adams" }).waitFor();
        await ann.page.getByTestId("photo-input").setInputFiles({ name: "me.png", mimeType: "image/png", buffer: png });
        await ann.page.getByRole("status").filter({ hasText: "Photo saved." }).waitFor({ timeout: 20_000 });
        await waitUntil("Ann's photo in Settings", () => photoShown(ann.page, ".profile-settings"), 15_000);
        await ann.page.getByRole("button", { name: "Remove photo" }).waitFor();
        await audit.check(ann.page, "settings with a profile photo");
        await shot(ann.page, "desktop-settings-profile");

        // Bob's list shows the new name and photo once it is fetched again (a reload here).
        await bob.page.reload();
        await bob.page.locator(row, { hasText: "Ann Adams" }).waitFor({ timeout: 15_000 });
        await waitUntil("Ann's photo in Bob's list", () => photoShown(bob.page, row), 15_000);
        await bob.page.locator(row).click();
        await waitUntil("Ann's photo in the chat header", () => photoShown(bob.page, ".chat-header"), 15_000);
        await bob.page.locator(".chat-header h2", { hasText: "Ann Adams" }).waitFor();

        // Removed, her initials are back.
        await ann.page.getByRole("button", { name: "Remove photo" }).click();
        await ann.page.getByRole("status").filter({ hasText: "Photo removed." }).waitFor({ timeout: 15_000 });
        await ann.page.getByRole("button", { name: "Choose photo" }).waitFor();
        if (await photoShown(ann.page, ".profile-settings")) throw new Error("the photo still shows after it was removed");
      });
    },
  },
];
