import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// Every test file runs inside workerd with the real Durable Objects, D1 and R2 of wrangler.toml.
// Storage is isolated per test file, not per test: tests create their own users and conversations.
export default defineConfig(async () => {
  const migrations = await readD1Migrations("./migrations");
  return {
    plugins: [
      cloudflareTest({
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          bindings: {
            TEST_MIGRATIONS: migrations,
            // Low enough to reach in a test, high enough for the concurrency tests.
            RATE_LIMIT_PER_SECOND: "100",
            RATE_LIMIT_BURST: "120",
          },
        },
      }),
    ],
    test: {
      include: ["test/**/*.test.ts"],
      setupFiles: ["./test/setup.ts"],
      testTimeout: 30_000,
      hookTimeout: 30_000,
    },
  };
});
