// Media metadata in D1: who may see an item, media refs for messages, and sends with media
// (the Worker's POST /send and the conversation object's socket sends both resolve ids here).
// The bytes live in R2; worker/lib/mediaStore.ts and the media routes move them.
import { and, eq, inArray } from "drizzle-orm";
import type { MediaRef } from "../../protocol";
import { fail, type Failure } from "../result";
import { conversationStub } from "../objects";
import { db, drizzleOf, schema } from "./db";
import { d1Shards, groupByShard } from "./shards";

export type MediaRow = typeof schema.media.$inferSelect;

export function toRef(row: MediaRow): MediaRef {
  const ref: MediaRef = { id: row.id, contentType: row.contentType, size: row.size, name: row.name };
  if (row.width !== null) ref.width = row.width;
  if (row.height !== null) ref.height = row.height;
  if (row.durationMs !== null) ref.durationMs = row.durationMs;
  if (row.thumbnailId !== null) ref.thumbnailId = row.thumbnailId;
  return ref;
}


/**
 * Who may see a media item: its uploader, and whoever was a member of a conversation it was shared
 * in when it was shared there: since they joined (members from before membership spans were kept:
 * ever), or between joining and leaving for a former member (docs/api.md). A user's current
 * profile photo is seen by everyone who can see the user: every signed-in user.
 *
 * The item's row, its shares and the photo mark are on the uploader's shard (kernel/d1/shards.ts);
 * whether the caller was a member when it was shared is answered by each sharing conversation's
 * object, which owns its membership.
 */
async function visibleRows(env: Env, userId: string, ids: string[]): Promise<Map<string, MediaRow>> {
  const m = schema.media;
  const s = schema.mediaShares;
  const visible = new Map<string, MediaRow>();
  /** Per conversation: the items shared there, with when, among those not yet visible. */
  const sharedIn = new Map<string, { row: MediaRow; at: number }[]>();
  await Promise.all(
    [...d1Shards(env).group(new Set(ids))].map(async ([database, onShard]) => {
      const d = drizzleOf(database);
      const [rows, photos, shares] = await d.batch([
        d.select().from(m).where(and(inArray(m.id, onShard), eq(m.status, "complete"))),
        d.select({ id: schema.users.photoId }).from(schema.users).where(inArray(schema.users.photoId, onShard)),
        d.select().from(s).where(inArray(s.mediaId, onShard)),
      ]);
      const photoIds = new Set(photos.map((p) => p.id));
      const pending = new Map<string, MediaRow>();
      for (const row of rows) {
        if (row.uploaderId === userId || photoIds.has(row.id)) visible.set(row.id, row);
        else pending.set(row.id, row);
      }
      for (const share of shares) {
        const row = pending.get(share.mediaId);
        if (!row) continue;
        const list = sharedIn.get(share.conversationId);
        if (list) list.push({ row, at: share.createdAt });
        else sharedIn.set(share.conversationId, [{ row, at: share.createdAt }]);
      }
    }),
  );
  await Promise.all(
    [...sharedIn].map(async ([conversationId, shared]) => {
      const member = await conversationStub(env, conversationId).wasMemberAt(userId, shared.map((x) => x.at));
      shared.forEach(({ row }, i) => {
        if (member[i]) visible.set(row.id, row);
      });
    }),
  );
  return visible;
}

/** A complete item the caller may see (visibleRows). */
export async function findVisibleMedia(env: Env, userId: string, mediaId: string): Promise<MediaRow | null> {
  return (await visibleRows(env, userId, [mediaId])).get(mediaId) ?? null;
}

/** The caller's own complete items among `ids` (all on the caller's shard). */
export async function ownMedia(env: Env, userId: string, ids: string[]): Promise<Map<string, MediaRow>> {
  const m = schema.media;
  const rows = ids.length === 0
    ? []
    : await db(env, userId).select().from(m).where(and(inArray(m.id, ids), eq(m.uploaderId, userId), eq(m.status, "complete")));
  return new Map(rows.map((r) => [r.id, r]));
}

/** The complete items among `ids` that the caller may see (visibleRows). */
export async function visibleMedia(env: Env, userId: string, ids: string[]): Promise<Map<string, MediaRow>> {
  return ids.length === 0 ? new Map() : visibleRows(env, userId, ids);
}

/**
 * The refs a send carries. Only the uploader may send an item, except in a forward (`forwarded`),
 * which may send any item the caller can see, without uploading it again; an unknown id and one
 * the caller may not send answer alike, so ids reveal nothing.
 */
export async function resolveMedia(env: Env, userId: string, mediaIds: string[], forwarded = false): Promise<({ ok: true; media: MediaRef[] }) | Failure> {
  if (new Set(mediaIds).size !== mediaIds.length) return fail("bad_request", "a media id is listed twice");
  const rows = forwarded ? await visibleMedia(env, userId, mediaIds) : await ownMedia(env, userId, mediaIds);
  const media: MediaRef[] = [];
  for (const id of mediaIds) {
    const row = rows.get(id);
    if (!row) return fail("bad_request", `unknown media id ${id}`);
    media.push(toRef(row));
  }
  return { ok: true, media };
}

/**
 * Sends a message with media: resolves the ids, records that the items (and their thumbnails)
 * are shared in the conversation, then calls `send`. The shares are written first so that a
 * member who gets the message can fetch its media at once; if the send fails or was a retry,
 * the shares this call added are removed again. (A concurrent send of the same item to the same
 * conversation that fails may remove a share the other one relies on; members then get 404 until
 * the item is sent there again. Sends are idempotent, so retrying repairs it.)
 */
export async function sendWithMedia<R extends { ok: boolean }>(
  env: Env,
  userId: string,
  conversationId: string,
  mediaIds: string[],
  send: (media: MediaRef[]) => Promise<R> | R,
  forwarded = false,
): Promise<R | Failure> {
  if (mediaIds.length === 0) return send([]);
  const resolved = await resolveMedia(env, userId, mediaIds, forwarded);
  if (!resolved.ok) return resolved;
  const shared = [...new Set(resolved.media.flatMap((m) => (m.thumbnailId ? [m.id, m.thumbnailId] : [m.id])))];
  const added = await share(env, conversationId, shared, Date.now());
  let result: R | undefined;
  try {
    result = await send(resolved.media);
    return result;
  } finally {
    const duplicate = result !== undefined && "duplicate" in result && result.duplicate === true;
    if ((result === undefined || !result.ok || duplicate) && added.length > 0) await unshare(env, conversationId, added);
  }
}

/** Inserts shares (each on its item's shard); returns the ids that were not shared there before. */
async function share(env: Env, conversationId: string, mediaIds: string[], now: number): Promise<string[]> {
  const s = schema.mediaShares;
  return d1Shards(env).query(mediaIds, async (database, onShard) => {
    const d = drizzleOf(database);
    const [first, ...rest] = onShard.map((mediaId) =>
      d.insert(s).values({ mediaId, conversationId, createdAt: now }).onConflictDoNothing().returning({ mediaId: s.mediaId }),
    );
    if (!first) return [];
    return (await d.batch([first, ...rest])).flat().map((r) => r.mediaId);
  });
}

async function unshare(env: Env, conversationId: string, mediaIds: string[]): Promise<void> {
  const s = schema.mediaShares;
  await d1Shards(env).query(mediaIds, async (database, onShard) => {
    await drizzleOf(database).delete(s).where(and(eq(s.conversationId, conversationId), inArray(s.mediaId, onShard)));
    return [];
  });
}


/**
 * Takes away the shares a message deleted for everyone made in `conversationId`, then erases the
 * items no conversation shares any more (docs/api.md "Message actions"): their bytes from R2, then
 * their rows. Each item's rows are on its uploader's shard, reached by `shardOf(mediaId)`.
 * Idempotent: an item already gone, shared elsewhere (forwarded) or someone's profile photo is
 * left alone, so a retry is safe.
 */
export async function eraseUnsharedMedia(
  shardOf: (key: string) => Pick<D1Database, "prepare" | "batch">,
  bucket: Pick<R2Bucket, "delete">,
  conversationId: string,
  mediaIds: string[],
): Promise<string[]> {
  const erased = await Promise.all(
    [...groupByShard(mediaIds, shardOf)].map(async ([d1, onShard]) => {
      const marks = onShard.map(() => "?").join(", ");
      await d1.prepare(`DELETE FROM media_shares WHERE conversation_id = ? AND media_id IN (${marks})`).bind(conversationId, ...onShard).run();
      const { results } = await d1
        .prepare(
          `SELECT id, r2_key FROM media WHERE id IN (${marks})
           AND NOT EXISTS (SELECT 1 FROM media_shares s WHERE s.media_id = media.id)
           AND NOT EXISTS (SELECT 1 FROM users u WHERE u.photo_id = media.id)`,
        )
        .bind(...onShard)
        .all<{ id: string; r2_key: string }>();
      if (results.length === 0) return [];
      // Bytes first: a row without bytes is harmless, bytes without a row would never be found again.
      await bucket.delete(results.map((r) => r.r2_key));
      const ids = results.map((r) => r.id);
      const idMarks = ids.map(() => "?").join(", ");
      await d1.batch([
        d1.prepare(`DELETE FROM media_parts WHERE media_id IN (${idMarks})`).bind(...ids),
        d1.prepare(`DELETE FROM media WHERE id IN (${idMarks})`).bind(...ids),
      ]);
      return ids;
    }),
  );
  return erased.flat();
}
