// What the server needs of MLS (RFC 9420), behind our own interface: parse the structures clients
// send, read what the Delivery Service orders by (group, epoch, sender, proposals), and verify the
// signatures the Authentication Service relies on. Everything is done by ts-mls (pinned in
// package.json); the checks a server needs are deep imports there, not its documented API, so
// they stay in this one module, and test/unit/mls/ fails if an upgrade changes them. Another engine
// (OpenMLS compiled to wasm) could replace this module without touching its callers.
import { decodeMlsMessage } from "ts-mls/message.js";
import { getCiphersuiteImpl } from "ts-mls/crypto/getCiphersuiteImpl.js";
import { getCiphersuiteFromName, type CiphersuiteImpl } from "ts-mls/crypto/ciphersuite.js";
import { verifyKeyPackage, type KeyPackage } from "ts-mls/keyPackage.js";
import { verifyLeafNodeSignatureKeyPackage, type LeafNode } from "ts-mls/leafNode.js";
import { verifyFramedContentSignature } from "ts-mls/framedContent.js";
import { ratchetTreeFromExtension, verifyGroupInfoSignature, type GroupInfo } from "ts-mls/groupInfo.js";
import type { PublicMessage } from "ts-mls/publicMessage.js";
import type { RatchetTree } from "ts-mls/ratchetTree.js";
import { fromBase64Url, parseCredentialIdentity } from "../../protocol/mls";

/** The one cipher suite every client supports (API.md): suite 1. */
export const CIPHER_SUITE = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";

let impl: Promise<CiphersuiteImpl> | null = null;
/** The suite's primitives, made once per isolate (they hold no secret). */
function suite(): Promise<CiphersuiteImpl> {
  return (impl ??= getCiphersuiteImpl(getCiphersuiteFromName(CIPHER_SUITE)));
}

export type Checked<T> = ({ ok: true } & T) | { ok: false; message: string };

/** A device as a credential names it: `<userId>:<deviceId>`, with its leaf's signature key. */
export interface LeafIdentity {
  userId: string;
  deviceId: string;
  signatureKey: Uint8Array;
}

function leafIdentity(leaf: LeafNode): LeafIdentity | null {
  if (leaf.credential.credentialType !== "basic") return null;
  const who = parseCredentialIdentity(leaf.credential.identity);
  return who ? { ...who, signatureKey: leaf.signaturePublicKey } : null;
}

/** Decodes one base64url MLSMessage that must use all of its bytes. */
function decode(text: string) {
  const bytes = fromBase64Url(text);
  if (!bytes) return null;
  try {
    const decoded = decodeMlsMessage(bytes, 0);
    if (!decoded || decoded[1] !== bytes.length || decoded[0].version !== "mls10") return null;
    return decoded[0];
  } catch {
    return null;
  }
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

const utf8 = (bytes: Uint8Array) => {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return null;
  }
};

/** MLS lifetimes are seconds since the epoch; a bound beyond what a Number holds counts as "never". */
const seconds = (value: bigint) => (value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value));

// --- Key packages --------------------------------------------------------------------------------

export interface ParsedKeyPackage {
  identity: LeafIdentity;
  /** Its lifetime's end, epoch ms. */
  notAfter: number;
  readonly raw: KeyPackage;
}

/** A key package with its suite, credential and lifetime read, or why it is not one. Signatures are verifyKeyPackage's. */
export function readKeyPackage(text: string, now: number): Checked<{ keyPackage: ParsedKeyPackage }> {
  const message = decode(text);
  if (!message || message.wireformat !== "mls_key_package") return { ok: false, message: "not an MLS key package" };
  const kp = message.keyPackage;
  if (kp.cipherSuite !== CIPHER_SUITE) return { ok: false, message: `key package suite must be ${CIPHER_SUITE}` };
  const identity = leafIdentity(kp.leafNode);
  if (!identity) return { ok: false, message: "key package credential must be basic, <userId>:<deviceId>" };
  const { notBefore, notAfter } = kp.leafNode.lifetime;
  const nowSeconds = Math.floor(now / 1000);
  if (seconds(notBefore) > nowSeconds || seconds(notAfter) < nowSeconds) return { ok: false, message: "key package lifetime is not current" };
  return { ok: true, keyPackage: { identity, notAfter: Math.min(seconds(notAfter) * 1000, Number.MAX_SAFE_INTEGER), raw: kp } };
}

/** Both signatures of a key package (the package's and its leaf node's) under its own leaf key. */
export async function verifyKeyPackageSignatures(kp: ParsedKeyPackage): Promise<boolean> {
  const s = (await suite()).signature;
  return (await verifyKeyPackage(kp.raw, s)) && (await verifyLeafNodeSignatureKeyPackage(kp.raw.leafNode, s));
}

/**
 * The upload check of API.md: parses, suite 1, the caller device's credential and registered
 * signature key, lifetime current, signatures valid.
 */
export async function checkOwnKeyPackage(
  text: string,
  device: { userId: string; deviceId: string; signatureKey: Uint8Array },
  now: number,
): Promise<Checked<{ notAfter: number }>> {
  const read = readKeyPackage(text, now);
  if (!read.ok) return read;
  const { identity } = read.keyPackage;
  if (identity.userId !== device.userId || identity.deviceId !== device.deviceId) {
    return { ok: false, message: "a device uploads only key packages of its own identity" };
  }
  if (!sameBytes(identity.signatureKey, device.signatureKey)) return { ok: false, message: "key package signature key is not the device's registered key" };
  if (!(await verifyKeyPackageSignatures(read.keyPackage))) return { ok: false, message: "key package signature does not verify" };
  return { ok: true, notAfter: read.keyPackage.notAfter };
}

// --- Application messages ------------------------------------------------------------------------

/** The clear header of a PrivateMessage: enough to route it (group, epoch, content type), nothing more. */
export function readPrivateMessage(text: string): { groupId: string | null; epoch: number; contentType: string } | null {
  const message = decode(text);
  if (!message || message.wireformat !== "mls_private_message") return null;
  const pm = message.privateMessage;
  return { groupId: utf8(pm.groupId), epoch: seconds(pm.epoch), contentType: pm.contentType };
}

// --- GroupInfo -----------------------------------------------------------------------------------

export interface ParsedGroupInfo {
  groupId: string | null;
  epoch: number;
  /** The signer's leaf, from the GroupInfo's own ratchet_tree extension (null if absent or blank). */
  signer: LeafIdentity | null;
  hasExternalPub: boolean;
  tree: RatchetTree | null;
  readonly raw: GroupInfo;
}

export function readGroupInfo(text: string): ParsedGroupInfo | null {
  const message = decode(text);
  if (!message || message.wireformat !== "mls_group_info") return null;
  const gi = message.groupInfo;
  let tree: RatchetTree | null;
  try {
    tree = ratchetTreeFromExtension(gi) ?? null;
  } catch {
    return null;
  }
  const signerLeaf = tree ? leafAt(tree, gi.signer) : null;
  return {
    groupId: utf8(gi.groupContext.groupId),
    epoch: seconds(gi.groupContext.epoch),
    signer: signerLeaf ? leafIdentity(signerLeaf) : null,
    hasExternalPub: gi.extensions.some((e) => e.extensionType === "external_pub"),
    tree,
    raw: gi,
  };
}

export async function verifyGroupInfo(gi: ParsedGroupInfo, signatureKey: Uint8Array): Promise<boolean> {
  return verifyGroupInfoSignature(gi.raw, signatureKey, (await suite()).signature);
}

function leafAt(tree: RatchetTree, leafIndex: number): LeafNode | null {
  const node = tree[leafIndex * 2];
  return node?.nodeType === "leaf" ? node.leaf : null;
}

/** The device holding a leaf of a group's tree, or null for a blank or foreign leaf. */
export function leafOf(gi: ParsedGroupInfo, leafIndex: number): LeafIdentity | null {
  const leaf = gi.tree ? leafAt(gi.tree, leafIndex) : null;
  return leaf ? leafIdentity(leaf) : null;
}

/** The devices holding the leaves of a group's tree (blank and foreign leaves left out). */
export function leavesOf(gi: ParsedGroupInfo): LeafIdentity[] {
  const out: LeafIdentity[] = [];
  for (let i = 0; gi.tree && i * 2 < gi.tree.length; i++) {
    const leaf = leafOf(gi, i);
    if (leaf) out.push(leaf);
  }
  return out;
}

// --- Commits -------------------------------------------------------------------------------------

export interface ParsedCommit {
  groupId: string | null;
  epoch: number;
  sender: { kind: "member"; leafIndex: number } | { kind: "new_member_commit" } | { kind: "other" };
  /** The Adds' key packages, in order. */
  adds: ParsedKeyPackage[];
  /** Adds whose key package did not read (suite, credential, lifetime). */
  badAdds: number;
  removes: number[];
  externalInit: boolean;
  /** Proposals by reference, or of a kind the server does not accept in a commit (PSK, ReInit, ...). */
  unsupported: string[];
  /** The leaf of the commit's update path: the committer's new leaf (required for an external commit). */
  pathLeaf: LeafIdentity | null;
  readonly raw: PublicMessage;
}

/** A commit sent as a PublicMessage, with what the Delivery Service checks read out of it. */
export function readCommit(text: string, now: number): ParsedCommit | null {
  const message = decode(text);
  if (!message || message.wireformat !== "mls_public_message") return null;
  const pm = message.publicMessage;
  const content = pm.content;
  if (content.contentType !== "commit") return null;
  const sender = content.sender;
  const parsed: ParsedCommit = {
    groupId: utf8(content.groupId),
    epoch: seconds(content.epoch),
    sender:
      sender.senderType === "member"
        ? { kind: "member", leafIndex: sender.leafIndex }
        : sender.senderType === "new_member_commit"
          ? { kind: "new_member_commit" }
          : { kind: "other" },
    adds: [],
    badAdds: 0,
    removes: [],
    externalInit: false,
    unsupported: [],
    pathLeaf: content.commit.path ? leafIdentity(content.commit.path.leafNode) : null,
    raw: pm,
  };
  for (const entry of content.commit.proposals) {
    if (entry.proposalOrRefType !== "proposal") {
      parsed.unsupported.push("proposal reference");
      continue;
    }
    const p = entry.proposal;
    if (p.proposalType === "add") {
      const kp = readKeyPackageValue(p.add.keyPackage, now);
      if (kp) parsed.adds.push(kp);
      else parsed.badAdds++;
    } else if (p.proposalType === "remove") parsed.removes.push(p.remove.removed);
    else if (p.proposalType === "external_init") parsed.externalInit = true;
    else if (p.proposalType !== "update") parsed.unsupported.push(String(p.proposalType));
  }
  return parsed;
}

function readKeyPackageValue(kp: KeyPackage, now: number): ParsedKeyPackage | null {
  if (kp.cipherSuite !== CIPHER_SUITE) return null;
  const identity = leafIdentity(kp.leafNode);
  if (!identity) return null;
  const nowSeconds = Math.floor(now / 1000);
  if (seconds(kp.leafNode.lifetime.notBefore) > nowSeconds || seconds(kp.leafNode.lifetime.notAfter) < nowSeconds) return null;
  return { identity, notAfter: seconds(kp.leafNode.lifetime.notAfter) * 1000, raw: kp };
}

/**
 * The commit's signature (FramedContentTBS) under `signatureKey`, in the group context of the
 * epoch it was sent in: that of the GroupInfo the server holds for that epoch.
 */
export async function verifyCommitSignature(commit: ParsedCommit, current: ParsedGroupInfo, signatureKey: Uint8Array): Promise<boolean> {
  const { content, auth } = commit.raw;
  return verifyFramedContentSignature(signatureKey, "mls_public_message", content, auth, current.raw.groupContext, (await suite()).signature);
}

/** Whether the text is an MLS Welcome for suite 1. */
export function isWelcome(text: string): boolean {
  const message = decode(text);
  return message?.wireformat === "mls_welcome" && message.welcome.cipherSuite === CIPHER_SUITE;
}
