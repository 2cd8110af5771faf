// Attachments on their way up, shown under the composer until sent (the XHR itself is in
// lib/mediaFiles.ts, started by the composer): progress, failure, and the local preview's URL.
import type { Browser } from "./browser";
import type { StoreCore, Upload } from "./storeCore";

export class Uploads {
  constructor(
    private readonly core: StoreCore,
    private readonly browser: Pick<Browser, "revokeObjectURL">,
  ) {}

  add(upload: Upload): void {
    this.core.state.uploads = [...this.core.state.uploads, upload];
    this.core.emit();
  }

  update(id: string, patch: Partial<Upload>): void {
    this.core.state.uploads = this.core.state.uploads.map((u) => (u.id === id ? { ...u, ...patch } : u));
    this.core.emit();
  }

  remove(id: string): void {
    const upload = this.core.state.uploads.find((u) => u.id === id);
    if (upload?.previewUrl) this.browser.revokeObjectURL(upload.previewUrl);
    this.core.state.uploads = this.core.state.uploads.filter((u) => u.id !== id);
    this.core.emit();
  }

  /** The server has no media routes yet: hide the attach controls. */
  disable(): void {
    this.core.state.caps.upload = false;
    this.core.notify("Attachments are not available on this server yet.");
  }
}
