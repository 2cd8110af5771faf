import { defineConfig } from "vitest/config";

// The unit suite: the plain modules (the objects' rules, the client's state slices) in Node, with
// storage, clocks, sockets and browser APIs passed in. No runtime starts, so it runs in seconds.
// The workerd suite is vitest.config.ts.
export default defineConfig({
  test: {
    include: ["test/unit/**/*.test.ts", "web/test/**/*.test.ts"],
    environment: "node",
    testTimeout: 10_000,
  },
});
