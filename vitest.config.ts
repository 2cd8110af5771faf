import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { vapidKeyPair } from "./scripts/dev-vars.ts";

// Every test file runs inside workerd with the real Durable Objects, D1 and R2 of wrangler.toml.
// Storage is isolated per test file, not per test: tests create their own users and conversations.
export default defineConfig(async () => {
  const migrations = await readD1Migrations("./migrations");
  // The secrets wrangler.toml requires, for tests: a fresh VAPID pair per run. Wrangler looks
  // for required secrets in .dev.vars or else in the environment, and warns when they are
  // missing (a fresh clone has no .dev.vars); the bindings below are what the tests get.
  const secrets = {
    MEDIA_URL_SECRET: "test-only-media-url-secret",
    TICKET_SECRET: "test-only-ticket-secret",
    // Two keys, as after a rotation: tokens are signed with the first, the second still verifies.
    SESSION_SECRET: "test-only-session-key,test-only-previous-session-key",
    ...vapidKeyPair(),
  };
  for (const [name, value] of Object.entries(secrets)) process.env[name] ??= String(value);
  return {
    plugins: [
      cloudflareTest({
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          bindings: {
            TEST_MIGRATIONS: migrations,
            // test/reliability.test.ts: `npm run test:reliability` sets the long run's counts.
            RELIABILITY_MESSAGES: process.env.RELIABILITY_MESSAGES ?? "",
            RELIABILITY_INPUTS: process.env.RELIABILITY_INPUTS ?? "",
            RELIABILITY_SEED: process.env.RELIABILITY_SEED ?? "",
            RELIABILITY_MODEL_RUNS: process.env.RELIABILITY_MODEL_RUNS ?? "",
            PUBLIC_ORIGIN: "http://chat.test",
            // Every test registers from one address (no cf-connecting-ip) and many create groups;
            // test/api.test.ts reaches the limits by draining a key's object.
            REGISTRATIONS_PER_ADDRESS_PER_HOUR: "1000000",
            GROUPS_PER_USER_PER_HOUR: "1000000",
            // Low enough to reach in a test, high enough for the concurrency tests.
            RATE_LIMIT_PER_SECOND: "100",
            RATE_LIMIT_BURST: "120",
            // Presence (test/presence.test.ts): a short debounce and keep-alive window so flaps and
            // silent sockets play out in seconds. The keep-alive window is long: the test sockets'
            // keep-alive timers share the runtime's one thread with the objects, and the 200-member
            // fan-out holds that thread for seconds on a busy machine (the test of a silent socket
            // shortens it for its own user's object); FANOUT_INLINE_MAX makes the 200-member group queue.
            PRESENCE_DEBOUNCE_MS: "600",
            PRESENCE_TIMEOUT_MS: "30000",
            FANOUT_INLINE_MAX: "50",
            TICKET_SECRET: secrets.TICKET_SECRET,
            SESSION_SECRET: secrets.SESSION_SECRET,
            // Media (test/media.test.ts): low limits to reach 413 with tiny files; video, blobs and
            // multipart stay high enough for the 12 MiB multipart and 6 MiB streamed uploads.
            MEDIA_URL_SECRET: secrets.MEDIA_URL_SECRET,
            MEDIA_MAX_IMAGE_BYTES: "65536",
            MEDIA_MAX_AUDIO_BYTES: "65536",
            MEDIA_MAX_PDF_BYTES: "65536",
            MEDIA_MAX_VIDEO_BYTES: "1048576",
            MEDIA_MAX_BLOB_BYTES: "16777216",
            MEDIA_MAX_MULTIPART_BYTES: "33554432",
            MEDIA_PART_BYTES: "5242880",
            // Quotas high enough for every media test's own uploads; media.test.ts fills them.
            MEDIA_QUOTA_BYTES: "104857600",
            MEDIA_PENDING_QUOTA_BYTES: "50331648",
            // Push (test/push.test.ts): the VAPID pair above, pushes to the local mock push
            // service of test/globals/push-service.ts, and retries 1 s, 2 s apart, 3 tries in all.
            VAPID_PUBLIC_KEY: secrets.VAPID_PUBLIC_KEY,
            VAPID_PRIVATE_KEY: secrets.VAPID_PRIVATE_KEY,
            PUSH_ALLOW_INSECURE_LOCALHOST: "true",
            PUSH_RETRY_BASE_SECONDS: "1",
            PUSH_MAX_TRIES: "3",
          },
        },
      }),
    ],
    test: {
      include: ["test/**/*.test.ts"],
      exclude: ["test/unit/**"],
      setupFiles: ["./test/setup.ts"],
      globalSetup: ["./test/globals/push-service.ts"],
      testTimeout: 30_000,
      hookTimeout: 30_000,
    },
  };
});
