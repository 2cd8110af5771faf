// Which user claimed a Web Push endpoint last (D1 `push_endpoints`, on the endpoint's own shard).
// The subscriptions live in their users' objects; this row is what lets a claim by another user
// find the previous owner, whose object must then forget the endpoint.

/**
 * Makes `userId` the endpoint's owner and returns the previous owner, if another user. One batch,
 * so one transaction: of two claims at once, the second sees the first as its previous owner.
 */
export async function claimPushEndpoint(db: D1Database, endpoint: string, userId: string): Promise<string | null> {
  const [previous] = await db.batch<{ user_id: string }>([
    db.prepare("SELECT user_id FROM push_endpoints WHERE endpoint = ?").bind(endpoint),
    db.prepare("INSERT INTO push_endpoints (endpoint, user_id) VALUES (?, ?) ON CONFLICT (endpoint) DO UPDATE SET user_id = excluded.user_id").bind(endpoint, userId),
  ]);
  const owner = previous?.results[0]?.user_id ?? null;
  return owner === userId ? null : owner;
}
