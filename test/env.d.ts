declare namespace Cloudflare {
  interface Env {
    TEST_MIGRATIONS: import("cloudflare:test").D1Migration[];
    /** test/reliability.test.ts: counts and seed for the long run, from the environment ("" for the defaults). */
    RELIABILITY_MESSAGES: string;
    RELIABILITY_INPUTS: string;
    RELIABILITY_SEED: string;
    RELIABILITY_MODEL_RUNS: string;
  }
}
