// Browser tests of safety numbers: two users in two Chromium contexts compare the 60 digits, one
// marks the other verified, and a new device of the other (a login that registers a signature
// key through the API) turns the mark into a warning in the chat.
import type { Page } from "playwright-core";
import { waitUntil, type Ctx, type Test } from "./harness.ts";
import { PASSWORD, openConversation, shot, session, shownDigits, user } from "./pages.ts";

/** A fresh Ed25519 key made by WebCrypto, registered as the signature key of the token's device. */
async function registerSignatureKey(ctx: Ctx, token: string): Promise<void> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const signatureKey = Buffer.from(raw).toString("base64url");
  const res = await fetch(`${ctx.server.origin}/devices/me/mls`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ signatureKey }),
  });
  if (res.status !== 200) throw new Error(`PUT /devices/me/mls: ${res.status} ${await res.text()}`);
}

/** A sign-in on another device (every login is a new device), through the API. */
async function loginElsewhere(ctx: Ctx, username: string): Promise<string> {
  const res = await fetch(`${ctx.server.origin}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password: PASSWORD, deviceName: "Second laptop" }),
  });
  const json = (await res.json()) as { token?: string };
  if (res.status !== 200 || !json.token) throw new Error(`login: ${res.status}`);
  return json.token;
}

/** Opens the contact's info, then the safety number from there. */
async function openSafetyNumber(page: Page): Promise<void> {
  await page.getByRole("button", { name: "Contact info" }).click();
  await page.getByRole("button", { name: "Safety number" }).click();
  await page.getByRole("heading", { name: "Safety number", level: 2 }).waitFor();
}

export const safetyNumberTests: Test[] = [
  {
    name: "safety numbers: two users see the same 60 digits; a verified contact's new device shows a warning in the chat",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");

      // A direct chat between them.
      await ann.page.getByRole("button", { name: "New chat" }).click();
      await ann.page.getByLabel("Find people by username").fill(bob.username);
      await ann.page.locator(`button.person[data-username="${bob.username}"]`).click({ timeout: 10_000 });
      await ann.page.getByRole("textbox", { name: "Message" }).waitFor();
      const id = await waitUntil("a conversation URL", () => /\/c\/([^/?]+)/.exec(ann.page.url())?.[1]);

      // Before any device registered a key there is no number, and the panel says why.
      await openSafetyNumber(ann.page);
      await ann.page.getByTestId("safety-none").filter({ hasText: "There is no safety number yet" }).waitFor();
      await ann.page.getByTestId("safety-none").filter({ hasText: "Bob has not set up end-to-end encryption" }).waitFor();
      // The panel took the focus as it opened.
      await waitUntil("focus in the panel", () => ann.page.evaluate(() => document.activeElement?.id === "safety-heading"));

      await registerSignatureKey(ctx, (await session(ann.page)).token);
      await registerSignatureKey(ctx, (await session(bob.page)).token);

      // Each opens the other's safety number: the same 60 digits, in 12 groups of 5, and a QR code.
      await ann.page.reload();
      await ann.page.getByRole("heading", { name: "Safety number", level: 2 }).waitFor();
      const annSees = await shownDigits(ann.page);
      await openConversation(bob.page, id);
      await openSafetyNumber(bob.page);
      const bobSees = await shownDigits(bob.page);
      if (annSees.length !== 12 || !annSees.every((g) => /^\d{5}$/.test(g))) throw new Error(`not 12 groups of 5: ${annSees.join(" ")}`);
      if (annSees.join("") !== bobSees.join("")) throw new Error(`Ann sees ${annSees.join(" ")}, Bob sees ${bobSees.join(" ")}`);
      await ann.page.getByRole("img", { name: "QR code of the safety number" }).waitFor();
      await shot(ann.page, "desktop-safety-number");

      // Ann marks Bob verified: the panel and the chat's header say so.
      await ann.page.getByRole("button", { name: "Mark as verified" }).click();
      await ann.page.getByTestId("safety-status").filter({ hasText: "Verified" }).waitFor();
      await ann.page.getByRole("button", { name: "Clear verification" }).waitFor();
      await ann.page.locator(".chat-header").getByTestId("verified-mark").waitFor();

      // Bob signs in on a second device, which registers its own key: his number with Ann changes.
      await registerSignatureKey(ctx, await loginElsewhere(ctx, bob.username));

      // Ann comes back to the chat: a warning, and the way to compare again.
      await ann.page.getByRole("button", { name: "New chat" }).click();
      await openConversation(ann.page, id);
      const warning = ann.page.getByTestId("safety-warning");
      await warning.filter({ hasText: "Your safety number with Bob has changed: Bob added or removed a device" }).waitFor({ timeout: 20_000 });
      if ((await ann.page.locator(".chat-header").getByTestId("verified-mark").count()) !== 0) throw new Error("still marked verified in the header");
      await shot(ann.page, "desktop-safety-warning");
      await warning.getByRole("button", { name: "Verify again" }).click();
      await ann.page.getByTestId("safety-status").filter({ hasText: "Changed since you verified it" }).waitFor();
      const annNow = await shownDigits(ann.page);
      if (annNow.join("") === annSees.join("")) throw new Error("the number did not change with Bob's new device");
      // Bob's side agrees on the new number.
      await bob.page.reload();
      const bobNow = await shownDigits(bob.page);
      if (annNow.join("") !== bobNow.join("")) throw new Error(`after the new device Ann sees ${annNow.join(" ")}, Bob sees ${bobNow.join(" ")}`);
      await ann.page.getByRole("button", { name: "Mark as verified" }).click();
      await ann.page.getByTestId("safety-status").filter({ hasText: "Verified" }).waitFor();
      await waitUntil("the warning to go", async () => (await warning.count()) === 0);

      // The mark is kept on the device: it survives a reload.
      await ann.page.goto(`/c/${id}`);
      await ann.page.locator(".chat-header").getByTestId("verified-mark").waitFor();

      // In the dark theme too (a screenshot to look at; contrast is set by the theme's tokens).
      await ann.page.emulateMedia({ colorScheme: "dark" });
      await ann.page.goto(`/c/${id}/safety/${encodeURIComponent((await session(bob.page)).userId)}`);
      await shownDigits(ann.page);
      await shot(ann.page, "desktop-safety-number-dark");
      // On a phone the panel takes the whole screen.
      await ann.page.setViewportSize({ width: 360, height: 740 });
      await ann.page.getByRole("button", { name: "Clear verification" }).scrollIntoViewIfNeeded();
      await shot(ann.page, "phone-safety-number-dark");
    },
  },
  {
    name: "safety numbers: reachable from a group member's entry",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      await registerSignatureKey(ctx, (await session(ann.page)).token);
      await registerSignatureKey(ctx, (await session(bob.page)).token);
      await ann.page.getByRole("button", { name: "New group" }).click();
      await ann.page.getByLabel("Group name").fill("Numbers");
      await ann.page.getByLabel("Add people").fill(bob.username);
      await ann.page.locator(`button.person[data-username="${bob.username}"]`).click();
      await ann.page.getByRole("button", { name: /Create group with 1 person/ }).click();
      await ann.page.getByRole("textbox", { name: "Message" }).waitFor();
      await ann.page.getByRole("button", { name: "Group info" }).click();
      await ann.page.getByRole("button", { name: "Safety number with Bob" }).click();
      const fromGroup = await shownDigits(ann.page);
      await waitUntil("focus in the panel", () => ann.page.evaluate(() => document.activeElement?.id === "safety-heading"));
      // The same number as in a direct chat: it belongs to the two users, not to a conversation.
      await ann.page.getByRole("button", { name: "Back to group info" }).click();
      await ann.page.getByRole("heading", { name: "Group info" }).waitFor();
      const id = await waitUntil("the group's URL", () => /\/c\/([^/?]+)/.exec(ann.page.url())?.[1]);
      await openConversation(bob.page, id);
      await bob.page.getByRole("button", { name: "Group info" }).click();
      await bob.page.getByRole("button", { name: "Safety number with Ann" }).click();
      const bobSees = await shownDigits(bob.page);
      if (fromGroup.join("") !== bobSees.join("")) throw new Error(`Ann sees ${fromGroup.join(" ")}, Bob sees ${bobSees.join(" ")}`);
    },
  },
];
