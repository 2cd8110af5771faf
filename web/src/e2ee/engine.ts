// The client side of end-to-end encryption: one device's MLS engine (RFC 9420, suite 1), shared
// by the web client (loaded by dynamic import, only for E2EE conversations) and the tests, which
// run it as several simulated devices. ts-mls does every cryptographic operation; this module
// only decides which to call and keeps deep imports of the library in one place
// (test/unit/mls/ holds them to their behaviour). The server never sees anything held here.
import {
  createApplicationMessage,
  createCommit,
  createGroup,
  createGroupInfoWithExternalPubAndRatchetTree,
  decodeGroupState,
  decodeMlsMessage,
  encodeGroupState,
  defaultCapabilities,
  emptyPskIndex,
  encodeMlsMessage,
  generateKeyPackageWithKey,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  joinGroup,
  joinGroupExternal,
  processMessage,
  acceptAll,
  type CiphersuiteImpl,
  type ClientConfig,
  type ClientState,
  type Credential,
  type KeyPackage,
  type MLSMessage,
  type PrivateKeyPackage,
  type Proposal,
} from "ts-mls";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { decryptSenderData } from "ts-mls/privateMessage.js";
import { getCredentialFromLeafIndex } from "ts-mls/ratchetTree.js";
import { toLeafIndex } from "ts-mls/treemath.js";
import { defaultClientConfig } from "ts-mls/clientConfig.js";
import {
  credentialIdentity,
  fromBase64Url,
  groupIdOf,
  parseCredentialIdentity,
  toBase64Url,
} from "../../../protocol/mls";

export const CIPHER_SUITE = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";

/** How long a key package is valid (its MLS lifetime); the server drops expired ones. */
export const KEY_PACKAGE_LIFETIME_S = 90 * 24 * 3600;

let suite: Promise<CiphersuiteImpl> | null = null;
export function cipherSuite(): Promise<CiphersuiteImpl> {
  return (suite ??= getCiphersuiteImpl(getCiphersuiteFromName(CIPHER_SUITE)));
}

/** A device's long-term MLS identity: its Ed25519 signature key pair, registered once with the server. */
export interface DeviceIdentity {
  userId: string;
  deviceId: string;
  signaturePublicKey: Uint8Array;
  signaturePrivateKey: Uint8Array;
}

/** A commit made locally and not yet accepted by the server: the group stays at the old state until it is. */
export interface PendingCommit {
  conversationId: string;
  epoch: number;
  commit: string;
  groupInfo: string;
  welcome?: string;
  welcomeDeviceIds?: string[];
  readonly next: ClientState;
}

export class MlsError extends Error {}

/**
 * Everything a device holds, as JSON-safe text (base64url), for its store (IndexedDB in the web
 * client): its identity, each group's state, and the private keys of the key packages it handed
 * out. Secret: whoever reads it reads the device's conversations.
 */
export interface DeviceSnapshot {
  userId: string;
  deviceId: string;
  signaturePublicKey: string;
  signaturePrivateKey: string;
  groups: Record<string, string>;
  keyPackages: { keyPackage: string; initPrivateKey: string; hpkePrivateKey: string; signaturePrivateKey: string }[];
  lastResort: { keyPackage: string; initPrivateKey: string; hpkePrivateKey: string; signaturePrivateKey: string } | null;
  /** A Welcome used the last-resort package since it was made (absent in older snapshots: no). */
  lastResortUsed?: boolean;
}

/**
 * Where a device learns which signature keys a user's devices registered (`GET /users/:id/devices`).
 * With one, the engine accepts a leaf only if its credential `<userId>:<deviceId>` names a device
 * of that user holding that very key; without one it accepts any credential (tests of the engine
 * alone), so a client must pass one.
 */
export type DeviceDirectory = (userId: string) => Promise<{ id: string; signatureKey: string | null }[]>;

function decodeText(text: string): MLSMessage {
  const bytes = fromBase64Url(text);
  const decoded = bytes ? decodeMlsMessage(bytes, 0) : undefined;
  if (!decoded) throw new MlsError("not an MLS message");
  return decoded[0];
}

const encode = (message: MLSMessage) => toBase64Url(encodeMlsMessage(message));

/** The (userId, deviceId) of a group's leaves, by leaf index (blank leaves left out). */
export function membersOf(state: ClientState): { leafIndex: number; userId: string; deviceId: string; signatureKey: Uint8Array }[] {
  const out: { leafIndex: number; userId: string; deviceId: string; signatureKey: Uint8Array }[] = [];
  state.ratchetTree.forEach((node, i) => {
    if (i % 2 !== 0 || node?.nodeType !== "leaf" || node.leaf.credential.credentialType !== "basic") return;
    const who = parseCredentialIdentity(node.leaf.credential.identity);
    if (who) out.push({ leafIndex: i / 2, ...who, signatureKey: node.leaf.signaturePublicKey });
  });
  return out;
}

export class MlsDevice {
  /** The group state of each conversation this device is in. */
  readonly groups = new Map<string, ClientState>();
  /** One-time key packages handed to the server, by their reference, until a Welcome uses one. */
  private readonly keyPackages = new Map<string, { publicPackage: KeyPackage; privatePackage: PrivateKeyPackage }>();
  private lastResortPackage: { publicPackage: KeyPackage; privatePackage: PrivateKeyPackage } | null = null;
  /**
   * A Welcome used the last-resort package: every group that used it shares its init key, so the
   * client replaces it (RFC 9420 §16.8 asks for replacing a last resort as soon as possible).
   */
  lastResortUsed = false;
  /** Every group's config: ts-mls asks its authentication service about each leaf it meets. */
  private readonly config: ClientConfig;
  /** Each user's devices as last read from the directory (read again when a leaf is not there). */
  private readonly known = new Map<string, { id: string; signatureKey: string | null }[]>();

  private constructor(
    readonly identity: DeviceIdentity,
    private readonly cs: CiphersuiteImpl,
    private readonly directory: DeviceDirectory | null,
  ) {
    this.config = { ...defaultClientConfig, authService: { validateCredential: (c, key) => this.validCredential(c, key) } };
  }

  static async create(userId: string, deviceId: string, directory: DeviceDirectory | null = null): Promise<MlsDevice> {
    const cs = await cipherSuite();
    const { signKey, publicKey } = await cs.signature.keygen();
    return new MlsDevice({ userId, deviceId, signaturePublicKey: publicKey, signaturePrivateKey: signKey }, cs, directory);
  }

  /** Whether a leaf's credential names a device of its user that registered this signature key. */
  private async validCredential(credential: Credential, signatureKey: Uint8Array): Promise<boolean> {
    if (!this.directory) return true;
    const who = credential.credentialType === "basic" ? parseCredentialIdentity(credential.identity) : null;
    if (!who) return false;
    const key = toBase64Url(signatureKey);
    const holds = (list: { id: string; signatureKey: string | null }[] | undefined) =>
      list?.some((d) => d.id === who.deviceId && d.signatureKey === key) ?? false;
    if (holds(this.known.get(who.userId))) return true;
    const fresh = await this.directory(who.userId);
    this.known.set(who.userId, fresh);
    return holds(fresh);
  }

  /** This device's state, to store (see DeviceSnapshot). */
  snapshot(): DeviceSnapshot {
    const pair = (p: { publicPackage: KeyPackage; privatePackage: PrivateKeyPackage }) => ({
      keyPackage: encode({ version: "mls10", wireformat: "mls_key_package", keyPackage: p.publicPackage }),
      initPrivateKey: toBase64Url(p.privatePackage.initPrivateKey),
      hpkePrivateKey: toBase64Url(p.privatePackage.hpkePrivateKey),
      signaturePrivateKey: toBase64Url(p.privatePackage.signaturePrivateKey),
    });
    return {
      userId: this.identity.userId,
      deviceId: this.identity.deviceId,
      signaturePublicKey: toBase64Url(this.identity.signaturePublicKey),
      signaturePrivateKey: toBase64Url(this.identity.signaturePrivateKey),
      groups: Object.fromEntries([...this.groups].map(([id, state]) => [id, toBase64Url(encodeGroupState(state))])),
      keyPackages: [...this.keyPackages.values()].map(pair),
      lastResort: this.lastResortPackage ? pair(this.lastResortPackage) : null,
      lastResortUsed: this.lastResortUsed,
    };
  }

  /** A device as a snapshot left it. */
  static async restore(snapshot: DeviceSnapshot, directory: DeviceDirectory | null = null): Promise<MlsDevice> {
    const bytes = (text: string) => {
      const b = fromBase64Url(text);
      if (!b) throw new MlsError("corrupt device snapshot");
      return b;
    };
    const cs = await cipherSuite();
    const device = new MlsDevice(
      {
        userId: snapshot.userId,
        deviceId: snapshot.deviceId,
        signaturePublicKey: bytes(snapshot.signaturePublicKey),
        signaturePrivateKey: bytes(snapshot.signaturePrivateKey),
      },
      cs,
      directory,
    );
    for (const [id, text] of Object.entries(snapshot.groups)) {
      const decoded = decodeGroupState(bytes(text), 0);
      if (!decoded) throw new MlsError(`corrupt group state of ${id}`);
      device.groups.set(id, { ...decoded[0], clientConfig: device.config });
    }
    const pair = (p: DeviceSnapshot["keyPackages"][number]) => {
      const message = decodeText(p.keyPackage);
      if (message.wireformat !== "mls_key_package") throw new MlsError("corrupt key package");
      return {
        publicPackage: message.keyPackage,
        privatePackage: { initPrivateKey: bytes(p.initPrivateKey), hpkePrivateKey: bytes(p.hpkePrivateKey), signaturePrivateKey: bytes(p.signaturePrivateKey) },
      };
    };
    for (const p of snapshot.keyPackages) {
      const restored = pair(p);
      device.keyPackages.set(toBase64Url(await makeKeyPackageRef(restored.publicPackage, cs.hash)), restored);
    }
    device.lastResortPackage = snapshot.lastResort ? pair(snapshot.lastResort) : null;
    device.lastResortUsed = snapshot.lastResortUsed === true;
    return device;
  }

  /** The body of `PUT /devices/me/mls`. */
  get signatureKey(): string {
    return toBase64Url(this.identity.signaturePublicKey);
  }

  private async newKeyPackage(now: number) {
    const notBefore = BigInt(Math.floor(now / 1000) - 60);
    const pair = await generateKeyPackageWithKey(
      { credentialType: "basic", identity: credentialIdentity(this.identity.userId, this.identity.deviceId) },
      defaultCapabilities(),
      { notBefore, notAfter: notBefore + BigInt(KEY_PACKAGE_LIFETIME_S) },
      [],
      { signKey: this.identity.signaturePrivateKey, publicKey: this.identity.signaturePublicKey },
      this.cs,
    );
    return pair;
  }

  /** `count` new one-time key packages, encoded for `POST /mls/key-packages`; their private keys stay here. */
  async generateKeyPackages(count: number, now = Date.now()): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < count; i++) {
      const pair = await this.newKeyPackage(now);
      this.keyPackages.set(toBase64Url(await makeKeyPackageRef(pair.publicPackage, this.cs.hash)), pair);
      out.push(encode({ version: "mls10", wireformat: "mls_key_package", keyPackage: pair.publicPackage }));
    }
    return out;
  }

  /** A last-resort key package (reused until replaced; a Welcome for the one it replaces no longer opens). */
  async generateLastResort(now = Date.now()): Promise<string> {
    this.lastResortPackage = await this.newKeyPackage(now);
    this.lastResortUsed = false;
    return encode({ version: "mls10", wireformat: "mls_key_package", keyPackage: this.lastResortPackage.publicPackage });
  }

  epoch(conversationId: string): number | null {
    const state = this.groups.get(conversationId);
    return state ? Number(state.groupContext.epoch) : null;
  }

  private group(conversationId: string): ClientState {
    const state = this.groups.get(conversationId);
    if (!state) throw new MlsError(`not in the group of ${conversationId}`);
    return state;
  }

  /** Creates the conversation's group at epoch 0, with this device alone in it. */
  async createGroup(conversationId: string): Promise<void> {
    const pair = await this.newKeyPackage(Date.now());
    this.groups.set(conversationId, await createGroup(groupIdOf(conversationId), pair.publicPackage, pair.privatePackage, [], this.cs, this.config));
  }

  /**
   * A commit adding the devices of `keyPackages` (as claimed from the server) and removing the
   * leaves of `removeDevices`, sent as a PublicMessage so that the server can check it. Nothing
   * changes here until `accept` (after the server stored it).
   */
  async commit(conversationId: string, change: { add?: string[]; removeDevices?: string[] } = {}): Promise<PendingCommit> {
    const state = this.group(conversationId);
    const proposals: Proposal[] = [];
    const welcomeDeviceIds: string[] = [];
    for (const text of change.add ?? []) {
      const message = decodeText(text);
      if (message.wireformat !== "mls_key_package") throw new MlsError("not a key package");
      const who = message.keyPackage.leafNode.credential.credentialType === "basic" ? parseCredentialIdentity(message.keyPackage.leafNode.credential.identity) : null;
      if (!who) throw new MlsError("key package without a device identity");
      proposals.push({ proposalType: "add", add: { keyPackage: message.keyPackage } });
      welcomeDeviceIds.push(who.deviceId);
    }
    const removing = new Set(change.removeDevices ?? []);
    for (const member of membersOf(state)) {
      if (removing.has(member.deviceId)) proposals.push({ proposalType: "remove", remove: { removed: member.leafIndex } });
    }
    const result = await createCommit(
      { state, cipherSuite: this.cs },
      { extraProposals: proposals, wireAsPublicMessage: true, ratchetTreeExtension: true, authenticatedData: await forkTag(state) },
    );
    const groupInfo = await createGroupInfoWithExternalPubAndRatchetTree(result.newState, [], this.cs);
    const pending: PendingCommit = {
      conversationId,
      epoch: Number(state.groupContext.epoch),
      commit: encode(result.commit),
      groupInfo: encode({ version: "mls10", wireformat: "mls_group_info", groupInfo }),
      next: result.newState,
    };
    if (result.welcome) {
      pending.welcome = encode({ version: "mls10", wireformat: "mls_welcome", welcome: result.welcome });
      pending.welcomeDeviceIds = welcomeDeviceIds;
    }
    return pending;
  }

  /** The server stored this device's commit: the group moves to its epoch. */
  accept(pending: PendingCommit): void {
    this.groups.set(pending.conversationId, pending.next);
  }

  /**
   * Joins a member's conversation by an external commit from the GroupInfo the server holds.
   * `resync`: this device had a leaf there (same signature key) and lost its state; the commit
   * replaces it.
   */
  async joinExternal(conversationId: string, groupInfoText: string, resync = false): Promise<PendingCommit> {
    const message = decodeText(groupInfoText);
    if (message.wireformat !== "mls_group_info") throw new MlsError("not a GroupInfo");
    const pair = await this.newKeyPackage(Date.now());
    const { publicMessage, newState } = await joinGroupExternal(message.groupInfo, pair.publicPackage, pair.privatePackage, resync, this.cs, undefined, this.config);
    const groupInfo = await createGroupInfoWithExternalPubAndRatchetTree(newState, [], this.cs);
    return {
      conversationId,
      epoch: Number(message.groupInfo.groupContext.epoch),
      commit: encode({ version: "mls10", wireformat: "mls_public_message", publicMessage }),
      groupInfo: encode({ version: "mls10", wireformat: "mls_group_info", groupInfo }),
      next: newState,
    };
  }

  /** Joins from a Welcome; returns the conversation it is for. */
  async joinFromWelcome(text: string): Promise<string> {
    const message = decodeText(text);
    if (message.wireformat !== "mls_welcome") throw new MlsError("not a Welcome");
    for (const secret of message.welcome.secrets) {
      const ref = toBase64Url(secret.newMember);
      const pair = this.keyPackages.get(ref) ?? (await this.isLastResort(secret.newMember));
      if (!pair) continue;
      const state = await joinGroup(message.welcome, pair.publicPackage, pair.privatePackage, emptyPskIndex, this.cs, undefined, undefined, this.config);
      if (pair === this.lastResortPackage) this.lastResortUsed = true;
      this.keyPackages.delete(ref);
      const conversationId = new TextDecoder().decode(state.groupContext.groupId);
      this.groups.set(conversationId, state);
      return conversationId;
    }
    throw new MlsError("this Welcome is for none of this device's key packages");
  }

  private async isLastResort(ref: Uint8Array) {
    if (!this.lastResortPackage) return undefined;
    const own = await makeKeyPackageRef(this.lastResortPackage.publicPackage, this.cs.hash);
    return own.length === ref.length && own.every((b, i) => b === ref[i]) ? this.lastResortPackage : undefined;
  }

  /**
   * Applies a commit the server ordered (an `mls.commit` message). One of an epoch already passed
   * (this device's own, or one it joined after) is ignored; returns whether the group moved.
   */
  async processCommit(conversationId: string, text: string): Promise<boolean> {
    const state = this.group(conversationId);
    const message = decodeText(text);
    if (message.wireformat !== "mls_public_message") throw new MlsError("a commit is a PublicMessage");
    if (message.publicMessage.content.epoch < state.groupContext.epoch) return false;
    // A member's commit carries a digest of its epoch authenticator: one that differs from ours
    // means the sender's group state and ours have forked (two writers of one device's state, a
    // commit applied that the server never accepted). Say so rather than diverge.
    const tag = message.publicMessage.content.authenticatedData;
    if (tag.length > 0 && message.publicMessage.content.epoch === state.groupContext.epoch) {
      const ours = await forkTag(state);
      if (tag.length !== ours.length || !tag.every((b, i) => b === ours[i])) throw new MlsError(`group state forked at epoch ${state.groupContext.epoch}`);
    }
    const result = await processMessage(message, state, emptyPskIndex, acceptAll, this.cs);
    this.groups.set(conversationId, result.newState);
    return true;
  }

  /** Whether this device is still a member of the group (a Remove of it ends that). */
  isActive(conversationId: string): boolean {
    const state = this.groups.get(conversationId);
    return state !== undefined && state.groupActiveState.kind === "active";
  }

  /** A PrivateMessage of application content for the conversation (the `ciphertext` of a send). */
  async encrypt(conversationId: string, plaintext: Uint8Array | string): Promise<string> {
    const bytes = typeof plaintext === "string" ? new TextEncoder().encode(plaintext) : plaintext;
    const result = await createApplicationMessage(this.group(conversationId), bytes, this.cs);
    this.groups.set(conversationId, result.newState);
    return encode({ version: "mls10", wireformat: "mls_private_message", privateMessage: result.privateMessage });
  }

  /** The plaintext of an application message; throws MlsError when this device cannot decrypt it. */
  async decrypt(conversationId: string, text: string): Promise<Uint8Array> {
    const state = this.group(conversationId);
    const message = decodeText(text);
    if (message.wireformat !== "mls_private_message") throw new MlsError("not a PrivateMessage");
    let result;
    try {
      result = await processMessage(message, state, emptyPskIndex, acceptAll, this.cs);
    } catch (err) {
      throw new MlsError(`cannot decrypt: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (result.kind !== "applicationMessage") throw new MlsError("not an application message");
    this.groups.set(conversationId, result.newState);
    return result.message;
  }

  /**
   * The plaintext of an application message with the device that sent it, as MLS authenticates it:
   * the sender's leaf comes from the message's sender data, and `decrypt` then verifies the content's
   * signature with that very leaf's key (a member forging another's leaf index fails there).
   */
  async decryptFrom(conversationId: string, text: string): Promise<{ plaintext: Uint8Array; userId: string; deviceId: string }> {
    const state = this.group(conversationId);
    const message = decodeText(text);
    if (message.wireformat !== "mls_private_message") throw new MlsError("not a PrivateMessage");
    const pm = message.privateMessage;
    // A message of an earlier epoch (kept for late messages) names a leaf of that epoch's tree.
    const epoch = pm.epoch < state.groupContext.epoch ? state.historicalReceiverData.get(pm.epoch) : { senderDataSecret: state.keySchedule.senderDataSecret, ratchetTree: state.ratchetTree };
    if (!epoch) throw new MlsError("cannot decrypt: epoch too old");
    const senderData = await decryptSenderData(pm, epoch.senderDataSecret, this.cs).catch(() => undefined);
    if (!senderData) throw new MlsError("cannot decrypt: sender data");
    let who: { userId: string; deviceId: string } | null = null;
    try {
      const credential = getCredentialFromLeafIndex(epoch.ratchetTree, toLeafIndex(senderData.leafIndex));
      who = credential.credentialType === "basic" ? parseCredentialIdentity(credential.identity) : null;
    } catch {
      who = null;
    }
    if (!who) throw new MlsError("cannot decrypt: unknown sender");
    const plaintext = await this.decrypt(conversationId, text);
    return { plaintext, ...who };
  }

  members(conversationId: string) {
    return membersOf(this.group(conversationId));
  }

  /**
   * The group's leaves whose device is gone: no longer listed by the directory with that key (it
   * logged out), or, given the conversation's `memberIds`, of a user no longer a member. Reads the
   * directory afresh, once per user of the group. This device's own leaf is never stale here.
   */
  async staleLeaves(conversationId: string, memberIds?: readonly string[]): Promise<{ leafIndex: number; userId: string; deviceId: string }[]> {
    if (!this.directory) throw new MlsError("finding gone devices needs a device directory");
    const leaves = membersOf(this.group(conversationId)).filter((m) => m.deviceId !== this.identity.deviceId);
    const members = memberIds ? new Set(memberIds) : null;
    const listed = new Map<string, { id: string; signatureKey: string | null }[]>();
    for (const userId of new Set(leaves.map((m) => m.userId))) {
      if (members && !members.has(userId)) continue;
      const devices = await this.directory(userId);
      this.known.set(userId, devices);
      listed.set(userId, devices);
    }
    return leaves
      .filter((m) => {
        if (members && !members.has(m.userId)) return true;
        const key = toBase64Url(m.signatureKey);
        return !(listed.get(m.userId) ?? []).some((d) => d.id === m.deviceId && d.signatureKey === key);
      })
      .map(({ leafIndex, userId, deviceId }) => ({ leafIndex, userId, deviceId }));
  }

  /**
   * A commit removing every stale leaf (see staleLeaves), or null when there is none. Post it like
   * any commit; on a 409 process what was missed and call this again: another member may have
   * removed them already, and then it returns null.
   */
  async removeStale(conversationId: string, memberIds?: readonly string[]): Promise<PendingCommit | null> {
    const stale = await this.staleLeaves(conversationId, memberIds);
    if (stale.length === 0) return null;
    return this.commit(conversationId, { removeDevices: [...new Set(stale.map((s) => s.deviceId))] });
  }
}

/**
 * What a commit carries in its (public) authenticated data: the first 16 bytes of the SHA-256 of
 * the epoch authenticator, so members can compare group states without the server learning the
 * authenticator itself.
 */
async function forkTag(state: ClientState): Promise<Uint8Array> {
  const digest = await crypto.subtle.digest("SHA-256", new Uint8Array(state.keySchedule.epochAuthenticator));
  return new Uint8Array(digest).slice(0, 16);
}

// --- Files: encrypted on the device before upload ------------------------------------------------

/** What travels inside the MLS message for an attached file: its id, key, nonce and hash. */
export interface FileKey {
  mediaId?: string;
  key: string;
  nonce: string;
  sha256: string;
}

/** Encrypts a file with a fresh AES-256-GCM key (WebCrypto); upload the result as application/octet-stream. */
export async function encryptFile(plaintext: Uint8Array<ArrayBuffer>): Promise<{ blob: Uint8Array<ArrayBuffer>; fileKey: FileKey }> {
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt"]);
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const blob = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce }, key, plaintext));
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", blob));
  return { blob, fileKey: { key: toBase64Url(raw), nonce: toBase64Url(nonce), sha256: toBase64Url(hash) } };
}

export async function decryptFile(blob: Uint8Array<ArrayBuffer>, fileKey: FileKey): Promise<Uint8Array> {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", blob));
  if (toBase64Url(hash) !== fileKey.sha256) throw new MlsError("file hash does not match");
  const keyBytes = fromBase64Url(fileKey.key);
  const nonce = fromBase64Url(fileKey.nonce);
  if (!keyBytes || !nonce) throw new MlsError("bad file key");
  const key = await crypto.subtle.importKey("raw", keyBytes, "AES-GCM", false, ["decrypt"]);
  return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce }, key, blob));
}

// --- Safety numbers ------------------------------------------------------------------------------

// In a module of their own, so that the client loads them without ts-mls.
export { fingerprintHalf, safetyNumber } from "./safetyNumber";
