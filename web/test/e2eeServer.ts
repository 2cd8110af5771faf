// A stand-in for the server's E2EE routes, in memory, for the client module's unit tests: device
// keys, key packages (each handed out once), Welcomes, the GroupInfo and, above all, the Delivery
// Service's rule that a commit is accepted only at the current epoch (409 otherwise), appended to
// the conversation's sequence with its messages. It checks no MLS structure (the workerd suite,
// test/e2ee.test.ts, runs the real server); it orders, stores and hands out, as the real one does.
import type { Message } from "../../protocol";
import type { E2eeClient } from "../src/e2ee/client";
import type { Fetch } from "../src/lib/api";

interface Conv {
  members: string[];
  epoch: number;
  groupInfo: string | null;
  messages: Message[];
  /** The device that alone may make the first commit, unless it is gone; null when every member's may. */
  creatorDeviceId: string | null;
  creatorGone: boolean;
}

export class FakeE2eeServer {
  readonly conversations = new Map<string, Conv>();
  readonly deviceKeys = new Map<string, { userId: string; key: string }>();
  readonly keyPackages = new Map<string, { userId: string; oneTime: string[]; lastResort: string | null }>();
  readonly welcomes = new Map<string, { id: string; conversationId: string; seq: number; welcome: string }[]>();
  /** Commits refused for a stale epoch, for the tests to count. */
  conflicts = 0;
  /** The number of users of each key package claim, in order. */
  readonly claims: number[] = [];
  /** Per accepted commit's seq, the devices it added. */
  readonly added = new Map<number, string[]>();
  private nextId = 1;

  /** A conversation with its member list (the server's access list), like POST /group/create. */
  conversation(id: string, members: string[], creatorDeviceId: string | null = null): void {
    this.conversations.set(id, { members, epoch: 0, groupInfo: null, messages: [], creatorDeviceId, creatorGone: false });
    this.append(id, { senderId: members[0]!, senderDeviceId: "", kind: "system", body: JSON.stringify({ event: "created", actorId: members[0], userIds: members.slice(1) }) });
  }

  /** A system message, as the server writes when the member list changes. */
  system(id: string, event: "added" | "removed" | "left", actorId: string, userIds: string[]): void {
    const conv = this.conversations.get(id)!;
    if (event === "added") conv.members.push(...userIds);
    else conv.members = conv.members.filter((m) => !userIds.includes(m));
    this.append(id, { senderId: actorId, senderDeviceId: "", kind: "system", body: JSON.stringify({ event, actorId, userIds }) });
  }

  /**
   * A device logs out: it leaves the directory, and the conversations where it holds a leaf get the
   * server's `deviceLoggedOut` notice (the real server reads the GroupInfo's tree to find them).
   */
  logout(userId: string, deviceId: string, conversationIds: string[]): void {
    this.deviceKeys.delete(deviceId);
    for (const conv of this.conversations.values()) if (conv.creatorDeviceId === deviceId && conv.groupInfo === null) conv.creatorGone = true;
    for (const id of conversationIds) {
      this.append(id, { senderId: userId, senderDeviceId: "", kind: "system", body: JSON.stringify({ event: "deviceLoggedOut", actorId: userId, userIds: [userId], deviceIds: [deviceId] }) });
    }
  }

  messages(id: string): Message[] {
    return this.conversations.get(id)!.messages;
  }

  private append(id: string, m: Partial<Message> & Pick<Message, "senderId" | "senderDeviceId" | "kind">): Message {
    const conv = this.conversations.get(id)!;
    const seq = conv.messages.length + 1;
    const message: Message = {
      id: `m${this.nextId++}`,
      conversationId: id,
      seq,
      clientMsgId: `s${seq}`,
      body: null,
      media: [],
      threadRootSeq: null,
      createdAt: 1_700_000_000_000 + seq,
      ...m,
    };
    conv.messages.push(message);
    return message;
  }

  /** A device's fetch: `Bearer <userId>:<deviceId>` stands for its token. */
  fetchFor(userId: string, deviceId: string): Fetch {
    return async (path, init) => {
      const body: unknown = typeof init.body === "string" ? JSON.parse(init.body) : undefined;
      const answer = this.route(userId, deviceId, init.method ?? "GET", path, body);
      return new Response(answer.status === 204 ? null : JSON.stringify(answer.json ?? null), { status: answer.status, headers: { "content-type": "application/json" } });
    };
  }

  private route(userId: string, deviceId: string, method: string, path: string, body: unknown): { status: number; json?: unknown } {
    const url = new URL(path, "http://server");
    const p = url.pathname;
    const b = body as Record<string, unknown>;
    const error = (status: number, code: string, extra: Record<string, unknown> = {}) => ({ status, json: { error: { code, message: code }, ...extra } });
    let m: RegExpExecArray | null;
    if (method === "PUT" && p === "/devices/me/mls") {
      const existing = this.deviceKeys.get(deviceId);
      if (existing && existing.key !== b.signatureKey) return error(409, "conflict");
      this.deviceKeys.set(deviceId, { userId, key: String(b.signatureKey) });
      return { status: 200, json: { signatureKey: b.signatureKey } };
    }
    if (method === "GET" && (m = /^\/users\/([^/]+)\/devices$/.exec(p))) {
      const devices = [...this.deviceKeys].filter(([, d]) => d.userId === m![1]).map(([id, d]) => ({ id, name: id, createdAt: 1, signatureKey: d.key }));
      return { status: 200, json: { devices } };
    }
    if (p === "/mls/key-packages/count") {
      const k = this.keyPackages.get(deviceId);
      return { status: 200, json: { count: k?.oneTime.length ?? 0, lastResort: !!k?.lastResort } };
    }
    if (method === "POST" && p === "/mls/key-packages") {
      const k = this.keyPackages.get(deviceId) ?? { userId, oneTime: [], lastResort: null };
      k.oneTime.push(...(b.keyPackages as string[]));
      if (typeof b.lastResort === "string") k.lastResort = b.lastResort;
      this.keyPackages.set(deviceId, k);
      return { status: 201, json: { count: (b.keyPackages as string[]).length } };
    }
    if (method === "POST" && p === "/mls/key-packages/claim") {
      const userIds = b.userIds as string[];
      if (userIds.length < 1 || userIds.length > 100) return error(400, "bad_request");
      this.claims.push(userIds.length);
      const out: unknown[] = [];
      for (const [device, k] of this.keyPackages) {
        if (device === deviceId || !(b.userIds as string[]).includes(k.userId)) continue;
        const one = k.oneTime.shift();
        if (one) out.push({ userId: k.userId, deviceId: device, keyPackage: one, lastResort: false });
        else if (k.lastResort) out.push({ userId: k.userId, deviceId: device, keyPackage: k.lastResort, lastResort: true });
      }
      return { status: 200, json: { keyPackages: out } };
    }
    if (method === "GET" && p === "/mls/welcomes") return { status: 200, json: { welcomes: this.welcomes.get(deviceId) ?? [] } };
    if (method === "DELETE" && (m = /^\/mls\/welcomes\/([^/]+)$/.exec(p))) {
      this.welcomes.set(deviceId, (this.welcomes.get(deviceId) ?? []).filter((w) => w.id !== m![1]));
      return { status: 204 };
    }
    const convMatch = /^\/conversations\/([^/]+)\/(.+)$/.exec(p);
    const conv = convMatch ? this.conversations.get(convMatch[1]!) : undefined;
    if (convMatch && (!conv || !conv.members.includes(userId))) return error(404, "not_found");
    if (conv && convMatch![2] === "mls/group-info") {
      return { status: 200, json: { epoch: conv.epoch, groupInfo: conv.groupInfo, ...(conv.groupInfo === null && conv.creatorGone ? { creatorGone: true } : {}) } };
    }
    if (conv && convMatch![2] === "mls/commits" && method === "POST") {
      if (b.epoch !== conv.epoch) {
        this.conflicts++;
        return error(409, "conflict", { epoch: conv.epoch });
      }
      if (conv.epoch === 0 && conv.creatorDeviceId !== null && !conv.creatorGone && deviceId !== conv.creatorDeviceId) return error(400, "bad_request");
      conv.epoch += 1;
      conv.groupInfo = String(b.groupInfo);
      const message = this.append(convMatch![1]!, { senderId: userId, senderDeviceId: deviceId, clientMsgId: String(b.clientMsgId), kind: "mls.commit", commit: String(b.commit) });
      this.added.set(message.seq, (b.welcomeDeviceIds as string[] | undefined) ?? []);
      for (const d of (b.welcomeDeviceIds as string[] | undefined) ?? []) {
        this.welcomes.set(d, [...(this.welcomes.get(d) ?? []), { id: `w${this.nextId++}`, conversationId: convMatch![1]!, seq: message.seq, welcome: String(b.welcome) }]);
      }
      return { status: 201, json: { message } };
    }
    if (conv && convMatch![2] === "messages" && method === "GET") {
      const after = Number(url.searchParams.get("after") ?? 0);
      const limit = Number(url.searchParams.get("limit") ?? 50);
      const rest = conv.messages.filter((x) => x.seq > after);
      return { status: 200, json: { messages: rest.slice(0, limit), hasMore: rest.length > limit } };
    }
    return error(404, "not_found");
  }

  /** A commit put straight into the sequence, past every check (a forged or diverged writer's). */
  injectCommit(conversationId: string, userId: string, deviceId: string, commit: string): Message {
    return this.append(conversationId, { senderId: userId, senderDeviceId: deviceId, kind: "mls.commit", commit });
  }

  /** POST /conversations/:id/actions with a delete for everyone: the target's ciphertext erased, the event appended. */
  deleteForEveryone(conversationId: string, userId: string, deviceId: string, targetSeq: number): Message {
    const target = this.conversations.get(conversationId)!.messages.find((m) => m.seq === targetSeq)!;
    delete target.ciphertext;
    target.deletedAt = Date.now();
    return this.append(conversationId, { senderId: userId, senderDeviceId: deviceId, kind: "action", body: JSON.stringify({ type: "delete", targetSeq }) });
  }

  /** POST /send with a ciphertext (the send queue's part, outside the module under test). */
  sendCiphertext(conversationId: string, userId: string, deviceId: string, clientMsgId: string, ciphertext: string): Message {
    return this.append(conversationId, { senderId: userId, senderDeviceId: deviceId, clientMsgId, kind: "encrypted", ciphertext });
  }
}

/** IndexedDB's part: values stored as copies, as structured clone does. */
export function memoryStore() {
  const map = new Map<string, unknown>();
  return {
    map,
    get: async (key: string) => structuredClone(map.get(key)),
    set: async (key: string, value: unknown) => void map.set(key, structuredClone(value)),
  };
}

/** A simulated device: its client and what it stores. */
export interface Sim {
  client: E2eeClient;
  store: ReturnType<typeof memoryStore>;
  userId: string;
  deviceId: string;
}
