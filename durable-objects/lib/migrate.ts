// Schema migrations for a Durable Object's own SQLite database. Steps are append-only: an
// object created before a step exists runs it on its next wake-up.

export function migrate(sql: SqlStorage, steps: readonly string[]): void {
  sql.exec("CREATE TABLE IF NOT EXISTS _schema (version INTEGER NOT NULL)");
  const row = sql.exec<{ version: number }>("SELECT version FROM _schema").toArray()[0];
  let version = row?.version ?? 0;
  if (!row) sql.exec("INSERT INTO _schema (version) VALUES (0)");
  for (; version < steps.length; version++) {
    sql.exec(steps[version]!);
    sql.exec("UPDATE _schema SET version = ?", version + 1);
  }
}
