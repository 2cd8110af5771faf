// The real Browser (browser.ts): window, document, navigator, localStorage, IndexedDB, partysocket.
import { browserLock } from "../e2ee/lock";
import { LocalDb } from "../lib/idb";
import { LiveSocket } from "../lib/socket";
import type { Browser, PageEvent, Theme } from "./browser";

export function applyTheme(theme: Theme): void {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

function on(event: PageEvent, listener: () => void): void {
  if (event === "visible" || event === "hidden") {
    document.addEventListener("visibilitychange", () => {
      if ((document.visibilityState === "visible") === (event === "visible")) listener();
    });
  } else {
    window.addEventListener(event, listener);
  }
}

export function windowBrowser(): Browser {
  return {
    storage: localStorage,
    clock: { now: () => Date.now(), setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (t) => clearTimeout(t as number) },
    address: {
      pathname: () => location.pathname,
      search: () => location.search,
      push: (path) => history.pushState(null, "", path),
      replace: (path) => history.replaceState(null, "", path),
    },
    online: () => navigator.onLine,
    visible: () => document.visibilityState === "visible",
    on,
    fetch: (path, init) => fetch(path, init),
    openSocket: (options) => new LiveSocket(options),
    localStores: { open: (userId) => LocalDb.open(userId), destroy: (userId) => LocalDb.destroy(userId) },
    notifications: {
      pushSupported: "PushManager" in window && "serviceWorker" in navigator && "Notification" in window,
      permission: () => ("Notification" in window ? Notification.permission : null),
      requestPermission: () => Notification.requestPermission(),
      subscribe: async (applicationServerKey) => {
        const registration = await navigator.serviceWorker.ready;
        return (await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey })).toJSON();
      },
      subscription: async () => {
        if (!("serviceWorker" in navigator)) return null;
        const registration = await navigator.serviceWorker.getRegistration();
        return (await registration?.pushManager.getSubscription()) ?? null;
      },
      show: (title, options) => void navigator.serviceWorker?.ready.then((registration) => registration.showNotification(title, options)),
      onOpen: (listener) =>
        navigator.serviceWorker?.addEventListener("message", (event: MessageEvent<unknown>) => {
          const data = event.data;
          if (typeof data === "object" && data !== null && "type" in data && data.type === "open" && "conversationId" in data && typeof data.conversationId === "string") {
            listener(data.conversationId);
          }
        }),
    },
    userAgent: navigator.userAgent,
    applyTheme,
    revokeObjectURL: (url) => URL.revokeObjectURL(url),
    exclusive: browserLock(navigator.locks),
  };
}
