// Devices' MLS signature keys in D1 (the Authentication Service's record: a device registers its
// Ed25519 key once, and every key package and commit of that device must carry it). Only devices
// still logged in count: a logged-out device's packages are never handed out, nor its leaf trusted.
import type { DeviceKeys } from "../../durable-objects/contract";
import type { DeviceWithKey } from "../../protocol";
import { d1Shards } from "../../kernel/d1/shards";

const placeholders = (n: number) => new Array(n).fill("?").join(", ");

/** Whose each device is and its registered key, for the logged-in devices among `deviceIds`. */
export async function deviceKeys(env: Env, deviceIds: string[]): Promise<DeviceKeys> {
  const rows = await d1Shards(env).query(deviceIds, async (database, chunk) =>
    (
      await database.prepare(
        `SELECT id, user_id, signature_key FROM devices WHERE id IN (${placeholders(chunk.length)}) AND token_hash IS NOT NULL`,
      )
        .bind(...chunk)
        .all<{ id: string; user_id: string; signature_key: string | null }>()
    ).results,
  );
  return Object.fromEntries(rows.map((r) => [r.id, { userId: r.user_id, signatureKey: r.signature_key }]));
}

/** The logged-in devices of each user, oldest first. */
export async function devicesOf(env: Env, userIds: string[]): Promise<Array<DeviceWithKey & { userId: string }>> {
  const rows = await d1Shards(env).query(userIds, async (database, chunk) =>
    (
      await database.prepare(
        `SELECT id, user_id, name, created_at, signature_key FROM devices
         WHERE user_id IN (${placeholders(chunk.length)}) AND token_hash IS NOT NULL ORDER BY created_at, id`,
      )
        .bind(...chunk)
        .all<{ id: string; user_id: string; name: string; created_at: number; signature_key: string | null }>()
    ).results,
  );
  // Oldest first across shards too.
  rows.sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1));
  return rows.map((r) => ({ id: r.id, userId: r.user_id, name: r.name, createdAt: r.created_at, signatureKey: r.signature_key }));
}

/**
 * The end-to-end encrypted conversations `userId` is a member of (D1's projection of the members):
 * on every shard, since a conversation's rows are on its own.
 */
export async function e2eeConversationsOf(env: Env, userId: string): Promise<string[]> {
  const perShard = await Promise.all(
    d1Shards(env).all.map(async (database) =>
      (
        await database
          .prepare("SELECT m.conversation_id AS id FROM members m JOIN conversations c ON c.id = m.conversation_id WHERE m.user_id = ? AND c.e2ee = 1")
          .bind(userId)
          .all<{ id: string }>()
      ).results.map((r) => r.id),
    ),
  );
  return perShard.flat();
}

/** Sets the device's key once: the same key again is fine, another is refused. Returns the key now registered. */
export async function registerSignatureKey(env: Env, deviceId: string, key: string): Promise<string | null> {
  const database = d1Shards(env).of(deviceId);
  await database.prepare("UPDATE devices SET signature_key = ? WHERE id = ? AND signature_key IS NULL").bind(key, deviceId).run();
  const row = await database.prepare("SELECT signature_key FROM devices WHERE id = ?").bind(deviceId).first<{ signature_key: string | null }>();
  return row?.signature_key ?? null;
}
