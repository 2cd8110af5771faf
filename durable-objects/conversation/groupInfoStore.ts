// A group's settings in the conversation's SQLite: its description beside the title (both in the
// `conversation` row). Its steps are a migration track of their own, so they never collide with
// the log's or the actions' lists.
export const GROUP_INFO_MIGRATIONS_TRACK = "_schema_groupinfo";

// Append-only. Index i is this track's version i + 1.
export const GROUP_INFO_MIGRATIONS = [`ALTER TABLE conversation ADD COLUMN description TEXT`];
