// Accessibility: axe-core checks every screen of the web client, at phone and desktop width, in the
// light and the dark theme, and finds nothing. Focus moves into a panel or dialog as it opens and
// returns to what opened it as it closes.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { AxeResults } from "axe-core";
import type { Page } from "playwright-core";
import { newPage, waitUntil, type Test } from "./harness.ts";
import { DESKTOP, PASSWORD, PHONE, bubble, createGroup, drawPng, expectMessage, hasRoute, openConversation, openDirect, send, user } from "./pages.ts";

declare global {
  interface Window {
    axe?: { run: (context: Document, options: object) => Promise<AxeResults> };
  }
}

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const THEMES = ["light", "dark"] as const;
/** The page's background in each theme (styles.css `--bg`), to be sure the theme asked for is the one checked. */
const BACKGROUND = { light: "rgb(246, 247, 249)", dark: "rgb(14, 17, 20)" };

/**
 * Runs axe on the page as it is, at both widths and in both themes (the app follows the device's
 * colour scheme unless a theme is chosen in Settings), and returns one line per violation and node.
 * axe is evaluated through the DevTools protocol, which the page's Content-Security-Policy does not
 * govern (an injected <script> would be refused, and reported as a CSP violation).
 */
async function axeViolations(page: Page, screen: string): Promise<string[]> {
  const found: string[] = [];
  const viewport = page.viewportSize();
  // Read here, not at the top: run.ts, which defines the sizes, imports this module first.
  const widths = [["desktop", DESKTOP], ["phone", PHONE]] as const;
  for (const [width, size] of widths) {
    await page.setViewportSize(size);
    for (const theme of THEMES) {
      await page.emulateMedia({ colorScheme: theme });
      await waitUntil(`the ${theme} theme`, () => page.evaluate((bg) => getComputedStyle(document.body).backgroundColor === bg, BACKGROUND[theme]), 5000);
      // Two frames, so layout and styles for the new width and theme are settled.
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
      if (!(await page.evaluate(() => "axe" in window))) await page.evaluate(AXE_SOURCE);
      const violations = await page.evaluate(async () => {
        const results = await window.axe!.run(document, { resultTypes: ["violations"] });
        return results.violations.map((v) => ({ id: v.id, help: v.help, nodes: v.nodes.map((n) => ({ target: n.target.join(" "), summary: n.failureSummary ?? "" })) }));
      });
      for (const v of violations) {
        for (const n of v.nodes) found.push(`${screen} (${width}, ${theme}): ${v.id} at ${n.target}: ${v.help}\n      ${n.summary.replace(/\n/g, "\n      ")}`);
      }
    }
  }
  await page.emulateMedia({ colorScheme: "light" });
  if (viewport) await page.setViewportSize(viewport);
  return found;
}

/** Checks screens as a test goes, and fails at its end with every violation of every screen. */
export function auditor() {
  const found: string[] = [];
  const screens: string[] = [];
  return {
    check: async (page: Page, screen: string) => {
      screens.push(screen);
      found.push(...(await axeViolations(page, screen)));
    },
    /** Runs the test's steps, then fails with every violation found (also when a step failed). */
    around: async (steps: () => Promise<void>) => {
      try {
        await steps();
      } catch (err) {
        if (found.length > 0) console.log(`  axe violations before the failure:\n  ${found.join("\n  ")}`);
        throw err;
      }
      if (found.length > 0) throw new Error(`${found.length} axe violations:\n  ${found.join("\n  ")}`);
      console.log(`  axe: no violations on ${screens.length} screens (${screens.join(", ")}), each at 2 widths in 2 themes`);
    },
  };
}

/** Whether the focused element is inside `selector`. */
async function focusedWithin(page: Page, selector: string): Promise<boolean> {
  return page.evaluate((sel) => !!document.activeElement?.closest(sel), selector);
}

async function expectFocusIn(page: Page, selector: string, what: string): Promise<void> {
  await waitUntil(`focus in ${what}`, () => focusedWithin(page, selector), 5000);
}

async function expectFocusOn(page: Page, name: string, role: "button" = "button"): Promise<void> {
  const target = page.getByRole(role, { name, exact: true });
  await waitUntil(`focus back on "${name}"`, () => target.evaluate((el) => el === document.activeElement), 5000);
}

async function tokenOf(page: Page): Promise<string> {
  return page.evaluate(() => {
    const s: unknown = JSON.parse(localStorage.getItem("edge-chat:session") ?? "null");
    if (typeof s !== "object" || s === null || !("token" in s)) throw new Error("no session");
    return String(s.token);
  });
}

/** A fresh Ed25519 key made by WebCrypto, registered as the signature key of the token's device. */
async function registerSignatureKey(origin: string, token: string): Promise<void> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const signatureKey = Buffer.from(await crypto.subtle.exportKey("raw", pair.publicKey)).toString("base64url");
  const res = await fetch(`${origin}/devices/me/mls`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ signatureKey }),
  });
  if (res.status !== 200) throw new Error(`PUT /devices/me/mls: ${res.status} ${await res.text()}`);
}

/** A sign-in on another device (every login is a new device), through the API; its token. */
async function signInElsewhere(origin: string, username: string): Promise<string> {
  const res = await fetch(`${origin}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password: PASSWORD, deviceName: "Second laptop" }),
  });
  const json: unknown = await res.json();
  if (res.status !== 200 || typeof json !== "object" || json === null || !("token" in json)) throw new Error(`login: ${res.status}`);
  return String(json.token);
}

/**
 * Avatars are decoration (aria-hidden), which axe skips, but their initials are still read by eye:
 * white on every hue the app gives (0-359) meets 4.5:1. The colour is read back through a canvas,
 * so it is the sRGB the screen shows.
 */
async function expectAvatarsReadable(page: Page): Promise<void> {
  const worst = await page.evaluate(() => {
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    document.body.append(avatar);
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 1;
    const g = canvas.getContext("2d", { willReadFrequently: true })!;
    const luminance = (css: string) => {
      g.clearRect(0, 0, 1, 1);
      g.fillStyle = css;
      g.fillRect(0, 0, 1, 1);
      const [r = 0, gr = 0, b = 0] = g.getImageData(0, 0, 1, 1).data;
      const lin = (c: number) => (c / 255 <= 0.04045 ? c / 255 / 12.92 : ((c / 255 + 0.055) / 1.055) ** 2.4);
      return 0.2126 * lin(r) + 0.7152 * lin(gr) + 0.0722 * lin(b);
    };
    let lowest = { hue: -1, ratio: Infinity };
    for (let hue = 0; hue < 360; hue++) {
      avatar.style.setProperty("--hue", String(hue));
      const style = getComputedStyle(avatar);
      const [a, b] = [luminance(style.color), luminance(style.backgroundColor)];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      if (ratio < lowest.ratio) lowest = { hue, ratio };
    }
    avatar.remove();
    return lowest;
  });
  if (worst.ratio < 4.5) throw new Error(`avatar initials at hue ${worst.hue} have a contrast of ${worst.ratio.toFixed(2)}:1`);
}

export const accessibilityTests: Test[] = [
  {
    name: "accessibility: sign-in and registration have no axe violations",
    fn: async (ctx) => {
      const audit = auditor();
      await audit.around(async () => {
        const { page } = await newPage(ctx, DESKTOP);
        await page.goto("/login");
        await page.getByRole("heading", { name: "Sign in to Edge Chat" }).waitFor();
        await audit.check(page, "sign-in");
        // A wrong password shows an error under the form.
        await page.getByLabel("Username").fill("nobody_here");
        await page.getByLabel("Password").fill("not the password");
        await page.getByRole("button", { name: "Sign in" }).click();
        await page.getByRole("alert").filter({ hasText: /\S/ }).waitFor();
        await audit.check(page, "sign-in with an error");
        await page.getByRole("link", { name: "Create an account" }).click();
        await page.getByRole("heading", { name: "Create your account" }).waitFor();
        await audit.check(page, "registration");
      });
    },
  },
  {
    name: "accessibility: every screen of the app has no axe violations, and focus follows panels",
    fn: async (ctx) => {
      const audit = auditor();
      await audit.around(async () => {
        const media = await hasRoute(ctx, "/media/probe");
        const ann = await user(ctx, "Ann");
        const bob = await user(ctx, "Bob");
        const cy = await user(ctx, "Cy");
        const page = ann.page;
        await page.getByText("No conversations yet.").waitFor();
        await audit.check(page, "empty chat list");

        await expectAvatarsReadable(page);

        // People search and a new group with one person chosen; each page takes the focus.
        await page.getByRole("button", { name: "New chat" }).click();
        await waitUntil("focus in the search", () => page.getByLabel("Find people by username").evaluate((el) => el === document.activeElement), 5000);
        await page.getByLabel("Find people by username").fill(bob.username);
        await page.locator(`button.person[data-username="${bob.username}"]`).waitFor();
        await audit.check(page, "new chat with search results");
        await page.getByRole("button", { name: "New group" }).first().click();
        await waitUntil("focus in the group name", () => page.getByLabel("Group name").evaluate((el) => el === document.activeElement), 5000);
        await page.getByLabel("Group name").fill("Trip");
        await page.getByLabel("Add people").fill(cy.username);
        await page.locator(`button.person[data-username="${cy.username}"]`).click();
        await page.getByRole("button", { name: `Remove Cy` }).waitFor();
        await audit.check(page, "new group with a person chosen");

        // A direct chat with text, a link, emoji, ticks; the list with an unread row and an active row.
        const direct = await openDirect(page, bob.username);
        await send(page, "Hi Bob, see https://example.com/plan");
        await send(page, "🎉");
        await openConversation(bob.page, direct);
        await expectMessage(bob.page, "🎉");
        await send(bob.page, "Thanks Ann, looks good");
        await expectMessage(page, "Thanks Ann, looks good");
        const group = await createGroup(page, "Weekend trip", cy.username);
        await openConversation(page, direct);
        await openConversation(cy.page, group);
        await send(cy.page, "Who brings the tent?");
        await send(cy.page, "And the stove?");
        await page.locator(`a.conv-item.unread[data-conversation="${group}"]`).waitFor({ timeout: 15_000 });
        await audit.check(page, "a direct chat, and a list with an active and an unread row");

        // A group with media: a photo, a PDF and a voice note.
        await openConversation(page, group);
        await expectMessage(page, "And the stove?");
        if (media) {
          const file = page.locator('.chat .composer input[type="file"]');
          await file.setInputFiles({ name: "map.png", mimeType: "image/png", buffer: await drawPng(page) });
          await file.setInputFiles({ name: "plan.pdf", mimeType: "application/pdf", buffer: Buffer.from("%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n") });
          await page.getByRole("button", { name: "Record voice message" }).click();
          await page.getByRole("timer").filter({ hasText: /0:01/ }).waitFor({ timeout: 10_000 });
          await audit.check(page, "recording a voice message");
          await page.getByRole("button", { name: "Send voice message" }).click();
          await cy.page.locator(".chat .media-frame img").waitFor({ timeout: 20_000 });
          await cy.page.locator(".chat .file-card").waitFor({ timeout: 20_000 });
          await cy.page.getByRole("button", { name: /^Play voice message, / }).waitFor({ timeout: 20_000 });
        // A refused upload shows its error with Dismiss.
        await file.setInputFiles({ name: "broken.png", mimeType: "image/png", buffer: Buffer.from("these bytes are not a PNG image") });
        await page.locator(".chat .upload-card").getByRole("button", { name: "Dismiss" }).waitFor({ timeout: 20_000 });
        await audit.check(page, "a refused upload");
        await page.locator(".chat .upload-card").getByRole("button", { name: "Dismiss" }).click();
          await audit.check(cy.page, "a group chat with media");
          // The image opens in a dialog that takes the focus and gives it back as it closes.
          const opener = cy.page.locator(".chat .media-frame").first();
          await opener.click();
          await cy.page.getByRole("dialog", { name: "Image" }).waitFor();
          await expectFocusIn(cy.page, ".lightbox", "the image dialog");
          await audit.check(cy.page, "an image opened");
          // Tab stays in the dialog.
          await cy.page.keyboard.press("Tab");
          await expectFocusIn(cy.page, ".lightbox", "the image dialog after Tab");
          await cy.page.keyboard.press("Escape");
          await cy.page.getByRole("dialog").waitFor({ state: "detached" });
          await waitUntil("focus back on the image", () => opener.evaluate((el) => el === document.activeElement), 5000);
        } else {
          await audit.check(cy.page, "a group chat");
        }

        // A thread: the panel takes the focus (its composer), and Close gives it back to the button
        // that opened it.
        await bubble(cy.page, "Who brings the tent?").hover();
        const replyButton = bubble(cy.page, "Who brings the tent?").getByRole("button", { name: "Reply in thread" });
        await replyButton.click();
        await cy.page.getByRole("complementary", { name: "Thread" }).waitFor();
        await expectFocusIn(cy.page, ".thread-panel", "the thread panel");
        await send(cy.page, "I do", "Reply in thread");
        await expectMessage(cy.page, "I do", ".thread-panel");
        await audit.check(cy.page, "a thread");
        await cy.page.getByRole("button", { name: "Close thread" }).click();
        await waitUntil("focus back on the reply button", () => replyButton.evaluate((el) => el === document.activeElement), 5000);
        await bubble(page, "Who brings the tent?").getByRole("button", { name: "1 reply" }).waitFor({ timeout: 15_000 });
        await audit.check(page, "a group chat with a thread reply");

        // A message's menu, open (message actions).
        const menuButton = bubble(page, "Who brings the tent?").first().getByRole("button", { name: "Message actions" });
        await menuButton.click();
        await page.getByRole("menuitem", { name: "Delete for me" }).waitFor();
        await audit.check(page, "a message's menu");
        await menuButton.click();
        await page.getByRole("menu").waitFor({ state: "detached" });

        // Group info (members, the add form), then the confirmation to leave; Escape closes the panel
        // and focus returns to the info button.
        await page.getByRole("button", { name: "Group info" }).click();
        await expectFocusIn(page, ".side-panel", "the group info panel");
        await page.locator(".side-panel .member", { hasText: "Cy" }).waitFor();
        await audit.check(page, "group info");
        await page.getByRole("button", { name: "Leave group" }).click();
        await page.getByRole("group", { name: "Confirm leaving" }).waitFor();
        await expectFocusOn(page, "Cancel");
        await audit.check(page, "confirm leaving a group");
        await page.getByRole("button", { name: "Cancel" }).click();
        await expectFocusOn(page, "Leave group");
        await page.keyboard.press("Escape");
        await page.locator(".side-panel").waitFor({ state: "detached" });
        await expectFocusOn(page, "Group info");

        await openConversation(page, direct);
        await page.getByRole("button", { name: "Contact info" }).click();
        await expectFocusIn(page, ".side-panel", "the contact panel");
        await audit.check(page, "contact info");
        await page.getByRole("button", { name: "Close", exact: true }).click();
        await expectFocusOn(page, "Contact info");
        // Where the app shows safety numbers, their panel in each state: no keys yet, the digits,
        // verified, and changed by a new device (with the chat's warning).
        await page.getByRole("button", { name: "Contact info" }).click();
        const safety = page.getByRole("button", { name: "Safety number" });
        if ((await safety.count()) > 0) {
          await safety.click();
          await page.getByRole("heading", { name: "Safety number", level: 2 }).waitFor();
          await expectFocusIn(page, ".side-panel", "the safety-number panel");
          await audit.check(page, "safety number without keys");
          for (const p of [page, bob.page]) await registerSignatureKey(ctx.server.origin, await tokenOf(p));
          await page.reload();
          await page.getByTestId("safety-digits").waitFor({ timeout: 20_000 });
          await audit.check(page, "safety number");
          await page.getByRole("button", { name: "Mark as verified" }).click();
          await page.getByRole("button", { name: "Clear verification" }).waitFor();
          await audit.check(page, "safety number verified");
          await registerSignatureKey(ctx.server.origin, await signInElsewhere(ctx.server.origin, bob.username));
          await page.getByRole("button", { name: "Close", exact: true }).click();
          await page.getByRole("button", { name: "New chat" }).click();
          await openConversation(page, direct);
          const warning = page.getByTestId("safety-warning");
          await warning.waitFor({ timeout: 20_000 });
          await audit.check(page, "a chat warning of a changed safety number");
          await warning.getByRole("button", { name: "Verify again" }).click();
          await page.getByRole("heading", { name: "Safety number", level: 2 }).waitFor();
          await page.getByTestId("safety-digits").waitFor({ timeout: 20_000 });
          await audit.check(page, "a changed safety number");
        }
        await page.getByRole("button", { name: "Close", exact: true }).click();

        await page.getByRole("button", { name: "Settings", exact: true }).click();
        await page.getByRole("heading", { name: "Settings" }).waitFor();
        await expectFocusIn(page, "section.page", "the settings page");
        await audit.check(page, "settings");
        // Back returns the focus to the button that opened the page.
        await page.getByRole("button", { name: "Back", exact: true }).click();
        await expectFocusOn(page, "Settings");

        // Offline: the banner, and a message waiting to be sent.
        await openConversation(page, direct);
        await page.waitForFunction(() => navigator.serviceWorker.controller !== null, undefined, { timeout: 15_000 });
        await ann.context.setOffline(true);
        await page.getByRole("status").filter({ hasText: "You are offline" }).waitFor({ timeout: 10_000 });
        await send(page, "written offline");
        await expectMessage(page, "written offline");
        await audit.check(page, "offline, with a message waiting");
        await ann.context.setOffline(false);
        await page.getByRole("status").filter({ hasText: "You are offline" }).waitFor({ state: "detached", timeout: 15_000 });
      });
    },
  },
];
