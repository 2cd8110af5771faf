import { render } from "preact";
import { AppStore } from "./app/appStore";
import { windowBrowser } from "./app/windowBrowser";
import { MediaCache } from "./lib/mediaFiles";
import { App } from "./ui/App";
import { ServicesContext } from "./ui/context";
import "./styles.css";

const browser = windowBrowser();
const store = new AppStore(browser);
const media = new MediaCache(store.api, () => store.core.db);
browser.applyTheme(store.state.theme);

const root = document.getElementById("app")!;
root.textContent = "";
render(
  <ServicesContext.Provider value={{ store, media }}>
    <App />
  </ServicesContext.Provider>,
  root,
);
void store.start();

if ("serviceWorker" in navigator) {
  // The service worker caches the app shell so the app opens offline, and shows push notifications.
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch((err: unknown) => console.warn("service worker registration failed", err));
}
