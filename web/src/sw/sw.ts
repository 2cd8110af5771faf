/// <reference lib="webworker" />
// The service worker: precaches the app shell (so the app opens offline and shows what the
// local database holds), serves hashed assets cache-first and navigations network-first, shows
// push notifications, and opens the conversation when one is clicked. The API is never cached:
// the app keeps its own data in IndexedDB.
export {};
declare const self: ServiceWorkerGlobalScope;

// Replaced at build time (web/vite.config.ts) with the list of files and a version hash.
const MANIFEST: { version: string; files: string[] } = JSON.parse("__PRECACHE_MANIFEST__");
const CACHE = `shell-${MANIFEST.version}`;
const SHELL = "/";

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(MANIFEST.files.map((f) => new Request(f, { cache: "reload" })));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) if (key.startsWith("shell-") && key !== CACHE) await caches.delete(key);
      await self.clients.claim();
    })(),
  );
});

const API = /^\/(auth|me|users|conversations|group|send|messages|ws|presence|upload|media|push)(\/|$)/;

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin || API.test(url.pathname)) return;
  if (req.mode === "navigate") {
    // Network first, so a deploy shows up at once; the cached shell when offline. Every
    // client route is the same index.html.
    event.respondWith(
      (async () => {
        try {
          return await fetch(req);
        } catch {
          const cached = await caches.match(SHELL, { cacheName: CACHE });
          return cached ?? Response.error();
        }
      })(),
    );
    return;
  }
  event.respondWith(
    (async () => {
      const cached = await caches.match(req, { cacheName: CACHE });
      if (cached) return cached;
      const res = await fetch(req);
      if (res.ok && url.pathname.startsWith("/assets/")) {
        const cache = await caches.open(CACHE);
        await cache.put(req, res.clone());
      }
      return res;
    })(),
  );
});

interface PushPayload {
  type?: string;
  conversationId?: string;
  seq?: number;
  title?: string;
  body?: string;
}

function readPayload(data: PushMessageData | null): PushPayload {
  if (!data) return {};
  try {
    const json: unknown = data.json();
    if (typeof json !== "object" || json === null) return {};
    const r = json as Record<string, unknown>;
    return {
      ...(typeof r.type === "string" ? { type: r.type } : {}),
      ...(typeof r.conversationId === "string" ? { conversationId: r.conversationId } : {}),
      ...(typeof r.seq === "number" ? { seq: r.seq } : {}),
      ...(typeof r.title === "string" ? { title: r.title } : {}),
      ...(typeof r.body === "string" ? { body: r.body } : {}),
    };
  } catch {
    return { body: data.text() };
  }
}

self.addEventListener("push", (event) => {
  const p = readPayload(event.data);
  event.waitUntil(
    (async () => {
      // The server pushes only when no device has a live socket, but this browser may have just
      // opened the conversation: then the message is already on screen.
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const viewing = windows.some((w) => w.focused && p.conversationId !== undefined && new URL(w.url).pathname === `/c/${encodeURIComponent(p.conversationId)}`);
      if (viewing) return;
      await self.registration.showNotification(p.title ?? "New message", {
        // An end-to-end encrypted conversation's push has no preview.
        body: p.body ?? "You have a new message",
        tag: p.conversationId ?? "message",
        data: { conversationId: p.conversationId ?? null },
        icon: "/icons/icon-192.png",
        badge: "/icons/badge-96.png",
      });
    })(),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const data: unknown = event.notification.data;
  const conversationId = typeof data === "object" && data !== null && "conversationId" in data && typeof data.conversationId === "string" ? data.conversationId : null;
  const path = conversationId ? `/c/${encodeURIComponent(conversationId)}` : "/";
  const work = (async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const win = windows[0];
    if (win) {
      // An open app navigates itself (keeping its state and sockets); then it comes to the front.
      win.postMessage({ type: "open", conversationId });
      await win.focus().catch(() => undefined);
      return;
    }
    await self.clients.openWindow(path);
  })();
  try {
    event.waitUntil(work);
  } catch {
    // A click dispatched by script (the browser tests) is untrusted and cannot extend its lifetime.
  }
});
