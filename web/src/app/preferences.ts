// Settings kept on this device: the theme, in localStorage, applied to the document at once.
import type { Browser, KeyValueStorage, Theme } from "./browser";
import type { StoreCore } from "./storeCore";

const THEME_KEY = "edge-chat:theme";

export function readTheme(storage: KeyValueStorage): Theme {
  const t = storage.getItem(THEME_KEY);
  return t === "light" || t === "dark" ? t : "system";
}

export class Preferences {
  constructor(
    private readonly core: StoreCore,
    private readonly browser: Pick<Browser, "storage" | "applyTheme">,
  ) {}

  setTheme(theme: Theme): void {
    this.core.state.theme = theme;
    this.browser.storage.setItem(THEME_KEY, theme);
    this.browser.applyTheme(theme);
    this.core.emit();
  }
}
