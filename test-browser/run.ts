// Browser tests: the web client in Debian's Chromium against our own `wrangler dev`.
// Run with `npm run test:browser` (Node 22 from the `node` devDependency strips the types).
import type { Page } from "playwright-core";
import { newPage, run, waitUntil, type Test } from "./harness.ts";
import { safetyNumberTests } from "./safetyNumbers.ts";
import { e2eeTests } from "./e2ee.ts";
import { accessibilityTests } from "./accessibility.ts";
import { membershipTests } from "./membership.ts";
import { devicesTests } from "./devices.ts";
import { DESKTOP, PHONE, shot, bubble, createGroup, drawPng, expectMessage, expectTick, hasRoute, openConversation, openDirect, send, serverMessages, session, tickOf, user } from "./pages.ts";
import { actionTests } from "./actions.ts";
import { groupInfoTests } from "./groupInfo.ts";
import { prefsTests } from "./prefs.ts";
import { e2eeActionsTests } from "./e2eeActions.ts";
import { composeTests } from "./compose.ts";

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
      // Bob never looked Ann up: her name comes from the client's batched user lookup (GET /users?ids=).
      await waitUntil("Ann's name in Bob's list", async () => (await item.locator(".conv-title").textContent()) === "Ann", 10_000);
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
  {
    name: "presence: online while the other is connected, last seen after they leave",
    fn: async (ctx) => {
      if (!(await hasRoute(ctx, "/presence?userIds=x"))) return "skipped";
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const id = await openDirect(ann.page, bob.username);
      await send(ann.page, "ping");
      await openConversation(bob.page, id);
      await bob.page.getByTestId("chat-subtitle").filter({ hasText: /^online$/ }).waitFor({ timeout: 15_000 });
      await ann.page.getByTestId("chat-subtitle").filter({ hasText: /^online$/ }).waitFor({ timeout: 15_000 });
      await ann.page.locator(".chat-header .presence-dot.online").waitFor({ timeout: 5000 });
      await ann.context.close();
      await bob.page.getByTestId("chat-subtitle").filter({ hasText: /last seen/ }).waitFor({ timeout: 20_000 });
      await bob.page.locator(".chat-header .presence-dot.online").waitFor({ state: "detached", timeout: 5000 });
    },
  },
  {
    name: "attachments: an image with a client-made thumbnail, a file card and a voice note reach the other side",
    fn: async (ctx) => {
      if (!(await hasRoute(ctx, "/media/probe"))) return "skipped";
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const id = await openDirect(ann.page, bob.username);
      await send(ann.page, "Photos coming");
      await openConversation(bob.page, id);
      await expectMessage(bob.page, "Photos coming");

      // A real PNG drawn by the browser, picked through the file input.
      const png = await drawPng(ann.page);
      await ann.page.locator('.chat .composer input[type="file"]').setInputFiles({ name: "banner.png", mimeType: "image/png", buffer: png });
      await ann.page.locator(".chat .upload-card progress").waitFor({ timeout: 5000 }).catch(() => undefined);
      const annImg = ann.page.locator(".chat .media-frame img").first();
      await annImg.waitFor({ timeout: 20_000 });
      const bobImg = bob.page.locator(".chat .media-frame img").first();
      await bobImg.waitFor({ timeout: 20_000 });
      const size = await waitUntil("the image to decode", async () => {
        const s = await bobImg.evaluate((el) => (el instanceof HTMLImageElement && el.complete ? [el.naturalWidth, el.naturalHeight] : null));
        return s && s[0]! > 0 ? s : undefined;
      });
      // Bob's preview is the client-made thumbnail (at most 320 px), with the original's aspect ratio reserved.
      if (size[0]! > 320) throw new Error(`expected a thumbnail, got ${size.join("x")}`);
      const ratio = await bob.page.locator(".chat .media-frame").first().evaluate((el) => getComputedStyle(el).aspectRatio);
      if (!ratio.includes("640 / 400")) throw new Error(`aspect ratio ${ratio}`);

      // A PDF dropped on the conversation becomes a file card.
      const drop = await ann.page.evaluateHandle(() => {
        const dt = new DataTransfer();
        dt.items.add(new File(["%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"], "plan.pdf", { type: "application/pdf" }));
        return dt;
      });
      await ann.page.locator("section.chat").dispatchEvent("dragover", { dataTransfer: drop });
      await ann.page.locator("section.chat").dispatchEvent("drop", { dataTransfer: drop });
      await bob.page.locator(".chat .file-card", { hasText: "plan.pdf" }).waitFor({ timeout: 20_000 });

      // A short video recorded from a canvas in the browser: its first frame becomes the poster.
      const webm = await ann.page.evaluate(async () => {
        const c = document.createElement("canvas");
        c.width = 320;
        c.height = 180;
        const g = c.getContext("2d")!;
        const rec = new MediaRecorder(c.captureStream(15), { mimeType: "video/webm" });
        const chunks: Blob[] = [];
        rec.ondataavailable = (e) => chunks.push(e.data);
        const stopped = new Promise((r) => (rec.onstop = r));
        rec.start(100);
        for (let i = 0; i < 12; i++) {
          g.fillStyle = `hsl(${i * 30} 70% 50%)`;
          g.fillRect(0, 0, 320, 180);
          await new Promise((r) => setTimeout(r, 70));
        }
        rec.stop();
        await stopped;
        const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
        let s = "";
        for (const b of bytes) s += String.fromCharCode(b);
        return btoa(s);
      });
      await ann.page.locator('.chat .composer input[type="file"]').setInputFiles({ name: "clip.webm", mimeType: "video/webm", buffer: Buffer.from(webm, "base64") });
      await bob.page.locator(".chat .video-poster img").waitFor({ timeout: 20_000 });
      await bob.page.getByRole("button", { name: "Play video clip.webm" }).click();
      await bob.page.locator(".chat .media-frame video").waitFor({ timeout: 15_000 });

      // A voice note from Chromium's fake microphone.
      await ann.page.getByRole("button", { name: "Record voice message" }).click();
      await ann.page.getByRole("timer").filter({ hasText: /0:01/ }).waitFor({ timeout: 10_000 });
      await ann.page.getByRole("button", { name: "Send voice message" }).click();
      await bob.page.locator(".chat .voice-note audio").waitFor({ state: "attached", timeout: 20_000 });
      // Bob's player shows the note's length and its waveform (decoded from the note), and plays it.
      const note = bob.page.locator(".chat .voice-note").last();
      const play = note.getByRole("button", { name: /^Play voice message, 0:0[1-9]$/ });
      await play.waitFor({ timeout: 15_000 });
      await waitUntil("the waveform", async () => (await note.locator(".waveform i").evaluateAll((bars) => bars.map((b) => (b instanceof HTMLElement ? b.style.height : "")))).includes("100%"), 10_000);
      await play.click();
      await note.getByRole("button", { name: "Pause voice message" }).waitFor({ timeout: 5000 });
      await shot(bob.page, "desktop-media");

      // The picker offers only what the server takes; a refused upload's Dismiss is a whole word.
      const accept = (await ann.page.locator('.chat .composer input[type="file"]').getAttribute("accept")) ?? "";
      for (const t of ["image/png", "video/webm", "audio/webm", "application/pdf"]) if (!accept.split(",").includes(t)) throw new Error(`accept lacks ${t}: ${accept}`);
      if (/\*\/\*|octet-stream/.test(accept)) throw new Error(`accept offers any file: ${accept}`);
      await ann.page.setViewportSize(PHONE);
      await ann.page.locator('.chat .composer input[type="file"]').setInputFiles({ name: "not-really.png", mimeType: "image/png", buffer: Buffer.from("these bytes are not a PNG image at all") });
      const dismiss = ann.page.locator(".chat .upload-card").getByRole("button", { name: "Dismiss" });
      await dismiss.waitFor({ timeout: 20_000 });
      const d = await dismiss.boundingBox();
      if (!d || d.width < 40 || d.height > 30) throw new Error(`Dismiss squeezed: ${JSON.stringify(d)}`);
      await dismiss.click();
      await ann.page.setViewportSize(DESKTOP);

      // More photos, then Bob reopens the chat on a phone: it opens at the newest message and stays
      // there while the media loads (its space is reserved from the sizes the message carries).
      for (const n of [1, 2]) await ann.page.locator('.chat .composer input[type="file"]').setInputFiles({ name: `photo-${n}.png`, mimeType: "image/png", buffer: png });
      await send(ann.page, "the newest message");
      await expectMessage(bob.page, "the newest message");
      // Read, so the chat reopens at its end rather than at an "Unread messages" divider.
      await bob.page.locator(".chat .messages").evaluate((el) => el.scrollTo({ top: el.scrollHeight }));
      await expectTick(ann.page, "the newest message", "read");
      await bob.page.setViewportSize(PHONE);
      await bob.page.reload();
      await expectMessage(bob.page, "the newest message");
      const list = bob.page.locator(".chat .messages");
      const gap = () => list.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
      await waitUntil("the media to load", async () => (await bob.page.locator(".chat .media-frame img").count()) >= 3 && (await bob.page.locator(".chat .voice-note audio").count()) >= 1, 20_000);
      await bob.page.waitForTimeout(1000);
      if ((await gap()) > 48) throw new Error(`opened ${await gap()} px above the newest message`);
      // Scrolled up, a button jumps back to the latest.
      await list.evaluate((el) => el.scrollTo({ top: 0 }));
      const jump = bob.page.getByRole("button", { name: /Jump to latest/ });
      await jump.click({ timeout: 5000 });
      await waitUntil("the newest message in view", async () => (await gap()) <= 48, 5000);
    },
  },
  {
    name: "a group of three: create, read by N, a thread reply, remove a member, leave",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const cy = await user(ctx, "Cy", PHONE);
      const id = await createGroup(ann.page, "Weekend trip", bob.username);
      // Ann (admin) adds Cy from the group info panel.
      await ann.page.getByRole("button", { name: "Group info" }).click();
      await ann.page.getByLabel("Add people").fill(cy.username);
      await ann.page.locator(`.side-panel button.person[data-username="${cy.username}"]`).click();
      await ann.page.getByRole("button", { name: "Add 1 to group" }).click();
      await ann.page.locator(".chat .system-msg", { hasText: "added Cy" }).waitFor({ timeout: 15_000 });
      await ann.page.locator(".side-panel .member", { hasText: "Cy" }).waitFor();
      await shot(ann.page, "desktop-group-info");
      await ann.page.getByRole("button", { name: "Close", exact: true }).click();
      await send(ann.page, "Where shall we go?");
      // Sent, or already delivered: Bob's and Cy's apps are open on their lists.
      await waitUntil("the message to be stored", async () => ["sent", "delivered"].includes((await tickOf(ann.page, "Where shall we go?")) ?? ""));

      await openConversation(bob.page, id);
      await expectMessage(bob.page, "Where shall we go?");
      await waitUntil("read by 1", async () => (await bubble(ann.page, "Where shall we go?").locator(".read-by").textContent().catch(() => null)) === "1", 15_000);
      await openConversation(cy.page, id);
      await expectMessage(cy.page, "Where shall we go?");
      await expectTick(ann.page, "Where shall we go?", "read");

      await send(bob.page, "The coast!");
      await expectMessage(cy.page, "The coast!");
      await expectMessage(ann.page, "The coast!");

      // Cy replies in a thread on Bob's message.
      await bubble(cy.page, "The coast!").getByRole("button", { name: "Reply in thread" }).click();
      await cy.page.getByRole("complementary", { name: "Thread" }).waitFor();
      await send(cy.page, "Yes, with a tent", "Reply in thread");
      await expectMessage(cy.page, "Yes, with a tent", ".thread-panel");
      await bubble(ann.page, "The coast!").getByRole("button", { name: "1 reply" }).click({ timeout: 15_000 });
      await expectMessage(ann.page, "Yes, with a tent", ".thread-panel");
      // Replies stay in the thread, not in the main timeline.
      if ((await bubble(ann.page, "Yes, with a tent", ".chat").count()) !== 0) throw new Error("thread reply shown in the main timeline");
      await send(ann.page, "Count me in", "Reply in thread");
      await bubble(bob.page, "The coast!").getByRole("button", { name: "2 replies" }).waitFor({ timeout: 15_000 });
      await shot(ann.page, "desktop-group-thread");
      await shot(cy.page, "phone-thread");
      await ann.page.getByRole("button", { name: "Close thread" }).click();

      // Ann (admin) removes Cy; Cy is told and can no longer write there.
      await ann.page.getByRole("button", { name: "Group info" }).click();
      await ann.page.getByRole("button", { name: "Remove Cy" }).click();
      await ann.page.getByRole("alertdialog").getByRole("button", { name: "Remove", exact: true }).click();
      await ann.page.locator(".chat .system-msg", { hasText: "removed Cy" }).waitFor({ timeout: 15_000 });
      await cy.page.getByRole("status").filter({ hasText: "no longer a member" }).first().waitFor({ timeout: 15_000 });
      // Bob leaves.
      await bob.page.getByRole("button", { name: "Group info" }).click();
      await bob.page.getByRole("button", { name: "Leave group" }).click();
      await bob.page.getByRole("button", { name: "Leave", exact: true }).click();
      // The group stays in Bob's list, readable up to his leaving (test-browser/membership.ts).
      await bob.page.locator(`a.conv-item[data-conversation="${id}"]`).click({ timeout: 15_000 });
      await bob.page.locator(".removed-note", { hasText: "You left this group." }).waitFor({ timeout: 15_000 });
      await ann.page.locator(".chat .system-msg", { hasText: "Bob left" }).waitFor({ timeout: 15_000 });
    },
  },
  {
    name: "text: right-to-left text, links, emoji-only messages, you in system messages, thread actions only in groups, no keyboard on a phone",
    fn: async (ctx) => {
      const ann = await user(ctx, "Alice Adams");
      const bob = await user(ctx, "Bob", PHONE, true);
      const id = await openDirect(ann.page, bob.username);
      const hebrew = "שלום, מה שלומך?";
      await send(ann.page, hebrew);
      await send(ann.page, "read https://example.com/a?b=1. <b>bold</b> javascript:alert(1)");
      await send(ann.page, "🎉");
      await send(ann.page, "hi 🎉");

      // Bob's phone: the chat opens without focusing the composer (which would raise the keyboard).
      const coarse = await bob.page.evaluate(() => matchMedia("(pointer: coarse)").matches && matchMedia("(hover: none)").matches);
      if (!coarse) throw new Error("the phone context is not a touch screen");
      const item = bob.page.locator(`a.conv-item[data-conversation="${id}"]`);
      await item.waitFor({ timeout: 20_000 });
      // The list's preview of the last message and the names take their own direction.
      await waitUntil("the preview", async () => ((await item.locator(".conv-preview").textContent()) ?? "").includes("hi 🎉"), 15_000);
      await openConversation(bob.page, id);
      await expectMessage(bob.page, "hi 🎉");
      await bob.page.waitForTimeout(300);
      const focused = await bob.page.evaluate(() => document.activeElement?.tagName);
      if (focused === "TEXTAREA") throw new Error("the composer took focus on a phone");

      // Right to left: the bubble, the composer while typing it, the list's preview.
      const rtl = (loc: ReturnType<Page["locator"]>) => loc.evaluate((el) => el.matches(":dir(rtl)"));
      if (!(await rtl(bubble(bob.page, hebrew).locator(".text")))) throw new Error("Hebrew bubble shown left to right");
      if (await rtl(bubble(bob.page, "hi 🎉").locator(".text"))) throw new Error("English bubble shown right to left");
      const box = bob.page.getByRole("textbox", { name: "Message" });
      await box.fill(hebrew);
      if (!(await rtl(box))) throw new Error("the composer shows Hebrew left to right");
      await box.fill("");
      await send(bob.page, hebrew);
      await ann.page.getByRole("button", { name: "New chat" }).click();
      const annItem = ann.page.locator(`a.conv-item[data-conversation="${id}"]`);
      await waitUntil("the Hebrew preview", async () => ((await annItem.locator(".conv-preview").textContent()) ?? "").includes(hebrew), 15_000);
      if (!(await rtl(annItem.locator(".conv-preview [dir=auto]")))) throw new Error("the preview shows Hebrew left to right");
      if (!(await annItem.locator(".conv-title").evaluate((el) => el.getAttribute("dir") === "auto"))) throw new Error("a name without dir=auto");
      await openConversation(ann.page, id);

      // A link is a link (http and https only, opening apart); markup stays text.
      const linkText = bubble(bob.page, "read https://example.com/a?b=1. <b>bold</b> javascript:alert(1)").locator(".text");
      const links = await linkText.locator("a").evaluateAll((els) => els.map((a) => [a.getAttribute("href"), a.getAttribute("target"), a.getAttribute("rel"), a.textContent]));
      if (JSON.stringify(links) !== JSON.stringify([["https://example.com/a?b=1", "_blank", "noopener noreferrer", "https://example.com/a?b=1"]])) throw new Error(`links ${JSON.stringify(links)}`);
      if ((await linkText.locator("b").count()) !== 0) throw new Error("markup in a message was rendered");

      // One to three emoji alone are shown large.
      const size = (text: string) => bubble(bob.page, text).locator(".text").evaluate((el) => parseFloat(getComputedStyle(el).fontSize));
      if ((await size("🎉")) < 2 * (await size("hi 🎉"))) throw new Error("an emoji-only message is not enlarged");

      // A direct chat has no thread button.
      if ((await bob.page.getByRole("button", { name: "Reply in thread" }).count()) !== 0) throw new Error("thread button in a direct chat");
      if ((await ann.page.getByRole("button", { name: "Reply in thread" }).count()) !== 0) throw new Error("thread button in a direct chat");

      // A group: Alice reads "You created the group", Bob reads her name and "you".
      const group = await createGroup(ann.page, "Book club", bob.username);
      await ann.page.locator(".chat .system-msg").filter({ hasText: /^You created the group$/ }).waitFor({ timeout: 15_000 });
      // A panel that opens takes the focus.
      await ann.page.getByRole("button", { name: "Group info" }).click();
      await waitUntil("focus in the panel", () => ann.page.evaluate(() => !!document.activeElement?.closest(".side-panel")), 5000);
      await ann.page.getByRole("button", { name: "Close", exact: true }).click();
      await send(ann.page, "Chapter one?");
      await bob.page.getByRole("button", { name: "Back to chats" }).click();
      await openConversation(bob.page, group);
      await expectMessage(bob.page, "Chapter one?");
      const said = await bob.page.locator(".chat .system-msg").allTextContents();
      if (!said.some((t) => /^Alice Adams created the group/.test(t))) throw new Error(`system messages: ${said.join(" | ")}`);
      if (said.some((t) => /\bYou\b/.test(t) && !t.startsWith("You"))) throw new Error(`"You" mid-sentence: ${said.join(" | ")}`);

      // In a group on a phone the thread button is behind a tap on the bubble, not beside every bubble.
      const reply = bubble(bob.page, "Chapter one?").getByRole("button", { name: "Reply in thread" });
      if (await reply.isVisible()) throw new Error("thread button always visible on a phone");
      await bubble(bob.page, "Chapter one?").locator(".bubble").tap();
      await reply.tap();
      await bob.page.getByRole("complementary", { name: "Thread" }).waitFor();
      // On a desktop it shows on hover, in groups.
      await bubble(ann.page, "Chapter one?").hover();
      await bubble(ann.page, "Chapter one?").getByRole("button", { name: "Reply in thread" }).waitFor({ state: "visible" });
    },
  },
  {
    name: "offline outbox: messages written offline are pending, survive a reload, and are delivered exactly once",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const id = await openDirect(ann.page, bob.username);
      await send(ann.page, "before the tunnel");
      await openConversation(bob.page, id);
      await expectMessage(bob.page, "before the tunnel");
      await expectTick(ann.page, "before the tunnel", "read");
      // The service worker must control the page before the network goes away.
      await ann.page.waitForFunction(() => navigator.serviceWorker.controller !== null, undefined, { timeout: 15_000 });

      const media = await hasRoute(ctx, "/media/probe");
      if (media) {
        await ann.page.getByRole("button", { name: "Attach files" }).waitFor();
        // A photo from Bob: its thumbnail is kept on Ann's device for the reload offline.
        await bob.page.locator('.chat .composer input[type="file"]').setInputFiles({ name: "view.png", mimeType: "image/png", buffer: await drawPng(bob.page) });
        await ann.page.locator(".chat .media-frame img").waitFor({ timeout: 20_000 });
        const annId = (await session(ann.page)).userId;
        await waitUntil("the thumbnail and the photo's message kept on the device", () =>
          ann.page.evaluate(async ({ uid, conversationId }) => {
            const db = await new Promise<IDBDatabase>((resolve, reject) => {
              const req = indexedDB.open(`edge-chat:${uid}`);
              req.onsuccess = () => resolve(req.result);
              req.onerror = () => reject(req.error);
            });
            const get = <T,>(run: (store: IDBObjectStore) => IDBRequest<T>) =>
              new Promise<T>((resolve, reject) => {
                const req = run(db.transaction("kv").objectStore("kv"));
                req.onsuccess = () => resolve(req.result);
                req.onerror = () => reject(req.error);
              });
            const keys = await get((store) => store.getAllKeys());
            // The offline cache of the chat's latest messages is written at most twice a second.
            const cached = (await get((store) => store.get(`messages:${conversationId}`))) as { media?: unknown[] }[] | undefined;
            db.close();
            return keys.some((k) => String(k).startsWith("thumb:")) && !!cached?.some((m) => (m.media?.length ?? 0) > 0);
          }, { uid: annId, conversationId: id }),
        );
      }
      await ann.context.setOffline(true);
      await ann.page.getByRole("status").filter({ hasText: "You are offline" }).waitFor({ timeout: 10_000 });
      await send(ann.page, "written in the tunnel 1");
      await send(ann.page, "written in the tunnel 2");
      await expectTick(ann.page, "written in the tunnel 1", "pending");
      await expectTick(ann.page, "written in the tunnel 2", "pending");
      await shot(ann.page, "desktop-offline");

      // The app opens offline from the service worker's cache, with the cached conversation and the outbox.
      await ann.page.reload();
      await ann.page.locator(`a.conv-item[data-conversation="${id}"]`).waitFor({ timeout: 15_000 });
      await expectMessage(ann.page, "before the tunnel");
      await expectTick(ann.page, "written in the tunnel 1", "pending");
      // It says offline (not "Connecting…"), read ticks stay read, and the attach and voice buttons stay.
      await ann.page.getByRole("status").filter({ hasText: "You are offline" }).waitFor({ timeout: 5000 });
      await ann.page.waitForTimeout(1000);
      if ((await ann.page.getByRole("status").filter({ hasText: "Connecting" }).count()) !== 0) throw new Error("says Connecting while offline");
      await expectTick(ann.page, "before the tunnel", "read");
      if (media) {
        for (const name of ["Attach files", "Record voice message"]) {
          if ((await ann.page.getByRole("button", { name }).count()) !== 1) throw new Error(`"${name}" vanished offline`);
        }
        await waitUntil("the kept thumbnail shown offline", () =>
          ann.page.locator(".chat .media-frame img").first().evaluate((el) => el instanceof HTMLImageElement && el.complete && el.naturalWidth > 0),
        );
      }
      if ((await bubble(bob.page, "written in the tunnel 1").count()) !== 0) throw new Error("sent while offline");

      await ann.context.setOffline(false);
      await expectMessage(bob.page, "written in the tunnel 1");
      await expectMessage(bob.page, "written in the tunnel 2");
      await expectTick(ann.page, "written in the tunnel 2", "read");
      const stored = await serverMessages(bob.page, id);
      for (const text of ["written in the tunnel 1", "written in the tunnel 2"]) {
        const n = stored.filter((m) => m.body === text).length;
        if (n !== 1) throw new Error(`"${text}" stored ${n} times`);
        for (const p of [ann.page, bob.page]) if ((await bubble(p, text).count()) !== 1) throw new Error(`"${text}" shown twice`);
      }
      const order = stored.filter((m) => m.body?.startsWith("written")).map((m) => m.body);
      if (order.join("|") !== "written in the tunnel 1|written in the tunnel 2") throw new Error(`order ${order.join("|")}`);
    },
  },
  {
    name: "history: scrolling up loads older pages (before=), and a chat opens at the first unread",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const id = await openDirect(ann.page, bob.username);
      const { token } = await session(ann.page);
      await ann.page.evaluate(
        async ([cid, t]) => {
          for (let i = 1; i <= 130; i++) {
            const res = await fetch("/send", {
              method: "POST",
              headers: { authorization: `Bearer ${t}`, "content-type": "application/json" },
              body: JSON.stringify({ conversationId: cid, clientMsgId: `bulk-${i}`, body: `bulk message ${i}` }),
            });
            if (!res.ok) throw new Error(`send ${i}: ${res.status}`);
          }
        },
        [id, token] as const,
      );
      // Bob has 130 unread: the chat opens at the divider, above the newest messages.
      const item = bob.page.locator(`a.conv-item[data-conversation="${id}"]`);
      await waitUntil("130 unread", async () => (await item.locator(".badge").textContent().catch(() => null)) === "99+", 20_000);
      await openConversation(bob.page, id);
      const divider = bob.page.locator(".unread-divider");
      await divider.waitFor({ timeout: 15_000 });
      await waitUntil("the divider in view", async () => {
        const box = await divider.boundingBox();
        const view = await bob.page.locator(".chat .messages").boundingBox();
        return !!box && !!view && box.y >= view.y - 1 && box.y < view.y + view.height;
      });
      await expectMessage(bob.page, "bulk message 1");

      // Ann's device keeps the latest 100 messages (seq 32-131; seq 1 is the chat's start). Its
      // saves are gathered for half a second, so wait for it before reloading: a reload caught
      // inside that window reopens from an older cache (the save the page attempts as it goes is
      // best effort; browsers may drop work done while a page unloads).
      await expectMessage(ann.page, "bulk message 130");
      const annId = (await session(ann.page)).userId;
      await waitUntil("Ann's cache to hold the latest 100", async () => {
        const cached = await ann.page.evaluate(
          async ([cid, uid]) => {
            const db = await new Promise<IDBDatabase>((resolve, reject) => {
              const req = indexedDB.open(`edge-chat:${uid}`);
              req.onsuccess = () => resolve(req.result);
              req.onerror = () => reject(req.error);
            });
            const rows = await new Promise<unknown>((resolve, reject) => {
              const req = db.transaction("kv").objectStore("kv").get(`messages:${cid}`);
              req.onsuccess = () => resolve(req.result);
              req.onerror = () => reject(req.error);
            });
            db.close();
            return Array.isArray(rows) ? rows.map((m: { seq: number }) => m.seq) : [];
          },
          [id, annId] as const,
        );
        return cached.length === 100 && cached[0] === 32 && cached[99] === 131;
      });
      // Ann reloads: her chat shows the cache and the latest page, not the whole history, and
      // older pages come as she scrolls up.
      await ann.page.reload();
      await openConversation(ann.page, id);
      await expectMessage(ann.page, "bulk message 130");
      const reopened = await ann.page.locator(".chat .msg-row[data-seq]").evaluateAll((els) => els.map((e) => Number(e.getAttribute("data-seq"))));
      if (reopened[0] !== 32 || reopened.length !== 100) {
        throw new Error(`expected the cached latest 100 (32-131), got ${reopened.length} rows: ${reopened.join(",")}`);
      }
      for (let i = 0; i < 10 && (await ann.page.locator(".history-start").count()) === 0; i++) {
        await ann.page.locator(".chat .messages").evaluate((el) => el.scrollTo({ top: 0 }));
        await ann.page.waitForTimeout(300);
      }
      await ann.page.locator(".history-start").waitFor({ timeout: 15_000 });
      const seqs = await ann.page.locator(".chat .msg-row[data-seq]").evaluateAll((els) => els.map((e) => Number(e.getAttribute("data-seq"))));
      const sorted = [...seqs].sort((a, b) => a - b);
      if (seqs.join() !== sorted.join() || new Set(seqs).size !== seqs.length || seqs.length !== 130) throw new Error(`bad history: ${seqs.length} rows`);
    },
  },
  {
    name: "push: a message pushed into the service worker shows a notification; a click opens the conversation",
    fn: async (ctx) => {
      const ann = await user(ctx, "Ann");
      await ann.context.grantPermissions(["notifications"], { origin: ctx.server.origin });
      const cdp = await ann.context.newCDPSession(ann.page);
      const registrations = new Map<string, string>();
      cdp.on("ServiceWorker.workerRegistrationUpdated", (e: { registrations: Array<{ registrationId: string; scopeURL: string; isDeleted: boolean }> }) => {
        for (const r of e.registrations) if (!r.isDeleted) registrations.set(r.scopeURL, r.registrationId);
      });
      await cdp.send("ServiceWorker.enable");
      await ann.page.waitForFunction(() => navigator.serviceWorker.controller !== null, undefined, { timeout: 15_000 });
      const registrationId = await waitUntil("the service worker registration", () => registrations.get(`${ctx.server.origin}/`));
      const payload = { type: "message", conversationId: "c-test", seq: 7, messageId: "m7", senderId: "u-bob", title: "Bob", body: "Are we still on for tonight?" };
      await cdp.send("ServiceWorker.deliverPushMessage", { origin: ctx.server.origin, registrationId, data: JSON.stringify(payload) });
      const shown = await waitUntil("a notification", async () => {
        const list = await ann.page.evaluate(async () => {
          const reg = await navigator.serviceWorker.ready;
          return (await reg.getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag }));
        });
        return list.length > 0 ? list : undefined;
      });
      const n = shown[0]!;
      if (n.title !== "Bob" || n.body !== "Are we still on for tonight?" || n.tag !== "c-test") throw new Error(`unexpected notification ${JSON.stringify(n)}`);
      // A click on the notification opens its conversation in the open app.
      const sw = await waitUntil("the service worker handle", () => ann.context.serviceWorkers()[0]);
      // Evaluated in the service worker's global scope (hence a string: it is not this file's DOM).
      await sw.evaluate(`(async () => {
        const [notification] = await self.registration.getNotifications({ tag: "c-test" });
        if (!notification) throw new Error("no notification");
        self.dispatchEvent(new NotificationEvent("notificationclick", { notification }));
      })()`);
      await waitUntil("the conversation to open", () => new URL(ann.page.url()).pathname === "/c/c-test");
      // An E2EE push has no body: the notification says only that there is a message.
      await cdp.send("ServiceWorker.deliverPushMessage", { origin: ctx.server.origin, registrationId, data: JSON.stringify({ ...payload, conversationId: "c-e2ee", body: undefined }) });
      await waitUntil("a preview-free notification", async () => {
        const list = await ann.page.evaluate(async () => (await (await navigator.serviceWorker.ready).getNotifications({ tag: "c-e2ee" })).map((x) => x.body));
        return list[0] === "You have a new message";
      });
    },
  },
  {
    name: "screens: sign-in, settings and dark theme at desktop and phone width",
    fn: async (ctx) => {
      const { page } = await newPage(ctx, PHONE);
      await page.goto("/login");
      await page.getByRole("heading", { name: "Sign in to Edge Chat" }).waitFor();
      if ((await page.getByRole("main").count()) !== 1) throw new Error("the sign-in page has no main landmark");
      await shot(page, "phone-login");
      const ann = await user(ctx, "Ann");
      const bob = await user(ctx, "Bob");
      const id = await openDirect(ann.page, bob.username);
      await send(ann.page, "Dark mode looks good");
      await openConversation(bob.page, id);
      await expectMessage(bob.page, "Dark mode looks good");
      await send(bob.page, "It does 🌙");
      await expectMessage(ann.page, "It does 🌙");
      // A conversation link's name says what the row shows: name, preview, time.
      await ann.page.getByRole("link", { name: /^Bob, It does 🌙, \d\d:\d\d(, online)?$/ }).waitFor({ timeout: 10_000 });
      await ann.page.getByRole("button", { name: "Settings", exact: true }).click();
      await ann.page.setViewportSize(PHONE);
      await shot(ann.page, "phone-settings");
      await ann.page.setViewportSize(DESKTOP);
      await ann.page.getByLabel("Dark").check();
      const bg = await ann.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      if (bg !== "rgb(14, 17, 20)") throw new Error(`dark theme not applied: ${bg}`);
      await openConversation(ann.page, id);
      await shot(ann.page, "desktop-dark");
      // Keyboard only: Ctrl+K to the chat search, arrow down to the chat, Enter opens it, type and send.
      await ann.page.getByRole("button", { name: "New chat" }).click();
      await ann.page.keyboard.press("Control+k");
      await waitUntil("search focused", () => ann.page.evaluate(() => document.activeElement?.id === "chat-search"));
      await ann.page.keyboard.press("ArrowDown");
      await ann.page.keyboard.press("Enter");
      await waitUntil("the composer focused", () => ann.page.evaluate(() => document.activeElement?.getAttribute("aria-label") === "Message"));
      await ann.page.keyboard.type("typed with the keyboard");
      await ann.page.keyboard.press("Enter");
      await expectMessage(bob.page, "typed with the keyboard");
    },
  },
  ...membershipTests,
];
tests.push(...e2eeTests);

tests.push(...safetyNumberTests);
tests.push(...accessibilityTests);
tests.push(...devicesTests);

tests.push(...actionTests);
tests.push(...groupInfoTests);
tests.push(...prefsTests);
tests.push(...e2eeActionsTests);
tests.push(...composeTests);

// Presence flaps settle in 1 s instead of 3; the history test sends 130 messages quickly.
const failed = await run(tests, ["--var", "PRESENCE_DEBOUNCE_MS:1000", "--var", "RATE_LIMIT_PER_SECOND:200", "--var", "RATE_LIMIT_BURST:400", "--var", "REGISTRATIONS_PER_ADDRESS_PER_HOUR:100000", "--var", "GROUPS_PER_USER_PER_HOUR:100000"]);
process.exit(failed > 0 ? 1 : 0);
