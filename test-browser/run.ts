// Browser tests: the web client in Debian's Chromium against our own `wrangler dev`.
// Run with `npm run test:browser` (Node 22 from the `node` devDependency strips the types).
import { mkdirSync } from "node:fs";
import type { BrowserContext, Page } from "playwright-core";
import { newPage, run, waitUntil, type Ctx, type Test } from "./harness.ts";

const SHOTS = new URL("../docs/screenshots/", import.meta.url);
mkdirSync(SHOTS, { recursive: true });

const PHONE = { width: 360, height: 740 };
const DESKTOP = { width: 1280, height: 800 };
const PASSWORD = "correct horse battery";
let counter = 0;
const uniq = (base: string) => `${base}_${Date.now().toString(36).slice(-4)}${counter++}`;

// --- page helpers ------------------------------------------------------------------------------

async function register(page: Page, username: string, displayName: string): Promise<void> {
  await page.goto("/register");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel(/Display name/).fill(displayName);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("heading", { name: "Chats" }).waitFor({ timeout: 15_000 });
}

async function openDirect(page: Page, username: string): Promise<string> {
  await page.getByRole("button", { name: "New chat" }).click();
  await page.getByLabel("Find people by username").fill(username);
  await page.locator(`button.person[data-username="${username}"]`).click({ timeout: 10_000 });
  await page.getByRole("textbox", { name: "Message" }).waitFor({ timeout: 10_000 });
  return conversationIdOf(page);
}

async function conversationIdOf(page: Page): Promise<string> {
  return waitUntil("a conversation URL", () => {
    const m = /\/c\/([^/?]+)/.exec(page.url());
    return m ? decodeURIComponent(m[1]!) : undefined;
  });
}

async function openConversation(page: Page, id: string): Promise<void> {
  await page.locator(`a.conv-item[data-conversation="${id}"]`).click({ timeout: 15_000 });
  await page.getByRole("textbox", { name: "Message" }).waitFor();
}

async function send(page: Page, text: string, box = "Message"): Promise<void> {
  const input = page.getByRole("textbox", { name: box });
  await input.fill(text);
  await input.press("Enter");
}

function bubble(page: Page, text: string, scope = ".chat") {
  return page.locator(`${scope} .msg-row`).filter({ has: page.locator(".text", { hasText: text }) });
}

async function expectMessage(page: Page, text: string, scope = ".chat"): Promise<void> {
  await bubble(page, text, scope).first().waitFor({ state: "visible", timeout: 15_000 });
}

async function tickOf(page: Page, text: string): Promise<string | null> {
  return bubble(page, text).first().locator(".ticks").getAttribute("data-tick", { timeout: 5000 });
}

async function expectTick(page: Page, text: string, tick: string): Promise<void> {
  await waitUntil(`tick "${tick}" on "${text}"`, async () => (await tickOf(page, text)) === tick, 15_000);
}

async function session(page: Page): Promise<{ token: string; userId: string }> {
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
async function serverMessages(page: Page, conversationId: string): Promise<Array<{ body: string | null; seq: number; clientMsgId: string }>> {
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

async function hasRoute(ctx: Ctx, path: string): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${ctx.server.port}${path}`);
  return (res.headers.get("content-type") ?? "").includes("application/json") && !(res.status === 404 && (await res.text()).includes("no such route"));
}

async function shot(page: Page, name: string): Promise<void> {
  // Let fonts and images settle, and hide the caret so screenshots do not flicker between runs.
  await page.evaluate(() => document.fonts.ready);
  await page.screenshot({ path: new URL(`${name}.png`, SHOTS).pathname, animations: "disabled", caret: "hide" });
}

async function user(ctx: Ctx, name: string, viewport = DESKTOP): Promise<{ context: BrowserContext; page: Page; username: string }> {
  const { context, page } = await newPage(ctx, viewport);
  const username = uniq(name.toLowerCase());
  await register(page, username, name);
  return { context, page, username };
}

// --- tests ---------------------------------------------------------------------------------------

const tests: Test[] = [
  {
    name: "two users register, start a chat and exchange messages in real time; ticks turn to read; typing shows",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const id = await openDirect(ann.page, bob.username);
      await send(ann.page, "Hi Bob, it is Ann");
      await expectMessage(ann.page, "Hi Bob, it is Ann");

      // Bob sees the new conversation in his list with an unread badge, and opens it.
      const item = bob.page.locator(`a.conv-item[data-conversation="${id}"]`);
      await item.waitFor({ timeout: 20_000 });
      await waitUntil("an unread badge", async () => (await item.locator(".badge").textContent()) === "1", 20_000);
      await openConversation(bob.page, id);
      await expectMessage(bob.page, "Hi Bob, it is Ann");
      await expectTick(ann.page, "Hi Bob, it is Ann", "read");

      // Real time both ways.
      await send(bob.page, "Hello Ann!");
      await expectMessage(ann.page, "Hello Ann!");
      await send(ann.page, "How are you?");
      await expectMessage(bob.page, "How are you?");
      await expectTick(ann.page, "How are you?", "read");

      // Typing: Bob types, Ann's header and typing line say so; it goes away after he sends.
      await bob.page.getByRole("textbox", { name: "Message" }).pressSequentially("I am fi", { delay: 30 });
      await ann.page.getByTestId("typing").filter({ hasText: "typing" }).waitFor({ timeout: 10_000 });
      await ann.page.getByTestId("chat-subtitle").filter({ hasText: "typing" }).waitFor({ timeout: 10_000 });
      await bob.page.getByRole("textbox", { name: "Message" }).pressSequentially("ne", { delay: 30 });
      await bob.page.getByRole("textbox", { name: "Message" }).press("Enter");
      await expectMessage(ann.page, "I am fine");
      await waitUntil("typing to stop", async () => !((await ann.page.getByTestId("typing").textContent()) ?? "").includes("typing"), 10_000);

      // Delivered but unread while Bob looks elsewhere: Bob goes back to the list.
      await bob.page.getByRole("button", { name: "New chat" }).click();
      await send(ann.page, "Are you there?");
      await expectTick(ann.page, "Are you there?", "delivered");
      await openConversation(bob.page, id);
      await expectTick(ann.page, "Are you there?", "read");

      // Each message appears once on each side.
      for (const p of [ann.page, bob.page]) {
        for (const text of ["Hi Bob, it is Ann", "Hello Ann!", "How are you?", "I am fine", "Are you there?"]) {
          const n = await bubble(p, text).count();
          if (n !== 1) throw new Error(`"${text}" shown ${n} times`);
        }
      }
      await shot(ann.page, "desktop-chat");
      await ann.page.setViewportSize(PHONE);
      await shot(ann.page, "phone-chat");
      await ann.page.getByRole("button", { name: "Back to chats" }).click();
      await shot(ann.page, "phone-list");
    },
  },
];

const failed = await run(tests, ["--var", "PRESENCE_DEBOUNCE_MS:1000"]);
process.exit(failed > 0 ? 1 : 0);
