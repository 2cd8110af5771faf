// Schema migrations for a Durable Object's own SQLite database. Steps are append-only: an
// object created before a step exists runs it on its next wake-up.
// `track` names the table that records how many steps ran: a feature whose tables live in their
// own module keeps its own list of steps and its own track, so lists grown on different branches
// never collide.
export function migrate(sql: SqlStorage, steps: readonly string[], track = "_schema"): void {
  if (!/^_schema\w*$/.test(track)) throw new Error(`bad migration track ${track}`);
  sql.exec(`CREATE TABLE IF NOT EXISTS ${track} (version INTEGER NOT NULL)`);
  const row = sql.exec<{ version: number }>(`SELECT version FROM ${track}`).toArray()[0];
  let version = row?.version ?? 0;
  if (!row) sql.exec(`INSERT INTO ${track} (version) VALUES (0)`);
  for (; version < steps.length; version++) {
    sql.exec(steps[version]!);
    sql.exec(`UPDATE ${track} SET version = ?`, version + 1);
  }
}
