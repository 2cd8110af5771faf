// Failures as values. Durable Object RPC methods and the modules behind them return these rather
// than throw: an exception thrown across RPC loses its class, and a client's mistake is not an
// exceptional event for the object. The Worker turns a Failure into its HTTP answer (`unwrap`).
import type { ErrorCode } from "../protocol";

export type Failure = { ok: false; code: ErrorCode; message: string; retryAfterSeconds?: number };
export type Result<T> = ({ ok: true } & T) | Failure;

export const fail = (code: ErrorCode, message: string, retryAfterSeconds?: number): Failure =>
  retryAfterSeconds === undefined
    ? { ok: false, code, message }
    : { ok: false, code, message, retryAfterSeconds };

export const isFailure = (result: { ok: boolean }): result is Failure => !result.ok;
