// D1 split into shards (kernel/d1/shards.ts): the tests run with D1_SHARDS = 2, so every route that
// reads or writes D1 is exercised on both. These check the routing itself: where rows land, that
// lookups by name, id and prefix find users on every shard, that search pages across shards exactly
// once, and that media visibility is answered by the sharing conversation's object.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Conversation, Message, User } from "../protocol";
import { d1Shards, shardIndex } from "../kernel/d1/shards";
import { call, d1Of, direct, expectError, inD1, json, login, PNG, register, sendRest, unique, upload, withoutTables, type Session } from "./helpers";

type SearchPage = { results: { message: Message }[]; cursor: string | null; hasMore: boolean };

/** `perShard` fresh usernames for each shard, all starting with `prefix`, chosen by where they hash. */
function namesOnEveryShard(prefix: string, perShard: number): string[][] {
  const count = d1Shards(env).count;
  const names: string[][] = Array.from({ length: count }, () => []);
  for (let i = 0; names.some((list) => list.length < perShard); i++) {
    const name = `${prefix}${i}`;
    const list = names[shardIndex(name.toLowerCase(), count)]!;
    if (list.length < perShard) list.push(name);
  }
  return names;
}

/** How many rows `from` has for `key` on each shard, in shard order. */
async function rowsPerShard(from: string, key: string): Promise<number[]> {
  const counts: number[] = [];
  for (const database of d1Shards(env).all) counts.push((await database.prepare(`SELECT count(*) AS n FROM ${from}`).bind(key).first<number>("n")) ?? 0);
  return counts;
}

export function shardTests(): void {
  describe("D1 shards", () => {
    it("runs with at least two shards", () => {
      expect(d1Shards(env).count).toBeGreaterThanOrEqual(2);
    });

    it("keeps a user's row and devices on the shard of their name, and finds users on every shard by id, name and prefix", async () => {
      const prefix = unique("sh").toLowerCase();
      const names = namesOnEveryShard(prefix, 2);
      const sessions: Session[] = [];
      for (const list of names) for (const name of list) sessions.push(await register(name));
      const shardNumber = (database: D1Database) => d1Shards(env).all.indexOf(database);
      for (const [shard, list] of names.entries()) {
        for (const name of list) {
          const s = sessions.find((x) => x.user.username === name)!;
          // The id hashes where the name does, and so does the device: one shard holds them all.
          expect(shardNumber(d1Of(s.user.id))).toBe(shard);
          expect(shardNumber(d1Of(s.device.id))).toBe(shard);
          const only = d1Shards(env).all.map((_, i) => (i === shard ? 1 : 0));
          expect(await rowsPerShard("users WHERE id = ?", s.user.id)).toEqual(only);
          expect(await rowsPerShard("devices WHERE user_id = ?", s.user.id)).toEqual(only);
        }
      }
      const asker = sessions[0]!;
      const everyone = sessions.map((s) => s.user.username).sort();
      // Prefix search gathers every shard's names, in name order.
      const found = await json<{ users: User[] }>(`/users?q=${prefix}`, { token: asker.token });
      expect(found.users.map((u) => u.username)).toEqual(everyone);
      // A lookup of ids from every shard answers in the order asked.
      const ids = sessions.map((s) => s.user.id).reverse();
      expect((await json<{ users: User[] }>(`/users?ids=${ids.join(",")}`, { token: asker.token })).users.map((u) => u.id)).toEqual(ids);
      for (const s of sessions) {
        expect((await json<{ user: User }>(`/users/${s.user.id}`, { token: asker.token })).user.username).toBe(s.user.username);
        // Login finds the account by name on its shard; the name stays unique whatever its case.
        expect((await login(s.user.username.toUpperCase())).user.id).toBe(s.user.id);
        await expectError(await call("/auth/register", { body: { username: s.user.username.toUpperCase(), password: "correct horse" } }), 409, "conflict");
      }
    });

    it("searches the conversations of every shard, paging across them exactly once", async () => {
      const a = await register();
      const word = unique("needle").toLowerCase();
      // Direct chats until the caller has one on every shard.
      const onShard = new Map<D1Database, Conversation>();
      while (onShard.size < d1Shards(env).count) {
        const conv = await direct(a, await register());
        if (!onShard.has(d1Of(conv.id))) onShard.set(d1Of(conv.id), conv);
      }
      const sent: string[] = [];
      for (const conv of onShard.values()) {
        for (let i = 0; i < 3; i++) sent.push((await sendRest(a, conv.id, `${word} ${i}`)).message.id);
      }
      for (const conv of onShard.values()) await inD1(conv.id);

      const seen: string[] = [];
      let before = "";
      for (let pages = 0; pages < 10; pages++) {
        const page = await json<SearchPage>(`/search?q=${word}&limit=2${before}`, { token: a.token });
        seen.push(...page.results.map((r) => r.message.id));
        if (!page.hasMore) break;
        expect(page.cursor).toMatch(new RegExp(`^\\d+(\\.\\d+){${d1Shards(env).count - 1}}$`));
        before = `&before=${page.cursor}`;
      }
      expect(seen.sort()).toEqual([...sent].sort());
      // One conversation: only its shard, only its messages.
      const [first] = onShard.values();
      const one = await json<SearchPage>(`/search?q=${word}&conversationId=${first!.id}`, { token: a.token });
      expect(one.results.map((r) => r.message.conversationId)).toEqual([first!.id, first!.id, first!.id]);
      // A cursor for another number of shards is refused, and answers nothing else.
      const tooMany = Array.from({ length: d1Shards(env).count + 1 }, () => "1").join(".");
      await expectError(await call(`/search?q=${word}&before=${tooMany}`, { token: a.token }), 400, "bad_request");
    });

    it("keeps a media item's rows on its uploader's shard and asks the sharing conversation who may see it", async () => {
      const [a, b, stranger] = [await register(), await register(), await register()];
      const photo = await upload(a, PNG, "image/png", "p.png");
      expect(d1Of(photo)).toBe(d1Of(a.user.id));
      const conv = await direct(a, b);
      await json<{ message: Message }>("/send", { token: a.token, body: { conversationId: conv.id, clientMsgId: unique("m"), mediaIds: [photo] } }, 201);
      expect(await rowsPerShard("media_shares WHERE media_id = ?", photo)).toEqual(d1Shards(env).all.map((database) => (database === d1Of(photo) ? 1 : 0)));
      // Membership is not read from D1's projection: the conversation's object answers.
      await withoutTables(["members", "former_members"], async () => {
        expect((await call(`/media/${photo}/info`, { token: b.token })).status).toBe(200);
        await expectError(await call(`/media/${photo}/info`, { token: stranger.token }), 404, "not_found");
      });
    });
  });
}
