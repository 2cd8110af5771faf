// Types of dev-server.mjs, for the TypeScript harness of the browser tests.
export declare function freePorts(count: number): Promise<number[]>;

export interface DevServerOptions {
  name: string;
  args: string[];
  command?: string;
  cwd?: string;
  env?: Record<string, string>;
  onOutput?: (text: string) => void;
  keepLines?: number;
}

export declare class DevServer {
  constructor(options: DevServerOptions);
  readonly name: string;
  output: string[];
  exited: { code: number | null; signal: string | null; error?: string } | null;
  spawn(): void;
  waitUntilReady(ready: () => Promise<boolean>, timeoutMs: number): Promise<void>;
  tail(lines?: number): string;
  stop(options?: { graceMs?: number; killWaitMs?: number; onKill?: () => void }): Promise<void>;
  killNow(): void;
}
