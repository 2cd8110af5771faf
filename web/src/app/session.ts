// Signing in and out: the session in localStorage, register, login, logout, and the end of a
// session the server announced (a 401, close 4001). What starts and stops with an account
// (local store, sockets, outbox) is the `AccountLifecycle` the store passes in.
import * as z from "zod";
import { User as UserSchema, type User } from "../../../protocol";
import { Api, ApiRequestError, Schemas, type Fetch } from "../lib/api";
import type { KeyValueStorage } from "./browser";
import { accountState, type Session, type StoreCore } from "./storeCore";
import type { NavigationPort } from "./ports";

const SESSION_KEY = "edge-chat:session";
const SessionSchema = z.object({ token: z.string(), user: UserSchema, deviceId: z.string() });
/**
 * Tokens of sessions signed out on this device whose logout has not reached the server (signed
 * out offline): each is sent again until the server has it, so the token does not outlive the
 * sign-out. Kept apart from the account's store, which sign-out deletes.
 */
const REVOKE_KEY = "edge-chat:revoke";
const RevokeSchema = z.array(z.string());

function readRevocations(storage: KeyValueStorage): string[] {
  try {
    const parsed = RevokeSchema.safeParse(JSON.parse(storage.getItem(REVOKE_KEY) ?? "[]"));
    return parsed.success ? parsed.data : [];
  } catch {
    return [];
  }
}

function writeRevocations(storage: KeyValueStorage, tokens: string[]): void {
  if (tokens.length === 0) storage.removeItem(REVOKE_KEY);
  else storage.setItem(REVOKE_KEY, JSON.stringify(tokens));
}

export function readSession(storage: KeyValueStorage): Session | null {
  try {
    const raw = storage.getItem(SESSION_KEY);
    if (!raw) return null;
    const parsed = SessionSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/** "Chrome on Linux": the name the device list shows. */
export function deviceName(userAgent: string): string {
  const ua = userAgent;
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS X/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return `${browser}${os ? ` on ${os}` : ""}`;
}

export interface AccountLifecycle {
  /** Opens the account's local store, loads the cache, connects: `state.session` is set. */
  start(): Promise<void>;
  /** Closes the sockets and the local store and deletes the store. */
  stop(userId: string): Promise<void>;
  /** Before logging out: the push subscription goes while the token still works. */
  beforeLogout(): Promise<void>;
}

export class SessionSlice {
  constructor(
    private readonly core: StoreCore,
    private readonly api: Api,
    private readonly browser: { storage: KeyValueStorage; userAgent: string; fetch: Fetch },
    private readonly account: AccountLifecycle,
    private readonly deps: { navigation: Pick<NavigationPort, "navigate"> },
  ) {}

  async register(username: string, password: string, displayName: string): Promise<void> {
    const res = await this.api.call("POST", "/auth/register", Schemas.session, {
      username,
      password,
      ...(displayName.trim() ? { displayName: displayName.trim() } : {}),
      deviceName: deviceName(this.browser.userAgent),
    });
    await this.begin({ token: res.token, user: res.user, deviceId: res.device.id });
  }

  async login(username: string, password: string): Promise<void> {
    const res = await this.api.call("POST", "/auth/login", Schemas.session, { username, password, deviceName: deviceName(this.browser.userAgent) });
    await this.begin({ token: res.token, user: res.user, deviceId: res.device.id });
  }

  private async begin(session: Session): Promise<void> {
    this.browser.storage.setItem(SESSION_KEY, JSON.stringify(session));
    this.core.state.session = session;
    this.core.state.users.set(session.user.id, session.user);
    await this.account.start();
    this.deps.navigation.navigate({ name: "list" }, true);
  }

  /**
   * Signs out here at once; if the server cannot be told now (offline), the token is kept to be
   * revoked when the network returns (`revokePending`). What waits in the outbox is lost: the
   * settings screen warns before calling this.
   */
  async logout(): Promise<void> {
    await this.account.beforeLogout().catch(() => undefined);
    const token = this.core.state.session?.token;
    const told = await this.api.call("POST", "/auth/logout", Schemas.none).then(
      () => true,
      // A 401: the token was dead already.
      (err: unknown) => err instanceof ApiRequestError && err.status === 401,
    );
    if (!told && token) writeRevocations(this.browser.storage, [...new Set([...readRevocations(this.browser.storage), token])]);
    await this.end(null);
  }

  /** The signed-in user as the server now has them (their profile changed): kept for the next start. */
  userChanged(user: User): void {
    const session = this.core.state.session;
    if (!session || session.user.id !== user.id) return;
    const next = { ...session, user };
    this.browser.storage.setItem(SESSION_KEY, JSON.stringify(next));
    this.core.state.session = next;
    this.core.state.users.set(user.id, user);
    this.core.emit();
  }

  /** Logouts still owed to the server (signed out offline), counted for tests and the UI. */
  pendingRevocations(): number {
    return readRevocations(this.browser.storage).length;
  }

  /**
   * Tells the server of sign-outs made offline, each with its own token; a token is forgotten once
   * the server answers 204, or 401 (dead already). Called at start and when the network returns.
   */
  async revokePending(): Promise<void> {
    for (const token of readRevocations(this.browser.storage)) {
      const api = new Api(() => token, () => undefined, this.browser.fetch);
      const done = await api.call("POST", "/auth/logout", Schemas.none).then(
        () => true,
        (err: unknown) => err instanceof ApiRequestError && err.status === 401,
      );
      if (!done) return;
      writeRevocations(this.browser.storage, readRevocations(this.browser.storage).filter((t) => t !== token));
    }
  }

  /** Forgets the session and everything of the account on this device, then shows the login. */
  async end(message: string | null): Promise<void> {
    const userId = this.core.state.session?.user.id;
    if (!userId) return;
    this.browser.storage.removeItem(SESSION_KEY);
    this.core.state.session = null;
    await this.account.stop(userId);
    Object.assign(this.core.state, accountState());
    this.deps.navigation.navigate({ name: "login" }, true);
    if (message) this.core.notify(message);
    this.core.emit();
  }
}
