// Every read and write of a socket's attachment goes through one typed accessor per object class.
// The attachment is what a socket keeps across hibernation (at most 16 KiB); it is parsed once per
// socket per wake-up and cached, since frames arrive far more often than sockets do.

export class Attachments<T extends object> {
  private readonly cache = new WeakMap<WebSocket, T | null>();

  /** `parse` checks a stored value; null for one it does not recognise. */
  constructor(private readonly parse: (value: unknown) => T | null) {}

  read(ws: WebSocket): T | null {
    let value = this.cache.get(ws);
    if (value === undefined) this.cache.set(ws, (value = this.parse(ws.deserializeAttachment())));
    return value;
  }

  write(ws: WebSocket, value: T): void {
    ws.serializeAttachment(value);
    this.cache.set(ws, value);
  }
}

/** The fields of an object-shaped attachment, or null. */
export function fieldsOf(value: unknown): Record<string, unknown> | null {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : null;
}
