// The wire protocol version. Bump it whenever a schema in ./schemas.ts changes the wire format,
// and record the new fingerprint in test/protocol.test.ts.
//
// History:
// 1 - first version: accounts, conversations, ordered idempotent messages, threads, receipts,
//     typing, presence frames.
export const PROTOCOL_VERSION = 1;
