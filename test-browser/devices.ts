// Browser tests of Settings' device list: a user signed in on two browsers sees both (the second
// appears live), this one marked, renames the other (its own list follows), and signs it out
// after a confirmation; the other lands on the sign-in page.
import type { Page } from "playwright-core";
import { newPage, waitUntil, type Test } from "./harness.ts";
import { auditor } from "./accessibility.ts";
import { DESKTOP, session, user, focusedName, signIn } from "./pages.ts";

export const devicesTests: Test[] = [
  {
    name: "devices: signed in on two browsers, one renames and signs the other out from Settings, both lists live; the other lands on the sign-in page",
    fn: async (ctx) => {
      const audit = auditor();
      await audit.around(async () => {
        const ann = await user(ctx, "Ann");
        const page = ann.page;
        await page.getByRole("button", { name: "Settings", exact: true }).click();
        const list = page.getByRole("region", { name: "Devices" });
        await list.getByRole("heading", { name: "Devices" }).waitFor();
        const rows = list.getByRole("listitem");
        await waitUntil("this device listed", async () => (await rows.count()) === 1, 10_000);

        // A sign-in elsewhere shows in the open list, live.
        const other = await newPage(ctx, DESKTOP);
        await signIn(other.page, ann.username);
        const otherToken = (await session(other.page)).token;
        await waitUntil("both devices listed", async () => (await rows.count()) === 2, 10_000);
        await waitUntil("this device marked", async () => (await rows.filter({ hasText: "(this device)" }).count()) === 1, 5000);
        // Only the other device can be signed out from the list (this one has Settings' own button).
        const signOutOther = list.getByRole("button", { name: /^Sign out / });
        if ((await signOutOther.count()) !== 1) throw new Error(`expected one device to sign out, found ${await signOutOther.count()}`);
        await audit.check(page, "settings with two devices");

        // Renaming the other device; its own open list follows.
        await other.page.getByRole("button", { name: "Settings", exact: true }).click();
        const otherRows = other.page.getByRole("region", { name: "Devices" }).getByRole("listitem");
        await waitUntil("the other browser lists both", async () => (await otherRows.count()) === 2, 10_000);
        const otherRow = rows.filter({ hasNotText: "(this device)" });
        await otherRow.getByRole("button", { name: /^Rename / }).click();
        const box = otherRow.getByRole("textbox");
        await waitUntil("focus in the name field", async () => page.evaluate(() => document.activeElement?.tagName === "INPUT"), 5000);
        await audit.check(page, "renaming a device");
        await box.fill("Kitchen tablet");
        await otherRow.getByRole("button", { name: "Save" }).click();
        await otherRow.getByText("Kitchen tablet").waitFor({ timeout: 10_000 });
        await waitUntil("focus back on Rename", async () => (await focusedName(page)).startsWith("Rename "), 5000);
        await otherRows.filter({ hasText: "Kitchen tablet (this device)" }).waitFor({ timeout: 10_000 });

        // Escape cancels, and the focus returns to the button.
        await signOutOther.click();
        const confirm = list.getByRole("alertdialog");
        await confirm.waitFor();
        await waitUntil("focus on the confirmation", async () => (await focusedName(page)).trim() === "Sign out", 5000);
        await audit.check(page, "confirming a device's sign-out");
        await page.keyboard.press("Escape");
        await confirm.waitFor({ state: "detached" });
        await waitUntil("focus back on the device's button", async () => (await focusedName(page)).startsWith("Sign out "), 5000);
        await expectStatus(ctx.server.origin, otherToken, 200);

        await signOutOther.click();
        await confirm.getByRole("button", { name: "Sign out", exact: true }).click();
        await other.page.getByRole("heading", { name: "Sign in to Edge Chat" }).waitFor({ timeout: 20_000 });
        await expectStatus(ctx.server.origin, otherToken, 401);
        // The list refreshed to this device alone, and the focus is on its heading.
        await waitUntil("one device left", async () => (await rows.count()) === 1, 10_000);
        await rows.filter({ hasText: "(this device)" }).waitFor();
        await waitUntil("focus on the list's heading", async () => (await focusedName(page)).trim() === "Devices", 5000);
        // This device is still signed in.
        await expectStatus(ctx.server.origin, (await session(page)).token, 200);
      });
    },
  },
];

async function expectStatus(origin: string, token: string, status: number): Promise<void> {
  const got = (await fetch(`${origin}/me`, { headers: { authorization: `Bearer ${token}` } })).status;
  if (got !== status) throw new Error(`GET /me answered ${got}, expected ${status}`);
}
