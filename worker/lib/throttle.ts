// Abuse limits on accounts: failed logins per account and per client address (a block that
// doubles with each further failure), registrations per address and group creations per user
// (token buckets). Each key's state is a ThrottleDO (durable-objects/throttle/), so every isolate
// of the Worker sees the same counts. Answers over a limit are 429 with Retry-After.
import type { AbuseSettings } from "../../kernel/settings";
import { throttleStub } from "../../kernel/objects";
import { ApiError } from "./apiError";

/** At most 15 minutes per block, however many failures. */
const LOGIN_BLOCK_MAX_SECONDS = 900;
/** Failures are forgotten after an hour without one. */
const FORGET_MS = 3_600_000;

/** The client's address as Cloudflare reports it; locally (no header) every client is one. */
export const clientAddress = (request: Request): string => request.headers.get("cf-connecting-ip") ?? "local";

export const throttleKeys = {
  loginAccount: (username: string) => `login-account:${username.toLowerCase()}`,
  loginAddress: (address: string) => `login-address:${address}`,
  registerAddress: (address: string) => `register-address:${address}`,
  groupCreator: (userId: string) => `group-create:${userId}`,
};

const tooMany = (seconds: number, what: string) => new ApiError("rate_limited", `too many ${what}; try again later`, { retryAfterSeconds: seconds });

/** The account's and the address's login keys, for one attempt. */
export class LoginThrottle {
  private readonly keys: string[];

  constructor(
    private readonly env: Env,
    private readonly settings: AbuseSettings,
    username: string,
    address: string,
  ) {
    this.keys = [throttleKeys.loginAccount(username), throttleKeys.loginAddress(address)];
  }

  /** 429 while either key is blocked; nothing is hashed then. */
  async check(): Promise<void> {
    const waits = await Promise.all(this.keys.map((key) => throttleStub(this.env, key).blocked()));
    const wait = Math.max(...waits);
    if (wait > 0) throw tooMany(wait, "failed logins");
  }

  /** Counts a wrong password on both keys; the error to answer with (429 once a key blocks). */
  async failed(): Promise<ApiError> {
    const [free, freeAddress] = [this.settings.loginFreeFailuresPerAccount, this.settings.loginFreeFailuresPerAddress];
    const rule = (n: number) => ({ free: n, baseSeconds: this.settings.loginBlockSeconds, maxSeconds: LOGIN_BLOCK_MAX_SECONDS, forgetMs: FORGET_MS });
    const waits = await Promise.all([
      throttleStub(this.env, this.keys[0]!).failed(rule(free)),
      throttleStub(this.env, this.keys[1]!).failed(rule(freeAddress)),
    ]);
    const wait = Math.max(...waits);
    return wait > 0 ? tooMany(wait, "failed logins") : new ApiError("unauthorized", "wrong username or password");
  }

  /** The right password: the account's failures are forgotten (the address's are not). */
  async succeeded(): Promise<void> {
    await throttleStub(this.env, this.keys[0]!).succeeded();
  }
}

/** Takes one of `perHour` tokens (a burst of as many) of a key, or answers 429. */
export async function takeHourly(env: Env, key: string, perHour: number, what: string): Promise<void> {
  const wait = await throttleStub(env, key).take({ perHour, burst: perHour });
  if (wait > 0) throw tooMany(wait, what);
}
