// This device's end-to-end encryption, as one object the store calls: it owns the MLS engine
// (loaded by dynamic import, only once an E2EE conversation needs it), the device's MLS state in
// the account's local store (IndexedDB), and the lock that makes it the only writer of that state
// in this browser profile. Every change (restore, apply, save) runs inside `exclusive`, a Web Lock
// in the app: two tabs never apply a commit to the same state, which would fork the group.
//
// Per conversation it keeps how far it has processed the conversation's sequence (commits applied
// and application messages decrypted strictly in `seq` order) and the plaintext of what it
// decrypted: MLS deletes a message's key once used, so a message can be decrypted once, by one tab.
import * as z from "zod";
import { ActionEvent, ClaimedKeyPackage, MLS_ADDS_PER_COMMIT, Message, PendingWelcome, type Action, type DeviceWithKey } from "../../../protocol";
import { ApiRequestError, Schemas, isTransient, qs, type Api } from "../lib/api";
import type { LocalStore } from "../lib/idb";
import { decodePlaintext, encodeAction, encodeMessage, type Content, type Outgoing } from "./content";
import { foldAction, isAction, isContent, type PlainEntry } from "./fold";
import { emptyIndex, indexMessage, searchKey, type SearchIndex } from "../state/localSearch";
import type { DeviceSnapshot, MlsDevice, PendingCommit } from "./engine";
import { E2eeUnavailable } from "./errors";

export { E2eeUnavailable };

export type EngineModule = typeof import("./engine");

/** Fewer one-time key packages than this on the server and the device uploads more. */
export const KEY_PACKAGES_LOW = 10;
const KEY_PACKAGES_BATCH = 20;
/** Attempts at a commit that keeps losing the epoch race before giving up for now. */
const COMMIT_ATTEMPTS = 6;
/** Users in one key package claim (API.md: 1-100). */
const CLAIM_USERS_MAX = 100;
const PAGE = 200;
/** How long a device already added to a group waits for its Welcome before joining by itself. */
const WELCOME_WAITS = 4;
const WELCOME_WAIT_MS = 500;

export type { PlainEntry };

/** What this device seals: a message's fields or an action (docs/api.md, Message actions). */
export type Sealed = Outgoing | { action: Action };

export interface GroupProgress {
  /** Every message up to this seq has been applied or decrypted (or was before the join). */
  processedSeq: number;
  /** The seq of the commit or Welcome that brought this device in: nothing before it is readable. */
  joinedSeq: number;
  /** Why this device stopped processing the conversation (a fork, a failed commit, removed). */
  problem?: string;
  /** Users the member list dropped (system messages) whose leaves are still to be removed. */
  departed?: string[];
  /** A device logged out (a `deviceLoggedOut` system message): its leaves are to be removed. */
  goneDevicesDue?: boolean;
  /** When this device last compared the group's leaves with the device directory. */
  goneDevicesCheckedAt?: number;
  /** The latest processed message a conversation list may show as its preview (not an encrypted action). */
  lastShown?: Message;
}

export interface ConversationCrypto {
  /** `waiting`: the group has no GroupInfo yet (its creator's device has not committed). */
  status: "ready" | "waiting" | "problem";
  problem: string | null;
  processedSeq: number;
  joinedSeq: number;
  plain: Map<number, PlainEntry>;
  /** The latest message to preview in the list: the server's `lastMessage` may be an encrypted action. */
  lastShown?: Message;
}

/** The device's record in its local store. `version` moves with every save. */
interface StoredDevice {
  version: number;
  snapshot: DeviceSnapshot;
  registered: boolean;
  groups: Record<string, GroupProgress>;
}

const DEVICE_KEY = "mls:device";
const plainKey = (conversationId: string) => `mls:plain:${conversationId}`;
const SENT_KEY = "mls:sent";

/**
 * How often the group's leaves are compared with the device directory without a notice: the
 * server's `deviceLoggedOut` notice can be missed (docs/e2ee.md, "When a device logs out").
 */
export const GONE_DEVICES_CHECK_MS = 24 * 3600 * 1000;


const GroupInfoAnswer = z.object({ epoch: z.number(), groupInfo: z.string().nullable(), creatorGone: z.boolean().optional() });
const Welcomes = z.object({ welcomes: z.array(PendingWelcome) });
const Claimed = z.object({ keyPackages: z.array(ClaimedKeyPackage) });
const Count = z.object({ count: z.number(), lastResort: z.boolean() });
const Devices = z.object({ devices: z.array(z.object({ id: z.string(), signatureKey: z.string().nullable() }).loose()) });

export interface E2eeClientDeps {
  userId: string;
  deviceId: string;
  api: Pick<Api, "call">;
  store: Pick<LocalStore, "get" | "set">;
  /** Runs `fn` as the only MLS writer of this browser profile (navigator.locks in the app). */
  exclusive: <T>(fn: () => Promise<T>) => Promise<T>;
  engine: () => Promise<EngineModule>;
  /** The conversation's admins as this device knows them: they may delete others' messages. */
  adminsOf?: (conversationId: string) => readonly string[];
  /** Its members as this device knows them: whom a first commit made in the creator's place adds. */
  membersOf?: (conversationId: string) => readonly string[];
  newId?: () => string;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

export class E2eeClient {
  private device: MlsDevice | null = null;
  private record: StoredDevice | null = null;
  /** The version of the stored record `device` was restored from. */
  private version = -1;
  private readonly newId: () => string;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly now: () => number;

  constructor(private readonly deps: E2eeClientDeps) {
    this.newId = deps.newId ?? (() => crypto.randomUUID());
    this.now = deps.now ?? (() => Date.now());
    this.sleep = deps.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  private get api() {
    return this.deps.api;
  }

  /** Runs `fn` with the current device state, under the lock; on failure the in-memory copy is dropped. */
  private locked<T>(fn: (device: MlsDevice, record: StoredDevice) => Promise<T>): Promise<T> {
    return this.deps.exclusive(async () => {
      const { device, record } = await this.load();
      try {
        return await fn(device, record);
      } catch (err) {
        // What is in memory may be ahead of what was saved: read the store again next time.
        this.device = null;
        this.version = -1;
        throw err;
      }
    });
  }

  /** The stored state, restored only when another tab (or an earlier failure) changed it. */
  private async load(): Promise<{ device: MlsDevice; record: StoredDevice }> {
    const stored = (await this.deps.store.get(DEVICE_KEY)) as StoredDevice | undefined;
    const engine = await this.deps.engine();
    const directory = (userId: string) => this.devicesOf(userId);
    if (stored && this.device && this.record && stored.version === this.version) return { device: this.device, record: this.record };
    if (stored && stored.snapshot.deviceId === this.deps.deviceId) {
      this.device = await engine.MlsDevice.restore(stored.snapshot, directory);
      this.record = stored;
    } else {
      this.device = await engine.MlsDevice.create(this.deps.userId, this.deps.deviceId, directory);
      this.record = { version: 0, snapshot: this.device.snapshot(), registered: false, groups: {} };
      await this.deps.store.set(DEVICE_KEY, this.record);
    }
    this.version = this.record.version;
    return { device: this.device, record: this.record };
  }

  private async save(device: MlsDevice, record: StoredDevice): Promise<void> {
    record.version += 1;
    record.snapshot = device.snapshot();
    await this.deps.store.set(DEVICE_KEY, record);
    this.version = record.version;
  }

  private async devicesOf(userId: string): Promise<Pick<DeviceWithKey, "id" | "signatureKey">[]> {
    return (await this.api.call("GET", `/users/${encodeURIComponent(userId)}/devices`, Devices)).devices;
  }

  // --- the device: its key and key packages ------------------------------------------------------

  /** Registers the device's signature key (once) and keeps its key packages stocked. */
  ready(): Promise<void> {
    return this.locked(async (device, record) => {
      await this.register(device, record);
      await this.restock(device, record);
      await this.acceptWelcomes(device, record);
    });
  }

  /** The server said this device runs low on key packages (`mls.keyPackagesLow`). */
  replenish(): Promise<void> {
    return this.locked(async (device, record) => {
      await this.register(device, record);
      await this.restock(device, record);
    });
  }

  private async register(device: MlsDevice, record: StoredDevice): Promise<void> {
    if (record.registered) return;
    try {
      await this.api.call("PUT", "/devices/me/mls", Schemas.none, { signatureKey: device.signatureKey });
    } catch (err) {
      if (err instanceof ApiRequestError && err.status === 409) {
        throw new E2eeUnavailable("This device lost its encryption keys. Sign out and sign in again to use encrypted chats.");
      }
      throw err;
    }
    record.registered = true;
    await this.save(device, record);
  }

  private async restock(device: MlsDevice, record: StoredDevice): Promise<void> {
    const { count, lastResort } = await this.api.call("GET", "/mls/key-packages/count", Count);
    const replaceLastResort = !lastResort || device.lastResortUsed;
    if (count >= KEY_PACKAGES_LOW && !replaceLastResort) return;
    // An upload needs at least one one-time package, so a missing or used last resort brings one along.
    const keyPackages = await device.generateKeyPackages(count >= KEY_PACKAGES_LOW ? 1 : KEY_PACKAGES_BATCH);
    const last = replaceLastResort ? await device.generateLastResort() : undefined;
    // Their private keys are stored before the packages can be handed to anyone.
    await this.save(device, record);
    await this.api.call("POST", "/mls/key-packages", Schemas.none, { keyPackages, ...(last ? { lastResort: last } : {}) });
  }

  // --- joining -----------------------------------------------------------------------------------

  /** The Welcomes waiting for this device: each joins its group (or is dropped if already in). */
  private async acceptWelcomes(device: MlsDevice, record: StoredDevice): Promise<void> {
    const { welcomes } = await this.api.call("GET", "/mls/welcomes", Welcomes);
    for (const w of welcomes) {
      if (!device.groups.has(w.conversationId)) {
        try {
          await device.joinFromWelcome(w.welcome);
          record.groups[w.conversationId] = { processedSeq: w.seq, joinedSeq: w.seq };
          await this.save(device, record);
        } catch (err) {
          // The device directory could not be read: keep the Welcome for the next try.
          if (transient(err)) throw err;
          // Not for a key package this device holds (a state restored from before it was made):
          // the device joins by an external commit instead.
        }
      }
      await this.api.call("DELETE", `/mls/welcomes/${encodeURIComponent(w.id)}`, Schemas.none);
    }
    if (device.lastResortUsed) await this.restock(device, record);
  }

  /** Joins a conversation this device has no group state for: by Welcome, else by external commit. */
  private async join(conversationId: string, device: MlsDevice, record: StoredDevice): Promise<boolean> {
    await this.acceptWelcomes(device, record);
    for (let attempt = 0; attempt < COMMIT_ATTEMPTS && !device.groups.has(conversationId); attempt++) {
      const info = await this.api.call("GET", `/conversations/${encodeURIComponent(conversationId)}/mls/group-info`, GroupInfoAnswer);
      if (info.groupInfo === null) {
        // No group yet, and its creator can no longer make it (its device signed out, or it
        // left). Then every member's device may; one that loses that race joins the winner's group.
        if (!info.creatorGone) return false;
        if (await this.found(conversationId, device, record)) return true;
        await this.acceptWelcomes(device, record);
        continue;
      }
      const pending = await device.joinExternal(conversationId, info.groupInfo);
      // A member's device added this one (with a key package) a moment ago: its Welcome is on the
      // way, and joining again would give the device a second leaf.
      const { membersOf } = await this.deps.engine();
      if (membersOf(pending.next).filter((m) => m.deviceId === this.deps.deviceId).length > 1) {
        for (let wait = 1; wait <= WELCOME_WAITS && !device.groups.has(conversationId); wait++) {
          await this.sleep(WELCOME_WAIT_MS * wait);
          await this.acceptWelcomes(device, record);
        }
        if (device.groups.has(conversationId)) return true;
      }
      const message = await this.postCommit(pending);
      if (message) {
        device.accept(pending);
        record.groups[conversationId] = { processedSeq: message.seq, joinedSeq: message.seq };
        await this.save(device, record);
        return true;
      }
      // Someone committed first; that may have been the Add of this very device, whose Welcome
      // is then on its way.
      await this.acceptWelcomes(device, record);
    }
    return device.groups.has(conversationId);
  }

  /**
   * The group's first commit, made in place of a creator that can no longer make it: the group at
   * epoch 0 adding the members' devices that have a key package (at most MLS_ADDS_PER_COMMIT; the
   * others join by external commit). Returns false if another device's first commit was taken
   * (409), having dropped the group this device made.
   */
  private async found(conversationId: string, device: MlsDevice, record: StoredDevice): Promise<boolean> {
    const userIds = [...new Set([...(this.deps.membersOf?.(conversationId) ?? []), this.deps.userId])].slice(0, CLAIM_USERS_MAX);
    const { keyPackages } = await this.api.call("POST", "/mls/key-packages/claim", Claimed, { userIds });
    await device.createGroup(conversationId);
    let message: Message | null = null;
    try {
      const add = keyPackages.filter((k) => k.deviceId !== this.deps.deviceId).slice(0, MLS_ADDS_PER_COMMIT);
      const pending = await device.commit(conversationId, { add: add.map((k) => k.keyPackage) });
      message = await this.postCommit(pending);
      if (message) device.accept(pending);
    } finally {
      if (!message) device.groups.delete(conversationId);
    }
    if (!message) return false;
    record.groups[conversationId] = { processedSeq: 0, joinedSeq: 0 };
    await this.save(device, record);
    return true;
  }

  /** POST the commit: its stored message, or null when another commit took the epoch (409). */
  private async postCommit(pending: PendingCommit): Promise<Message | null> {
    const { conversationId, epoch, commit, groupInfo, welcome, welcomeDeviceIds } = pending;
    const body = { clientMsgId: this.newId(), epoch, commit, groupInfo, ...(welcome ? { welcome, welcomeDeviceIds } : {}) };
    try {
      return (await this.api.call("POST", `/conversations/${encodeURIComponent(conversationId)}/mls/commits`, Schemas.message, body)).message;
    } catch (err) {
      if (err instanceof ApiRequestError && err.status === 409) return null;
      throw err;
    }
  }

  // --- groups ------------------------------------------------------------------------------------

  /**
   * Sets up the group of a conversation this user just created: the group at epoch 0 and a first
   * commit adding every device of the members (this user's other devices too) that has a key
   * package. Devices without one join later by external commit. If the group exists already
   * (a direct chat the other side created first), this device joins it instead.
   */
  create(conversationId: string, memberIds: string[]): Promise<ConversationCrypto> {
    return this.locked(async (device, record) => {
      await this.register(device, record);
      await this.restock(device, record);
      const info = await this.api.call("GET", `/conversations/${encodeURIComponent(conversationId)}/mls/group-info`, GroupInfoAnswer);
      if (info.groupInfo === null && !device.groups.has(conversationId)) {
        await device.createGroup(conversationId);
        record.groups[conversationId] = { processedSeq: 0, joinedSeq: 0 };
        await this.commitChange(conversationId, device, record, { addUsers: [...new Set([...memberIds, this.deps.userId])], always: true });
      }
      return this.catchUpLocked(conversationId, device, record);
    });
  }

  /** Adds the devices of users just added to the member list. */
  addUsers(conversationId: string, userIds: string[]): Promise<ConversationCrypto> {
    return this.locked(async (device, record) => {
      await this.catchUpLocked(conversationId, device, record);
      if (device.groups.has(conversationId)) await this.commitChange(conversationId, device, record, { addUsers: userIds });
      return this.catchUpLocked(conversationId, device, record);
    });
  }

  /** Removes the leaves of users just removed from the member list. */
  removeUsers(conversationId: string, userIds: string[]): Promise<ConversationCrypto> {
    return this.locked(async (device, record) => {
      await this.catchUpLocked(conversationId, device, record);
      if (device.groups.has(conversationId)) await this.commitChange(conversationId, device, record, { removeUsers: userIds });
      return this.catchUpLocked(conversationId, device, record);
    });
  }

  /**
   * Commits a change, and on a lost epoch race (409) processes what it missed and tries again.
   * The key packages are claimed once (at most 100 users a claim): a retry reuses them, minus
   * devices already in the group. Adds go at most MLS_ADDS_PER_COMMIT a commit (the Removes with
   * the first), so that a commit of a large group stays under the server's limits: its GroupInfo
   * and Welcome carry the whole ratchet tree, and its commit is relayed to every member.
   */
  private async commitChange(
    conversationId: string,
    device: MlsDevice,
    record: StoredDevice,
    change: { addUsers?: string[]; removeUsers?: string[]; always?: boolean },
    removing = false,
  ): Promise<void> {
    const claimed: ClaimedKeyPackage[] = [];
    const addUsers = change.addUsers ?? [];
    for (let i = 0; i < addUsers.length; i += CLAIM_USERS_MAX) {
      const userIds = addUsers.slice(i, i + CLAIM_USERS_MAX);
      claimed.push(...(await this.api.call("POST", "/mls/key-packages/claim", Claimed, { userIds })).keyPackages);
    }
    let first = true;
    for (;;) {
      let committed = false;
      for (let attempt = 0; attempt < COMMIT_ATTEMPTS && !committed; attempt++) {
        const members = device.members(conversationId);
        const present = new Set(members.map((m) => m.deviceId));
        const add = claimed.filter((k) => !present.has(k.deviceId)).slice(0, MLS_ADDS_PER_COMMIT).map((k) => k.keyPackage);
        const removeDevices = members.filter((m) => change.removeUsers?.includes(m.userId)).map((m) => m.deviceId);
        if (add.length === 0 && removeDevices.length === 0 && !(change.always && first)) return;
        const pending = await device.commit(conversationId, { add, removeDevices });
        if (await this.postCommit(pending)) {
          device.accept(pending);
          await this.save(device, record);
          committed = true;
        } else {
          await this.catchUpLocked(conversationId, device, record, [], removing);
        }
      }
      if (!committed) throw new Error("could not commit: the group kept changing");
      first = false;
    }
  }

  /** A Welcome frame arrived: join its group. */
  welcomed(): Promise<void> {
    return this.locked((device, record) => this.acceptWelcomes(device, record));
  }

  /**
   * Brings the conversation up to date: joins if this device is new to it, then applies commits
   * and decrypts messages in seq order. `known`: messages just received, used instead of a fetch
   * when they continue from where processing stands.
   */
  catchUp(conversationId: string, known: Message[] = []): Promise<ConversationCrypto> {
    return this.locked((device, record) => this.catchUpLocked(conversationId, device, record, known));
  }

  /** What this device holds for a conversation, without the network (offline start). */
  async stored(conversationId: string): Promise<ConversationCrypto> {
    const record = (await this.deps.store.get(DEVICE_KEY)) as StoredDevice | undefined;
    return this.result(record?.groups[conversationId], await this.plainOf(conversationId));
  }

  private async plainOf(conversationId: string): Promise<Record<number, PlainEntry>> {
    return ((await this.deps.store.get(plainKey(conversationId))) as Record<number, PlainEntry> | undefined) ?? {};
  }

  private result(progress: GroupProgress | undefined, plain: Record<number, PlainEntry>): ConversationCrypto {
    return {
      status: progress?.problem ? "problem" : progress ? "ready" : "waiting",
      problem: progress?.problem ?? null,
      processedSeq: progress?.processedSeq ?? 0,
      joinedSeq: progress?.joinedSeq ?? 0,
      plain: new Map(Object.entries(plain).map(([seq, entry]) => [Number(seq), entry])),
      ...(progress?.lastShown ? { lastShown: progress.lastShown } : {}),
    };
  }

  private async catchUpLocked(conversationId: string, device: MlsDevice, record: StoredDevice, known: Message[] = [], removing = false): Promise<ConversationCrypto> {
    if (!device.groups.has(conversationId)) {
      await this.register(device, record);
      await this.restock(device, record);
      if (!(await this.join(conversationId, device, record))) return this.result(undefined, {});
    }
    const progress = record.groups[conversationId] ?? (record.groups[conversationId] = { processedSeq: 0, joinedSeq: 0 });
    const plain = await this.plainOf(conversationId);
    if (progress.problem) return this.result(progress, plain);
    const sent = ((await this.deps.store.get(SENT_KEY)) as Record<string, Sealed> | undefined) ?? {};
    let changed = false;
    // Seqs whose text changed (decrypted, edited, deleted), with the message itself when it is
    // the one processed: the search index follows.
    const touched = new Map<number, Message | null>();
    const take = (m: Message, from: string, sealed: Sealed) => {
      if ("action" in sealed) {
        const admin = this.deps.adminsOf?.(conversationId).includes(from) ?? false;
        const applied = foldAction(plain, sealed.action, { userId: from, at: m.createdAt, admin });
        plain[m.seq] = { action: { type: sealed.action.type, targetSeq: sealed.action.targetSeq }, from, applied };
        const targetSeq = sealed.action.targetSeq;
        if (applied && (sealed.action.type === "edit" || sealed.action.type === "delete")) touched.set(targetSeq, touched.get(targetSeq) ?? null);
      } else {
        plain[m.seq] = { v: 1, ...sealed, from, at: m.createdAt };
        touched.set(m.seq, m);
      }
    };
    try {
      const apply = async (m: Message) => {
        if (m.kind === "mls.commit" && m.commit) {
          try {
            await device.processCommit(conversationId, m.commit);
          } catch (err) {
            // Checking a new leaf reads the device directory: offline is not a broken group.
            if (transient(err)) throw err;
            const why = err instanceof Error ? err.message : String(err);
            progress.problem = /forked/.test(why) ? `The encryption state of this conversation forked (${why}).` : `A change to the group could not be applied (${why}).`;
          }
          if (!progress.problem && !device.isActive(conversationId)) progress.problem = "This device was removed from the group.";
        } else if (m.kind === "system" && m.body) {
          noteDeparture(progress, m.body);
        } else if (m.kind === "action" && m.body) {
          // Deleted for everyone: the text this device decrypted goes too, not only the server's ciphertext.
          const deleted = deletedTarget(m.body);
          if (deleted !== null) {
            delete plain[deleted];
            touched.set(deleted, null);
          }
        } else if (m.kind === "encrypted" && m.ciphertext) {
          if (m.senderDeviceId === this.deps.deviceId) {
            // MLS does not let a sender decrypt its own message: the text was kept when it was sealed.
            const mine = sent[m.clientMsgId];
            if (mine) take(m, this.deps.userId, mine);
            else plain[m.seq] = { failed: "sent from this device; its text was not kept" };
            delete sent[m.clientMsgId];
          } else {
            let opened: { plaintext: Uint8Array; userId: string } | null = null;
            try {
              opened = await device.decryptFrom(conversationId, m.ciphertext);
            } catch {
              plain[m.seq] = { failed: "cannot decrypt" };
            }
            if (opened) {
              const p = decodePlaintext(opened.plaintext);
              // The server names the sender; MLS proves it. A message whose two disagree is not shown.
              if (opened.userId !== m.senderId) plain[m.seq] = { failed: "its sender is not who the server says" };
              else if (!p) plain[m.seq] = { failed: "not a message this app can show" };
              else take(m, opened.userId, p.type === "action" ? { action: p.action } : p.content);
            }
          }
        }
        if (m.threadRootSeq === null && m.kind !== "mls.commit" && m.kind !== "action" && !isAction(plain[m.seq])) progress.lastShown = withoutCiphertext(m);
        progress.processedSeq = m.seq;
        changed = true;
      };
      const queue = known.filter((m) => m.conversationId === conversationId && m.seq > progress.processedSeq).sort((a, b) => a.seq - b.seq);
      while (queue[0] && queue[0].seq === progress.processedSeq + 1 && !progress.problem) await apply(queue.shift()!);
      // A hole between what is processed and what arrived, or no hint at all: read the sequence.
      if (!progress.problem && (queue.length > 0 || known.length === 0)) {
        for (;;) {
          const page = await this.api.call("GET", `/conversations/${encodeURIComponent(conversationId)}/messages${qs({ after: progress.processedSeq, limit: PAGE })}`, Schemas.history);
          for (const m of page.messages) {
            if (progress.problem) break;
            if (m.seq > progress.processedSeq) await apply(m);
          }
          if (!page.hasMore || page.messages.length === 0 || progress.problem) break;
        }
      }
    } finally {
      if (changed) {
        await this.deps.store.set(plainKey(conversationId), plain);
        if (touched.size > 0) await this.reindex(conversationId, plain, touched);
        await this.deps.store.set(SENT_KEY, sent);
        await this.save(device, record);
      }
    }
    if (progress.departed?.length && !progress.problem && !removing) {
      // The member list is the access list: their leaves go from the group too. Every member's
      // device may try; the server's epoch check lets one commit win, and the others then find
      // nothing left to remove.
      try {
        await this.commitChange(conversationId, device, record, { removeUsers: progress.departed.filter((u) => u !== this.deps.userId) }, true);
        delete progress.departed;
        await this.save(device, record);
      } catch (err) {
        // Kept for the next catch-up; reading the conversation goes on meanwhile.
        if (err instanceof E2eeUnavailable) throw err;
      }
    }
    if (!progress.problem && !removing) await this.removeGoneDevicesIfDue(conversationId, device, record, progress);
    return this.result(progress, plain);
  }

  /**
   * Removes the leaves of logged-out devices, when a notice said one logged out or a day has passed
   * since the last look. Like removals of departed users, every member's device may try; the epoch
   * check lets one commit win and the others find nothing left.
   */
  private async removeGoneDevicesIfDue(conversationId: string, device: MlsDevice, record: StoredDevice, progress: GroupProgress): Promise<void> {
    const now = this.now();
    // A group just joined was compared with the directory when its leaves were checked.
    progress.goneDevicesCheckedAt ??= now;
    if (!progress.goneDevicesDue && now - progress.goneDevicesCheckedAt < GONE_DEVICES_CHECK_MS) return;
    try {
      for (let attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
        const pending = await device.removeStale(conversationId);
        if (!pending) break;
        if (await this.postCommit(pending)) {
          device.accept(pending);
          break;
        }
        await this.catchUpLocked(conversationId, device, record, [], true);
        if (progress.problem) return;
      }
      delete progress.goneDevicesDue;
      progress.goneDevicesCheckedAt = now;
    } catch (err) {
      // Kept for the next catch-up; reading the conversation goes on meanwhile.
      if (err instanceof E2eeUnavailable) throw err;
    }
    await this.save(device, record);
  }

  /**
   * Messages deleted for this user only: their decrypted text leaves this device's store and
   * search index. Null when there was nothing of them here.
   */
  forget(conversationId: string, seqs: number[]): Promise<ConversationCrypto | null> {
    return this.deps.exclusive(async () => {
      const plain = await this.plainOf(conversationId);
      const gone = seqs.filter((seq) => isContent(plain[seq]));
      if (gone.length === 0) return null;
      for (const seq of gone) plain[seq] = { failed: "deleted for me" };
      await this.deps.store.set(plainKey(conversationId), plain);
      const index = (await this.deps.store.get(searchKey(conversationId))) as SearchIndex | undefined;
      if (index) {
        for (const seq of gone) indexMessage(index, seq, null);
        await this.deps.store.set(searchKey(conversationId), index);
      }
      const record = (await this.deps.store.get(DEVICE_KEY)) as StoredDevice | undefined;
      return this.result(record?.groups[conversationId], plain);
    });
  }

  /** Puts the current text of the touched messages in the conversation's search index. */
  private async reindex(conversationId: string, plain: Record<number, PlainEntry>, touched: Map<number, Message | null>): Promise<void> {
    const index = ((await this.deps.store.get(searchKey(conversationId))) as SearchIndex | undefined) ?? emptyIndex();
    for (const [seq, m] of touched) {
      const entry = plain[seq];
      const held = index.docs[seq];
      if (!isContent(entry) || entry.deletedAt !== undefined || entry.body === undefined) {
        indexMessage(index, seq, null);
        continue;
      }
      // An edited target is in the index already: a message decrypted before the index existed
      // has no recorded sender, so no edit of it applies.
      const base = held ?? (m ? withoutCiphertext(m) : null);
      if (base) indexMessage(index, seq, { ...base, body: entry.body, ...(entry.editedAt !== undefined ? { editedAt: entry.editedAt } : {}) });
    }
    await this.deps.store.set(searchKey(conversationId), index);
  }

  /**
   * Encrypts a message or an action for the conversation, at its current epoch (after processing
   * what the server holds), and keeps it: the sender cannot decrypt its own message later.
   */
  seal(conversationId: string, clientMsgId: string, content: Sealed): Promise<string> {
    return this.locked(async (device, record) => {
      const state = await this.catchUpLocked(conversationId, device, record);
      if (state.status === "problem") throw new E2eeUnavailable(state.problem ?? "encryption failed in this conversation");
      // Waiting for the group's creator: the outbox tries again a little later.
      if (state.status !== "ready") throw new Error("encryption is not set up for this conversation yet");
      const ciphertext = await device.encrypt(conversationId, "action" in content ? encodeAction(content.action) : encodeMessage(content));
      const sent = ((await this.deps.store.get(SENT_KEY)) as Record<string, Sealed> | undefined) ?? {};
      sent[clientMsgId] = content;
      await this.deps.store.set(SENT_KEY, sent);
      await this.save(device, record);
      return ciphertext;
    });
  }
}

/** A failure that says nothing about the group: the network, or the server busy. */
function transient(err: unknown): boolean {
  return isTransient(err) || (err instanceof Error && isTransient(err.cause));
}

/**
 * Notes who left or was removed (a system message's event), forgets who was added back, and that a
 * device logged out.
 */
function noteDeparture(progress: GroupProgress, body: string): void {
  let event: { event?: unknown; userIds?: unknown };
  try {
    event = JSON.parse(body) as typeof event;
  } catch {
    return;
  }
  if (event.event === "deviceLoggedOut") progress.goneDevicesDue = true;
  if (!Array.isArray(event.userIds)) return;
  const users = event.userIds.filter((u): u is string => typeof u === "string");
  const departed = new Set(progress.departed ?? []);
  if (event.event === "removed" || event.event === "left") for (const u of users) departed.add(u);
  else if (event.event === "added") for (const u of users) departed.delete(u);
  if (departed.size > 0) progress.departed = [...departed];
  else delete progress.departed;
}

/** The seq an `action` message's body deletes for everyone, or null. */
function deletedTarget(body: string): number | null {
  try {
    const event = ActionEvent.safeParse(JSON.parse(body));
    return event.success && event.data.type === "delete" ? event.data.targetSeq : null;
  } catch {
    return null;
  }
}

/** A message as the search index keeps it: no ciphertext (the text is the decrypted one). */
function withoutCiphertext(m: Message): Message {
  const { ciphertext: _c, ...rest } = m;
  return rest;
}
