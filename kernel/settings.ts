// Deployment settings, parsed once from the environment. Each has a default from API.md, so a
// missing or malformed value never breaks a request: it falls back and the default is documented.
import { MEDIA_LIMITS } from "../protocol/mediaSchemas";

function int(value: unknown, fallback: number, min = 0): number {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : NaN;
  return Number.isFinite(n) && n >= min ? Math.floor(n) : fallback;
}

/** A secret from the environment, or null when it is unset or empty. */
function secret(value: unknown): string | null {
  return typeof value === "string" && value !== "" ? value : null;
}

/** A secret a request needs: one missing is the deployment's fault, not the client's (a 500). */
export function requireSecret(name: string, value: string | null): string {
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

/** `npm run dev`'s default address; scripts/dev.mjs passes the one it really listens on. */
const DEV_ORIGIN = "http://127.0.0.1:8787";

/** An http(s) origin without a path, or null. */
function origin(value: unknown): string | null {
  if (typeof value !== "string" || value.trim() === "") return null;
  try {
    const url = new URL(value.trim());
    return url.protocol === "https:" || url.protocol === "http:" ? url.origin : null;
  } catch {
    return null;
  }
}

export interface Settings {
  /** The origin the app is reached at, for the URLs we hand out (never the request's Host). */
  publicOrigin: string;
  allowedOrigins: string[];
  rateLimitPerSecond: number;
  rateLimitBurst: number;
  maxSocketsPerDevice: number;
  /** Sockets of one user (all devices) per object: a user with many logins cannot hold an object's sockets. */
  maxSocketsPerUser: number;
  maxRequestBytes: number;
  tokenTtlMs: number;
  /** How long the user object's inbox index keeps what reached the user (GET /messages?since=). */
  inboxRetentionMs: number;
  /** SESSION_SECRET: the keys of bearer tokens, comma-separated, the signing one first (worker/lib/sessionTokens.ts). */
  sessionSecret: string | null;
  ticketTtlMs: number;
  ticketSecret: string | null;
  outboxBatchSize: number;
  fanoutInlineMax: number;
  batchDelayMs: number;
  groupCommitMax: number;
  groupCommitBurstMs: number;
  presenceDebounceMs: number;
  presenceTimeoutMs: number;
  /** Key package claims (POST /mls/key-packages/claim) per claiming user and minute, bursts of as many. */
  mlsClaimsPerMinute: number;
  /**
   * Body limit of `POST /conversations/:id/mls/commits`, whose GroupInfo and Welcome carry the
   * group's whole ratchet tree (~0.3 KiB per device each). Kept under 1.9 MB: the GroupInfo is
   * one value of the conversation object's SQLite, and each Welcome one of the user object's
   * (2 MB at most per value on Durable Objects).
   */
  mlsCommitMaxBytes: number;
  media: MediaSettings;
  push: PushSettings;
  abuse: AbuseSettings;
}

/** Login, registration and group-creation limits (worker/lib/throttle.ts). */
export interface AbuseSettings {
  loginFreeFailuresPerAccount: number;
  loginFreeFailuresPerAddress: number;
  loginBlockSeconds: number;
  registrationsPerAddressPerHour: number;
  groupsPerUserPerHour: number;
}

/** Web Push delivery (worker/push/). The VAPID keys are secrets and are read where they are used. */
export interface PushSettings {
  vapidSubject: string;
  /** Also accept http://127.0.0.1:* and http://localhost:* endpoints (local mock push services). */
  allowInsecureLocalhost: boolean;
  /** API.md: at least 24 h. */
  ttlSeconds: number;
  /** Tries per subscription before a push is logged as failed and dropped; at least 3 (API.md). */
  maxTries: number;
  /** Backoff after a 429/5xx without Retry-After: base, 2 x base, 4 x base, ... at most 1 h. */
  retryBaseSeconds: number;
}

const MiB = 1024 * 1024;

/** Media limits in bytes (API.md "Media"); `urlSecret` is null when the secret is not set. */
export interface MediaSettings {
  maxImageBytes: number;
  maxVideoBytes: number;
  maxAudioBytes: number;
  maxPdfBytes: number;
  maxBlobBytes: number;
  maxMultipartBytes: number;
  partBytes: number;
  urlTtlSeconds: number;
  urlSecret: string | null;
  /** Bytes a user may keep stored, pending uploads included. */
  quotaBytes: number;
  /** Bytes a user's pending multipart uploads may reserve at once. */
  pendingQuotaBytes: number;
  /** A pending upload older than this is swept (worker/lib/mediaStore.ts). */
  pendingMaxAgeMs: number;
}

export function readSettings(env: Partial<Record<keyof Env, unknown>>): Settings {
  const origins = typeof env.ALLOWED_ORIGINS === "string" ? env.ALLOWED_ORIGINS : "";
  return {
    publicOrigin: origin(env.PUBLIC_ORIGIN) ?? DEV_ORIGIN,
    allowedOrigins: origins
      .split(",")
      .map((o) => o.trim())
      .filter(Boolean),
    rateLimitPerSecond: int(env.RATE_LIMIT_PER_SECOND, 20, 1),
    rateLimitBurst: int(env.RATE_LIMIT_BURST, 40, 1),
    maxSocketsPerDevice: int(env.MAX_SOCKETS_PER_DEVICE, 10, 1),
    maxSocketsPerUser: int(env.MAX_SOCKETS_PER_USER, 50, 1),
    maxRequestBytes: int(env.MAX_REQUEST_BYTES, 64 * 1024, 1024),
    tokenTtlMs: int(env.TOKEN_TTL_DAYS, 365, 1) * 86_400_000,
    inboxRetentionMs: int(env.INBOX_RETENTION_DAYS, 30, 1) * 86_400_000,
    sessionSecret: secret(env.SESSION_SECRET),
    // A ticket lives at most 60 s (API.md), whatever the setting says.
    ticketTtlMs: Math.min(int(env.TICKET_TTL_SECONDS, 60, 1), 60) * 1000,
    ticketSecret: secret(env.TICKET_SECRET),
    outboxBatchSize: int(env.OUTBOX_BATCH_SIZE, 200, 1),
    fanoutInlineMax: int(env.FANOUT_INLINE_MAX, 50, 0),
    batchDelayMs: int(env.BATCH_DELAY_MS, 25, 0),
    groupCommitMax: int(env.GROUP_COMMIT_MAX, 32, 1),
    groupCommitBurstMs: int(env.GROUP_COMMIT_BURST_MS, 1, 0),
    presenceDebounceMs: int(env.PRESENCE_DEBOUNCE_MS, 3000, 0),
    // The keep-alive window of API.md: a socket silent this long no longer counts as online.
    presenceTimeoutMs: int(env.PRESENCE_TIMEOUT_MS, 60_000, 1000),
    mlsClaimsPerMinute: int(env.MLS_CLAIMS_PER_MINUTE, 30, 1),
    mlsCommitMaxBytes: Math.min(int(env.MLS_COMMIT_MAX_BYTES, MiB, 64 * 1024), 1_900_000),
    media: {
      maxImageBytes: int(env.MEDIA_MAX_IMAGE_BYTES, 16 * MiB, 1),
      maxVideoBytes: int(env.MEDIA_MAX_VIDEO_BYTES, 100 * MiB, 1),
      maxAudioBytes: int(env.MEDIA_MAX_AUDIO_BYTES, 16 * MiB, 1),
      maxPdfBytes: int(env.MEDIA_MAX_PDF_BYTES, 16 * MiB, 1),
      maxBlobBytes: int(env.MEDIA_MAX_BLOB_BYTES, 100 * MiB, 1),
      maxMultipartBytes: int(env.MEDIA_MAX_MULTIPART_BYTES, 2048 * MiB, 1),
      // R2 takes at most 5 GiB per part; a Worker request body is capped at 100 MB on most plans.
      partBytes: Math.min(int(env.MEDIA_PART_BYTES, 8 * MiB, MEDIA_LIMITS.partMinBytes), 95 * MiB),
      urlTtlSeconds: Math.min(int(env.MEDIA_URL_TTL_SECONDS, 3600, 1), MEDIA_LIMITS.urlTtlMaxSeconds),
      urlSecret: secret(env.MEDIA_URL_SECRET),
      quotaBytes: int(env.MEDIA_QUOTA_BYTES, 5 * 1024 * MiB, 1),
      pendingQuotaBytes: int(env.MEDIA_PENDING_QUOTA_BYTES, 4 * 1024 * MiB, 1),
      pendingMaxAgeMs: int(env.MEDIA_PENDING_MAX_AGE_HOURS, 24, 1) * 3_600_000,
    },
    push: {
      vapidSubject: typeof env.VAPID_SUBJECT === "string" && env.VAPID_SUBJECT !== "" ? env.VAPID_SUBJECT : "mailto:push@example.com",
      allowInsecureLocalhost: env.PUSH_ALLOW_INSECURE_LOCALHOST === "true",
      // 24 h at least (API.md); 28 days is the most push services keep a message.
      ttlSeconds: Math.min(int(env.PUSH_TTL_SECONDS, 86_400, 86_400), 28 * 86_400),
      maxTries: int(env.PUSH_MAX_TRIES, 5, 3),
      retryBaseSeconds: int(env.PUSH_RETRY_BASE_SECONDS, 10, 0),
    },
    abuse: {
      loginFreeFailuresPerAccount: int(env.LOGIN_FREE_FAILURES_PER_ACCOUNT, 5, 1),
      loginFreeFailuresPerAddress: int(env.LOGIN_FREE_FAILURES_PER_ADDRESS, 20, 1),
      loginBlockSeconds: int(env.LOGIN_BLOCK_SECONDS, 1, 1),
      registrationsPerAddressPerHour: int(env.REGISTRATIONS_PER_ADDRESS_PER_HOUR, 10, 1),
      groupsPerUserPerHour: int(env.GROUPS_PER_USER_PER_HOUR, 30, 1),
    },
  };
}
