// Deployment settings, parsed once from the environment. Each has a default from API.md, so a
// missing or malformed value never breaks a request: it falls back and the default is documented.

function int(value: unknown, fallback: number, min = 0): number {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : NaN;
  return Number.isFinite(n) && n >= min ? Math.floor(n) : fallback;
}

export interface Settings {
  allowedOrigins: string[];
  rateLimitPerSecond: number;
  rateLimitBurst: number;
  maxSocketsPerDevice: number;
  maxRequestBytes: number;
  tokenTtlMs: number;
  ticketTtlMs: number;
  outboxBatchSize: number;
}

export function readSettings(env: Partial<Record<keyof Env, unknown>>): Settings {
  const origins = typeof env.ALLOWED_ORIGINS === "string" ? env.ALLOWED_ORIGINS : "";
  return {
    allowedOrigins: origins
      .split(",")
      .map((o) => o.trim())
      .filter(Boolean),
    rateLimitPerSecond: int(env.RATE_LIMIT_PER_SECOND, 20, 1),
    rateLimitBurst: int(env.RATE_LIMIT_BURST, 40, 1),
    maxSocketsPerDevice: int(env.MAX_SOCKETS_PER_DEVICE, 10, 1),
    maxRequestBytes: int(env.MAX_REQUEST_BYTES, 64 * 1024, 1024),
    tokenTtlMs: int(env.TOKEN_TTL_DAYS, 365, 1) * 86_400_000,
    // A ticket lives at most 60 s (API.md), whatever the setting says.
    ticketTtlMs: Math.min(int(env.TICKET_TTL_SECONDS, 60, 1), 60) * 1000,
    outboxBatchSize: int(env.OUTBOX_BATCH_SIZE, 200, 1),
  };
}
