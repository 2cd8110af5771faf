// The MLS Delivery Service of one E2EE conversation (API.md "End-to-end encryption"): it totally
// orders the group's commits. A commit is accepted only at the current epoch, by a compare-and-set
// in the same synchronous SQLite step that appends it as an `mls.commit` message under the usual
// seq, so two racing commits can never both be accepted; the loser gets 409 with the epoch and
// retries after processing the winner. It also checks what it can of a commit without any key of
// the group (sender, credentials, signatures, Adds against the member list), keeps the latest
// GroupInfo for external joins, and hands Welcomes to the new devices' user objects only once the
// commit that makes them meaningful is stored.
import { newId } from "../../kernel/ids";
import { fail, type Failure, type Result } from "../../kernel/result";
import type { Identity } from "../../kernel/identity";
import {
  isWelcome,
  leafOf,
  leavesOf,
  readCommit,
  readGroupInfo,
  readPrivateMessage,
  sameBytes,
  verifyCommitSignature,
  verifyGroupInfo,
  verifyKeyPackageSignatures,
  type LeafIdentity,
  type ParsedGroupInfo,
} from "../../kernel/mls";
import { fromBase64Url, type CommitBody, type MediaRef, type Message } from "../../protocol";
import type { DeviceKeys, WelcomeForDevice } from "../contract";
import type { ConversationMeta, ConversationStore } from "./conversationStore";

/** Application messages are accepted for the current epoch and this many before it (API.md). */
export const PAST_EPOCHS_ACCEPTED = 3;

export type CommitResult = Result<{ message: Message; duplicate: boolean }> | (Failure & { epoch: number });

export interface MlsDeliveryDeps {
  /** Stores the commit's message (under the usual seq) and tells the conversation's sockets; returns it. */
  appendCommit(sender: Identity, clientMsgId: string, commit: string, now: number): Message;
  /** Stores and delivers the `deviceLoggedOut` system message of a member's device; returns it. */
  appendDeviceLoggedOut(device: Identity, now: number): Message;
  /** Asks for the Welcomes stored with a commit to be handed to their user objects. */
  deliverWelcomes(): void;
  /** Takes one token of the sender's message rate limit: 0 when allowed, else the seconds to wait. */
  takeRateToken(userId: string, now: number): number;
}

export class MlsDelivery {
  constructor(
    private readonly store: ConversationStore,
    private readonly deps: MlsDeliveryDeps,
  ) {}

  /**
   * Checks and stores a commit, in the contract's order: the body's MLS structures parse and
   * `epoch` is the commit's own (400); the caller is a member (404); a clientMsgId already used
   * answers the stored message; `epoch` is current (409); sender and credentials (400); Adds name
   * devices of members (403); Welcome and its devices (400); the first commit is the creator
   * device's (400); an external commit removes only its own device's old leaf (403).
   * `keys`: what D1 says of the caller's device and of every device the commit adds.
   */
  async commit(sender: Identity, body: CommitBody, keys: DeviceKeys, now: number): Promise<CommitResult> {
    const meta = this.store.meta;
    const conversationId = meta?.id;
    const commit = readCommit(body.commit, now);
    const groupInfo = readGroupInfo(body.groupInfo);
    if (!commit) return fail("bad_request", "commit is not an MLS PublicMessage commit of suite 1");
    if (!groupInfo) return fail("bad_request", "groupInfo is not an MLS GroupInfo");
    if (body.welcome !== undefined && !isWelcome(body.welcome)) return fail("bad_request", "welcome is not an MLS Welcome of suite 1");
    if (commit.epoch !== body.epoch) return fail("bad_request", "epoch is not the commit's own epoch");
    if (!meta || !this.store.members.has(sender.userId)) return fail("not_found", "no such conversation");
    if (commit.groupId !== conversationId || groupInfo.groupId !== conversationId) return fail("bad_request", "not this conversation's group");
    if (!meta.e2ee) return fail("bad_request", "not an end-to-end encrypted conversation");

    const stored = this.store.findByClientMsgId(sender.userId, body.clientMsgId);
    if (stored) return { ok: true, message: stored, duplicate: true };
    if (body.epoch !== meta.mlsEpoch) return { ...fail("conflict", `the group is at epoch ${meta.mlsEpoch}`), epoch: meta.mlsEpoch };
    // Commits share the sender's message budget: each is a message of the sequence, and its checks cost signatures.
    const wait = this.deps.takeRateToken(sender.userId, now);
    if (wait > 0) return fail("rate_limited", "too many messages", wait);

    const refused = await this.refusal(sender, body, commit, groupInfo, keys, now);
    if (refused) return refused;

    // Checks awaited signatures; another commit may have been stored meanwhile. From here on, one
    // synchronous step: compare-and-set the epoch, append, keep the GroupInfo, queue the Welcomes.
    const again = this.store.findByClientMsgId(sender.userId, body.clientMsgId);
    if (again) return { ok: true, message: again, duplicate: true };
    if (body.epoch !== meta.mlsEpoch) return { ...fail("conflict", `the group is at epoch ${meta.mlsEpoch}`), epoch: meta.mlsEpoch };
    const message = this.deps.appendCommit(sender, body.clientMsgId, body.commit, now);
    this.store.setMlsState(body.epoch + 1, body.groupInfo);
    const added = new Map(commit.adds.map((kp) => [kp.identity.deviceId, kp.identity.userId]));
    for (const deviceId of body.welcomeDeviceIds ?? []) {
      this.store.queueWelcome({ id: newId(now), seq: message.seq, userId: added.get(deviceId)!, deviceId, welcome: body.welcome! });
    }
    if (added.size > 0) this.deps.deliverWelcomes();
    return { ok: true, message, duplicate: false };
  }

  /** Why the commit is refused after the epoch check, or null. */
  private async refusal(
    sender: Identity,
    body: CommitBody,
    commit: NonNullable<ReturnType<typeof readCommit>>,
    groupInfo: ParsedGroupInfo,
    keys: DeviceKeys,
    now: number,
  ): Promise<Failure | null> {
    const ownKey = keys[sender.deviceId]?.userId === sender.userId ? fromBase64Url(keys[sender.deviceId]?.signatureKey ?? "") : null;
    if (!ownKey) return fail("bad_request", "this device has registered no MLS signature key");
    const isDevice = (leaf: LeafIdentity | null) =>
      leaf !== null && leaf.userId === sender.userId && leaf.deviceId === sender.deviceId && sameBytes(leaf.signatureKey, ownKey);
    if (commit.unsupported.length > 0) return fail("bad_request", `unsupported in a commit: ${commit.unsupported.join(", ")}`);
    if (commit.badAdds > 0) return fail("bad_request", "an Add's key package is not suite 1 with a current <userId>:<deviceId> credential");

    const storedText = this.store.mlsGroupInfo();
    const current = storedText ? readGroupInfo(storedText) : null;
    const external = commit.sender.kind === "new_member_commit";
    if (commit.sender.kind === "other") return fail("bad_request", "a commit comes from a member or a new member");
    if (external) {
      if (!current) return fail("bad_request", "no group to join yet");
      if (!commit.externalInit) return fail("bad_request", "an external commit needs an ExternalInit");
      if (!isDevice(commit.pathLeaf)) return fail("bad_request", "the new leaf is not the calling device with its registered key");
    } else if (commit.sender.kind === "member") {
      if (commit.externalInit) return fail("bad_request", "an ExternalInit comes only in an external commit");
      if (current) {
        if (!isDevice(leafOf(current, commit.sender.leafIndex))) return fail("bad_request", "the sender leaf is not the calling device");
      } else if (commit.sender.leafIndex !== 0) {
        return fail("bad_request", "the first commit comes from the group's first leaf");
      }
      if (commit.pathLeaf && !isDevice(commit.pathLeaf)) return fail("bad_request", "the committer's new leaf is not the calling device");
    }
    // Before the first commit the server has no group context to check a commit's own signature
    // against; the GroupInfo it produced is checked below with the creator device's key.
    if (current && !(await verifyCommitSignature(commit, current, ownKey))) return fail("bad_request", "the commit's signature does not verify");
    if (groupInfo.epoch !== commit.epoch + 1) return fail("bad_request", "groupInfo is not for the epoch this commit starts");
    if (!groupInfo.hasExternalPub || !groupInfo.tree) return fail("bad_request", "groupInfo needs the external_pub and ratchet_tree extensions");
    if (!isDevice(groupInfo.signer) || !(await verifyGroupInfo(groupInfo, ownKey))) {
      return fail("bad_request", "groupInfo is not signed by the calling device's key");
    }

    for (const kp of commit.adds) {
      const device = keys[kp.identity.deviceId];
      if (!this.store.members.has(kp.identity.userId) || device?.userId !== kp.identity.userId) {
        return fail("forbidden", "an Add names no device of a member");
      }
      const key = fromBase64Url(device.signatureKey ?? "");
      if (!key || !sameBytes(key, kp.identity.signatureKey) || !(await verifyKeyPackageSignatures(kp))) {
        return fail("bad_request", "an Add's key package is not signed with its device's registered key");
      }
    }
    const addedDevices = commit.adds.map((kp) => kp.identity.deviceId);
    const named = body.welcomeDeviceIds ?? [];
    if (new Set(named).size !== named.length || named.length !== addedDevices.length || !addedDevices.every((d) => named.includes(d))) {
      return fail("bad_request", "welcomeDeviceIds must list exactly the devices the commit adds");
    }
    if ((body.welcome !== undefined) !== addedDevices.length > 0) return fail("bad_request", "a welcome comes exactly with a commit that adds devices");
    if (body.epoch === 0 && !this.mayMakeFirstCommit(sender)) return fail("bad_request", "the first commit comes from the creator's device");
    if (external) {
      for (const leafIndex of commit.removes) {
        const leaf = current ? leafOf(current, leafIndex) : null;
        if (leaf?.userId !== sender.userId || leaf.deviceId !== sender.deviceId) {
          return fail("forbidden", "an external commit removes only the calling device's own old leaf");
        }
      }
    }
    return null;
  }

  /**
   * A member's device logged out (its token is dead, D1 no longer lists it): if it holds a leaf of
   * the group as of the latest GroupInfo, the `deviceLoggedOut` system message tells the members'
   * devices to commit its Remove (the server holds no key to do it). Returns that message, or null
   * when there is no such leaf (not an E2EE conversation, no commit yet, never joined, removed).
   */
  deviceLoggedOut(device: Identity, now: number): Message | null {
    const meta = this.store.meta;
    if (!meta?.e2ee || !this.store.members.has(device.userId)) return null;
    const text = this.store.mlsGroupInfo();
    if (!text && this.store.creator()?.deviceId === device.deviceId) this.store.markMlsCreatorDeviceGone();
    const current = text ? readGroupInfo(text) : null;
    if (!current || !leavesOf(current).some((leaf) => leaf.userId === device.userId && leaf.deviceId === device.deviceId)) return null;
    return this.deps.appendDeviceLoggedOut(device, now);
  }

  /**
   * Whether `sender` may make the group's first commit: the creator's device, or, once that can no
   * longer make it (it signed out, or its user left or was removed), any member's device. Two that
   * race are ordered by the epoch check like any other commits.
   */
  private mayMakeFirstCommit(sender: Identity): boolean {
    return this.creatorGone() || this.store.creator()?.deviceId === sender.deviceId;
  }

  /** Whether the creator's device can no longer make the first commit. */
  private creatorGone(): boolean {
    const creator = this.store.creator();
    return !creator || this.store.mlsCreatorDeviceGone() || !this.store.members.has(creator.userId);
  }

  /** The latest GroupInfo, for a member's new device to join by external commit. */
  groupInfo(userId: string): Result<{ epoch: number; groupInfo: string | null; creatorGone?: true }> {
    const meta = this.store.meta;
    if (!meta || !this.store.members.has(userId)) return fail("not_found", "no such conversation");
    if (!meta.e2ee) return fail("bad_request", "not an end-to-end encrypted conversation");
    const groupInfo = this.store.mlsGroupInfo();
    return { ok: true, epoch: meta.mlsEpoch, groupInfo, ...(groupInfo === null && this.creatorGone() ? { creatorGone: true as const } : {}) };
  }

  /** The Welcomes waiting for their user objects, by user. Those of users no longer members are dropped. */
  pendingByUser(): Map<string, WelcomeForDevice[]> {
    const byUser = new Map<string, WelcomeForDevice[]>();
    const rows = this.store.pendingWelcomes();
    // Every alarm of the object asks; almost always there is nothing.
    if (rows.length === 0) return byUser;
    const gone: string[] = [];
    const conversationId = this.store.requireMeta().id;
    for (const row of rows) {
      if (!this.store.members.has(row.userId)) {
        gone.push(row.id);
        continue;
      }
      const list = byUser.get(row.userId) ?? [];
      list.push({ id: row.id, conversationId, seq: row.seq, deviceId: row.deviceId, welcome: row.welcome });
      byUser.set(row.userId, list);
    }
    this.store.deleteWelcomes(gone);
    return byUser;
  }

  delivered(ids: string[]): void {
    this.store.deleteWelcomes(ids);
  }
}

/**
 * Why an application message cannot be stored in this conversation, or null: an E2EE one takes
 * a PrivateMessage of its group, of content type application, at an epoch accepted, and only
 * client-encrypted media; a plaintext one takes no ciphertext.
 */
export function invalidContent(
  meta: ConversationMeta,
  request: { body?: string | undefined; ciphertext?: string | undefined },
  media: MediaRef[],
): Failure | null {
  if (!meta.e2ee) return request.ciphertext === undefined ? null : fail("bad_request", "ciphertext is only for end-to-end encrypted conversations");
  if (request.body !== undefined) return fail("bad_request", "an end-to-end encrypted conversation takes ciphertext, never body");
  if (request.ciphertext === undefined) return fail("bad_request", "an end-to-end encrypted message needs its ciphertext");
  const header = readPrivateMessage(request.ciphertext);
  if (!header) return fail("bad_request", "ciphertext is not an MLS PrivateMessage");
  if (header.groupId !== meta.id) return fail("bad_request", "ciphertext is for another group");
  if (header.contentType !== "application") return fail("bad_request", "ciphertext is not application content");
  if (header.epoch > meta.mlsEpoch || header.epoch < meta.mlsEpoch - PAST_EPOCHS_ACCEPTED) {
    return fail("bad_request", `ciphertext epoch ${header.epoch} is not accepted at epoch ${meta.mlsEpoch}`);
  }
  if (media.some((m) => m.contentType !== "application/octet-stream")) {
    return fail("bad_request", "an end-to-end encrypted conversation takes only application/octet-stream media");
  }
  return null;
}
