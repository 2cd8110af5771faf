// The wire protocol version. Bump it whenever a schema in ./schemas.ts changes the wire format,
// and record the new fingerprint in test/protocol.test.ts.
//
// History:
// 1 - first version: accounts, conversations, ordered idempotent messages, threads, receipts,
//     typing, presence, media, push subscriptions. (Its fingerprint was recorded when the first
//     release was cut; from then on every wire change gets a new version.)
// 2 - the conversation socket's `dedupe=1` (the user socket then skips what that socket got live).
// 3 - every string field refuses ill-formed UTF-16 (a lone surrogate): 400 or an error frame.
// 4 - the user socket's query is a schema too (`ticket`, `v`): `?v=` of another version closes it
//     with 4010, and an unknown or repeated parameter is a 400, as on the conversation socket.
// 5 - `{type: "closing", code, reason}` on both sockets, the last frame before a close the server starts.
// 6 - end-to-end encryption (MLS, RFC 9420): ciphertext sends, `mls.commit` messages, `mls` on
//     conversations, `e2ee` on direct conversations, the `mls.welcome` and `mls.keyPackagesLow` frames,
//     and the bodies of the /mls and /devices/me/mls calls.
// 7 - the `deviceLoggedOut` system event (with `deviceIds`) in E2EE conversations.
// 8 - membership spans and threads counted apart: `joinedSeq`, `leftSeq` (former members) and
//     `threadUnread` on conversations; `unread` and `lastMessage` leave thread replies out.
// 9 - a commit's `commit` up to 112 KiB, its `groupInfo` and `welcome` up to the commit route's own body limit.
// 10 - message actions (protocol/actions.ts): `action` messages (edit, delete, react, pin) by
//      POST /conversations/:id/actions and the socket's `action` frame; replyToSeq, mentions and
//      forwarded on sends; a message's annotations; delete for me and the `hidden` frame; search.
// 11 - `GET /devices` answers `OwnDevice`s (`lastActiveAt`, `current`) for remote sign-out.
// 12 - `revisedSeq` on a message an action event changed (the event's seq).
// 13 - `PATCH /devices/:id` renames a device; the user socket's `devices` frame says the list changed.
// 14 - group settings and profiles: PATCH /conversations/:id (title, `description` on conversations),
//      PUT /conversations/:id/members/:userId (roles), the `renamed`, `descriptionChanged`,
//      `promoted` and `demoted` system events; PATCH /me and `photoId` on users.
// 15 - conversation settings (protocol/conversationSettings.ts): `settings` on conversations,
//      PUT /conversations/:id/settings and the user socket's `conversationSettings` frame.
// 16 - GET /conversations pages: `limit` and `cursor` in the query, `hasMore` and `cursor` in the
//      answer (without `limit`, the answer is as before).
// 17 - GET /search's cursor holds a position per D1 shard (`12.7`).
export const PROTOCOL_VERSION = 17;
