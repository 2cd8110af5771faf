// The D1 shards wrangler.toml declares ([[d1_databases]] blocks), for the scripts that migrate
// and deploy them one by one.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export interface D1Declared {
  binding: string;
  databaseName: string;
}

export function d1Databases(config = join(ROOT, "wrangler.toml")): D1Declared[] {
  const text = readFileSync(config, "utf8");
  const out: D1Declared[] = [];
  for (const block of text.split(/^\[\[d1_databases\]\]\s*$/m).slice(1)) {
    const body = block.split(/^\[/m)[0] ?? "";
    const binding = /^\s*binding\s*=\s*"([^"]+)"/m.exec(body)?.[1];
    const databaseName = /^\s*database_name\s*=\s*"([^"]+)"/m.exec(body)?.[1];
    if (binding && databaseName) out.push({ binding, databaseName });
  }
  return out;
}
