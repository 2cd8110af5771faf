// Page helpers shared by the browser tests: users, sign-up, opening and creating conversations,
// sending and waiting for messages.
import { mkdirSync } from "node:fs";
import type { BrowserContext, Page } from "playwright-core";
import { newPage, waitUntil, type Ctx } from "./harness.ts";

// Screenshots go to test-results/ (ignored by git): their pixels differ slightly between runs.
// UPDATE_SCREENSHOTS=1 writes them to docs/screenshots/ instead, for the README.
const SHOTS = new URL(process.env.UPDATE_SCREENSHOTS === "1" ? "../docs/screenshots/" : "../test-results/screenshots/", import.meta.url);
mkdirSync(SHOTS, { recursive: true });

export async function shot(page: Page, name: string): Promise<void> {
  // Let fonts and images settle, and hide the caret so screenshots do not flicker between runs.
  await page.evaluate(() => document.fonts.ready);
  await page.screenshot({ path: new URL(`${name}.png`, SHOTS).pathname, animations: "disabled", caret: "hide" });
}

export const PHONE = { width: 360, height: 740 };
export const DESKTOP = { width: 1280, height: 800 };
export const PASSWORD = "correct horse battery";
let counter = 0;
const uniq = (base: string) => `${base}_${Date.now().toString(36).slice(-4)}${counter++}`;

export async function register(page: Page, username: string, displayName: string): Promise<void> {
  await page.goto("/register");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel(/Display name/).fill(displayName);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("heading", { name: "Chats" }).waitFor({ timeout: 15_000 });
}

export async function openDirect(page: Page, username: string): Promise<string> {
  await page.getByRole("button", { name: "New chat" }).click();
  await page.getByLabel("Find people by username").fill(username);
  await page.locator(`button.person[data-username="${username}"]`).click({ timeout: 10_000 });
  await page.getByRole("textbox", { name: "Message" }).waitFor({ timeout: 10_000 });
  return conversationIdOf(page);
}

export async function conversationIdOf(page: Page): Promise<string> {
  return waitUntil("a conversation URL", () => {
    const m = /\/c\/([^/?]+)/.exec(page.url());
    return m ? decodeURIComponent(m[1]!) : undefined;
  });
}

export async function createGroup(page: Page, title: string, username: string): Promise<string> {
  await page.getByRole("button", { name: "New group" }).click();
  await page.getByLabel("Group name").fill(title);
  await page.getByLabel("Add people").fill(username);
  await page.locator(`button.person[data-username="${username}"]`).click();
  await page.getByRole("button", { name: /Create group with 1 person/ }).click();
  return conversationIdOf(page);
}

export async function openConversation(page: Page, id: string): Promise<void> {
  await page.locator(`a.conv-item[data-conversation="${id}"]`).click({ timeout: 15_000 });
  await page.getByRole("textbox", { name: "Message" }).waitFor();
}

export async function send(page: Page, text: string, box = "Message"): Promise<void> {
  const input = page.getByRole("textbox", { name: box });
  await input.fill(text);
  await input.press("Enter");
}

const exactly = (text: string) => new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);

export function bubble(page: Page, text: string, scope = ".chat") {
  return page.locator(`${scope} .msg-row`).filter({ has: page.locator(".text", { hasText: exactly(text) }) });
}

export async function expectMessage(page: Page, text: string, scope = ".chat"): Promise<void> {
  await bubble(page, text, scope).first().waitFor({ state: "visible", timeout: 15_000 });
}

export async function tickOf(page: Page, text: string): Promise<string | null> {
  return bubble(page, text).first().locator(".ticks").getAttribute("data-tick", { timeout: 5000 });
}

export async function expectTick(page: Page, text: string, tick: string): Promise<void> {
  await waitUntil(`tick "${tick}" on "${text}"`, async () => (await tickOf(page, text)) === tick, 15_000);
}

export async function session(page: Page): Promise<{ token: string; userId: string }> {
  return page.evaluate(() => {
    const raw = localStorage.getItem("edge-chat:session");
    if (!raw) throw new Error("no session");
    const s: unknown = JSON.parse(raw);
    if (typeof s !== "object" || s === null || !("token" in s) || !("user" in s)) throw new Error("bad session");
    const user: unknown = s.user;
    const id = typeof user === "object" && user !== null && "id" in user ? String(user.id) : "";
    return { token: String(s.token), userId: id };
  });
}

/** The server's copy of a conversation's messages, through the page's own token. */
export async function serverMessages(page: Page, conversationId: string): Promise<Array<{ body: string | null; seq: number; clientMsgId: string }>> {
  const { token } = await session(page);
  return page.evaluate(
    async ([id, t]) => {
      const res = await fetch(`/conversations/${encodeURIComponent(id)}/messages?after=0&limit=500`, { headers: { authorization: `Bearer ${t}` } });
      const json: unknown = await res.json();
      if (typeof json !== "object" || json === null || !("messages" in json) || !Array.isArray(json.messages)) throw new Error("bad answer");
      return json.messages.map((m: { body: string | null; seq: number; clientMsgId: string }) => ({ body: m.body, seq: m.seq, clientMsgId: m.clientMsgId }));
    },
    [conversationId, token] as const,
  );
}

/** A real 640x400 PNG drawn by the browser. */
export async function drawPng(page: Page): Promise<Buffer> {
  const dataUrl = await page.evaluate(() => {
    const c = document.createElement("canvas");
    c.width = 640;
    c.height = 400;
    const g = c.getContext("2d")!;
    const grad = g.createLinearGradient(0, 0, 640, 400);
    grad.addColorStop(0, "#2563eb");
    grad.addColorStop(1, "#0ea5b7");
    g.fillStyle = grad;
    g.fillRect(0, 0, 640, 400);
    g.fillStyle = "#fff";
    g.font = "bold 64px sans-serif";
    g.fillText("Edge Chat", 140, 220);
    return c.toDataURL("image/png");
  });
  return Buffer.from(dataUrl.split(",")[1]!, "base64");
}

export async function hasRoute(ctx: Ctx, path: string): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${ctx.server.port}${path}`);
  return (res.headers.get("content-type") ?? "").includes("application/json") && !(res.status === 404 && (await res.text()).includes("no such route"));
}

export async function user(ctx: Ctx, name: string, viewport = DESKTOP, touch = false): Promise<{ context: BrowserContext; page: Page; username: string }> {
  const { context, page } = await newPage(ctx, viewport, touch);
  const username = uniq(name.toLowerCase().replace(/[^a-z0-9]+/g, "_"));
  await register(page, username, name);
  return { context, page, username };
}

/** The digits the panel shows, once it shows them: 12 groups of 5. */
export async function shownDigits(page: Page): Promise<string[]> {
  const digits = page.getByTestId("safety-digits");
  await digits.waitFor({ timeout: 20_000 });
  return digits.locator("span").allTextContents().then((groups) => groups.map((g) => g.trim()));
}

/** Signs an existing account in on this page (another device of that user). */
export async function signIn(page: Page, username: string): Promise<void> {
  await page.goto("/login");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("heading", { name: "Chats" }).waitFor({ timeout: 15_000 });
}

/** What the focused element is called: its aria-label, else its text. */
export const focusedName = (page: Page) => page.evaluate(() => document.activeElement?.getAttribute("aria-label") ?? document.activeElement?.textContent?.trim() ?? "");
