// End-to-end encryption in the web client: two users in two Chromium contexts, each with its own
// IndexedDB and MLS state, chat in an E2EE group; the server's copy holds ciphertext only.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { waitUntil, type Test } from "./harness.ts";
import { bubble, conversationIdOf, drawPng, expectMessage, expectTick, openConversation, send, session, shot, shownDigits, user } from "./pages.ts";

/** This device's MLS state for the open conversation is ready (no "setting up" line, no problem). */
async function encryptionReady(page: Page): Promise<void> {
  await page.getByRole("textbox", { name: "Message" }).waitFor();
  await waitUntil("end-to-end encryption set up on this device", async () => (await page.locator('[data-testid="e2ee-status"]').count()) === 0, 30_000);
}

/** The server's answer for the conversation's messages, as text, through the page's own token. */
async function serverHistory(page: Page, conversationId: string): Promise<string> {
  const { token } = await session(page);
  return page.evaluate(
    async ([id, t]) => (await fetch(`/conversations/${encodeURIComponent(id)}/messages?after=0&limit=500`, { headers: { authorization: `Bearer ${t}` } })).text(),
    [conversationId, token] as const,
  );
}

/** The files under `dir` whose bytes contain any of `needles`. */
function filesHolding(dir: string, needles: Buffer[]): string[] {
  const files = readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
  if (files.length === 0) throw new Error(`no state files under ${dir}`);
  return files.map((e) => join(e.parentPath, e.name)).filter((file) => {
    const bytes = readIfStillThere(file);
    return bytes !== null && needles.some((n) => bytes.includes(n));
  });
}

/**
 * The file's bytes, or null if it went between listing and reading: the running server's SQLite
 * creates and removes its -shm and -wal files as objects open and close, and a file gone holds
 * nothing at rest.
 */
function readIfStillThere(file: string): Buffer | null {
  try {
    return readFileSync(file);
  } catch (err) {
    if (err instanceof Error && "code" in err && err.code === "ENOENT") return null;
    throw err;
  }
}

/** New chat with the lock on: an end-to-end encrypted direct conversation. */
async function startEncryptedDirect(page: Page, username: string): Promise<string> {
  await page.getByRole("button", { name: "New chat" }).click();
  await page.getByRole("checkbox", { name: /End-to-end encrypted/ }).check();
  await page.getByLabel("Find people by username").fill(username);
  await page.locator(`button.person[data-username="${username}"]`).click({ timeout: 10_000 });
  return conversationIdOf(page);
}

export const e2eeTests: Test[] = [
  {
    name: "E2EE: two Chromium contexts chat in an encrypted group, send an image, a voice note, a thread reply and an offline message; the server holds no plaintext",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const marker = `plaintext-marker-${Date.now().toString(36)}`;

      // Ann creates the group with the lock on.
      await ann.page.getByRole("button", { name: "New group" }).click();
      await ann.page.getByLabel("Group name").fill("Secret plans");
      await ann.page.getByLabel("Add people").fill(bob.username);
      await ann.page.locator(`button.person[data-username="${bob.username}"]`).click();
      await ann.page.getByRole("checkbox", { name: /End-to-end encrypted/ }).check();
      await ann.page.getByRole("button", { name: /Create group with 1 person/ }).click();
      const id = await conversationIdOf(ann.page);
      await encryptionReady(ann.page);

      // Bob's list shows the lock; his device (new to E2EE, so no key package was there to add)
      // joins by an external commit when the conversation reaches it.
      const item = bob.page.locator(`a.conv-item[data-conversation="${id}"]`);
      await item.locator('[title="End-to-end encrypted"]').waitFor({ timeout: 20_000 });
      await openConversation(bob.page, id);
      await encryptionReady(bob.page);

      // Both ways, in real time.
      await send(ann.page, `Hello Bob ${marker}`);
      await expectMessage(ann.page, `Hello Bob ${marker}`);
      await expectMessage(bob.page, `Hello Bob ${marker}`);
      await send(bob.page, "Hi Ann, only we can read this");
      await expectMessage(ann.page, "Hi Ann, only we can read this");
      // Receipts are metadata, and work as in any conversation.
      await expectTick(ann.page, `Hello Bob ${marker}`, "read");

      // An image: sealed on Ann's device, opened on Bob's.
      const png = await drawPng(ann.page);
      await ann.page.locator('.chat .composer input[type="file"]').setInputFiles({ name: `${marker}.png`, mimeType: "image/png", buffer: png });
      const picture = bob.page.locator(`.chat .msg-row img[alt="${marker}.png"]`);
      await picture.waitFor({ timeout: 20_000 });
      await waitUntil("the image decrypted on Bob's device", () =>
        picture.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 0 && img.src.startsWith("blob:")),
      );
      await shot(bob.page, "desktop-e2ee");
      await bob.page.getByRole("button", { name: `Open image ${marker}.png` }).click();
      const full = bob.page.locator(".lightbox img");
      await waitUntil("the full image decrypted", () => full.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth === 640));
      await bob.page.keyboard.press("Escape");

      // A voice note: sealed like any file; Bob's player decodes the opened note for its waveform.
      await ann.page.getByRole("button", { name: "Record voice message" }).click();
      await ann.page.getByRole("timer").filter({ hasText: /0:01/ }).waitFor({ timeout: 10_000 });
      await ann.page.getByRole("button", { name: "Send voice message" }).click();
      const note = bob.page.locator(".chat .voice-note").last();
      await note.getByRole("button", { name: /^Play voice message, 0:0[1-9]$/ }).waitFor({ timeout: 20_000 });
      await waitUntil("the waveform of the decrypted note", async () => (await note.locator(".waveform i").evaluateAll((bars) => bars.map((b) => (b instanceof HTMLElement ? b.style.height : "")))).includes("100%"), 15_000);

      // A thread reply: its root is in the clear (threadRootSeq), its text is not.
      await bubble(bob.page, `Hello Bob ${marker}`).getByRole("button", { name: "Reply in thread" }).click();
      await send(bob.page, "A reply in the thread", "Reply in thread");
      await bubble(ann.page, `Hello Bob ${marker}`).getByRole("button", { name: "1 reply" }).click({ timeout: 15_000 });
      await expectMessage(ann.page, "A reply in the thread", ".thread-panel");
      await ann.page.getByRole("button", { name: "Close thread" }).click();
      await bob.page.getByRole("button", { name: "Close thread" }).click();

      // The offline outbox: written offline, kept as plaintext on the device, sealed when it goes.
      await ann.context.setOffline(true);
      await send(ann.page, "written offline");
      await bubble(ann.page, "written offline").locator('[data-tick="pending"]').waitFor();
      await ann.context.setOffline(false);
      await expectMessage(bob.page, "written offline");

      // The server's copy: ciphertexts and commits, no body, no marker, blobs as octet-stream.
      const raw = await serverHistory(bob.page, id);
      if (raw.includes(marker) || raw.includes("only we can read") || raw.includes("reply in the thread") || raw.includes("written offline")) throw new Error("the server's history holds plaintext");
      const { messages } = JSON.parse(raw) as { messages: { kind: string; body: string | null; media: { contentType: string; name: string; thumbnailId?: string }[] }[] };
      const encrypted = messages.filter((m) => m.kind === "encrypted");
      if (encrypted.length !== 6) throw new Error(`expected 6 encrypted messages, got ${messages.map((m) => m.kind).join(",")}`);
      if (encrypted.some((m) => m.body !== null)) throw new Error("an encrypted message has a body on the server");
      if (!messages.some((m) => m.kind === "mls.commit")) throw new Error("no MLS commit in the sequence");
      // Nor anywhere at rest: no file of the server's local state (every object's SQLite with its
      // WAL, D1, R2's blobs) holds the marker, in UTF-8 or UTF-16.
      const holding = filesHolding(ctx.server.stateDir, [Buffer.from(marker, "utf8"), Buffer.from(marker, "utf16le")]);
      if (holding.length > 0) throw new Error(`the server's local state holds plaintext: ${holding.join(", ")}`);
      const blobs = encrypted.flatMap((m) => m.media);
      if (blobs.length !== 2 || blobs.some((b) => b.contentType !== "application/octet-stream" || b.name !== "encrypted") || !blobs[0]!.thumbnailId) {
        throw new Error(`the image (with its thumbnail) and the voice note should be opaque blobs: ${JSON.stringify(blobs)}`);
      }

      // A reload keeps what this device decrypted (IndexedDB), and its MLS state goes on.
      await bob.page.reload();
      await encryptionReady(bob.page);
      await expectMessage(bob.page, `Hello Bob ${marker}`);
      await expectMessage(bob.page, "Hi Ann, only we can read this");
      await send(bob.page, "after a reload");
      await expectMessage(ann.page, "after a reload");
      if ((await bubble(ann.page, "after a reload").count()) !== 1) throw new Error("the message shows twice");

      // Both compare safety numbers from the group's member list: the same 60 digits.
      await ann.page.getByRole("button", { name: "Group info" }).click();
      await ann.page.getByRole("button", { name: "Safety number with Bob" }).click();
      const annSees = await shownDigits(ann.page);
      await bob.page.getByRole("button", { name: "Group info" }).click();
      await bob.page.getByRole("button", { name: "Safety number with Ann" }).click();
      const bobSees = await shownDigits(bob.page);
      if (annSees.length !== 12 || annSees.join("") !== bobSees.join("")) throw new Error(`Ann sees ${annSees.join(" ")}, Bob sees ${bobSees.join(" ")}`);
    },
  },
  {
    name: "E2EE: a direct chat with the lock on; a device with key packages joins by its Welcome",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const cy = await user(ctx, "Cy");
      // Bob's device takes part in E2EE once (a chat with Cy), so it has key packages on the server.
      await startEncryptedDirect(bob.page, cy.username);
      await encryptionReady(bob.page);

      const id = await startEncryptedDirect(ann.page, bob.username);
      await encryptionReady(ann.page);
      const { token } = await session(ann.page);
      // Ann's first commit added Bob's device with a Welcome: it is in the group without a commit of its own.
      const commitsBefore = await ann.page.evaluate(
        async ([c, t]) => {
          const res = await fetch(`/conversations/${encodeURIComponent(c)}/messages?after=0&limit=500`, { headers: { authorization: `Bearer ${t}` } });
          const { messages } = (await res.json()) as { messages: { kind: string }[] };
          return messages.filter((m) => m.kind === "mls.commit").length;
        },
        [id, token] as const,
      );
      if (commitsBefore !== 1) throw new Error(`expected Ann's one commit, got ${commitsBefore}`);
      await openConversation(bob.page, id);
      await encryptionReady(bob.page);
      await send(ann.page, "Welcome aboard");
      await expectMessage(bob.page, "Welcome aboard");
      await send(bob.page, "Thanks, read you");
      await expectMessage(ann.page, "Thanks, read you");
      const raw = await serverHistory(bob.page, id);
      if (raw.includes("Welcome aboard") || raw.includes("read you")) throw new Error("the server's history holds plaintext");
      if (raw.split('"kind":"mls.commit"').length - 1 !== 1) throw new Error("Bob's device joined by a commit of its own rather than its Welcome");
    },
  },
];
