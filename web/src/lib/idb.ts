// IndexedDB, wrapped just enough: a key-value store for the offline cache (conversations, recent
// messages, users, the sync cursor) and the outbox store. One database per account, so two
// accounts on one browser never share a cache; logout deletes it.
import type { OutboxItem, OutboxStorage } from "../state/offlineOutbox";

const VERSION = 1;

function promisify<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

/** The per-account store the app keeps: key-value pairs for the cache and the outbox's rows. */
export interface LocalStore extends OutboxStorage {
  get(key: string): Promise<unknown>;
  set(key: string, value: unknown): Promise<void>;
  remove(key: string): Promise<void>;
  close(): void;
}

export class LocalDb implements LocalStore {
  private constructor(private readonly db: IDBDatabase) {}

  static dbName(userId: string): string {
    return `edge-chat:${userId}`;
  }

  static async open(userId: string): Promise<LocalDb> {
    const req = indexedDB.open(LocalDb.dbName(userId), VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains("kv")) db.createObjectStore("kv");
      if (!db.objectStoreNames.contains("outbox")) db.createObjectStore("outbox", { keyPath: "clientMsgId" });
    };
    const db = await promisify(req);
    // Another tab upgrading the schema: let it, this tab reloads on its next start.
    db.onversionchange = () => db.close();
    return new LocalDb(db);
  }

  static async destroy(userId: string): Promise<void> {
    await promisify(indexedDB.deleteDatabase(LocalDb.dbName(userId))).catch(() => undefined);
  }

  close(): void {
    this.db.close();
  }

  private store(name: "kv" | "outbox", mode: IDBTransactionMode): IDBObjectStore {
    return this.db.transaction(name, mode).objectStore(name);
  }

  async get(key: string): Promise<unknown> {
    return promisify(this.store("kv", "readonly").get(key));
  }

  async set(key: string, value: unknown): Promise<void> {
    const store = this.store("kv", "readwrite");
    const done = promisify(store.put(value, key));
    // Ask for the commit now rather than when this task ends: a write started as the page unloads
    // gets its best chance to land.
    store.transaction.commit?.();
    await done;
  }

  async remove(key: string): Promise<void> {
    await promisify(this.store("kv", "readwrite").delete(key));
  }

  // OutboxStorage: the values are written by this app only, read back as they were stored.
  async list(): Promise<OutboxItem[]> {
    const rows: unknown[] = await promisify(this.store("outbox", "readonly").getAll());
    return rows.filter(isOutboxItem);
  }

  async put(item: OutboxItem): Promise<void> {
    await promisify(this.store("outbox", "readwrite").put(item));
  }

  async delete(clientMsgId: string): Promise<void> {
    await promisify(this.store("outbox", "readwrite").delete(clientMsgId));
  }
}

function isOutboxItem(v: unknown): v is OutboxItem {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.clientMsgId === "string" && typeof r.conversationId === "string" && typeof r.createdAt === "number" && typeof r.status === "string";
}
