// Attachments of E2EE conversations: sealed on the device before upload, opened after download.
// The cryptography is the engine's (WebCrypto AES-256-GCM), loaded by dynamic import like the
// rest of it, so a client without E2EE conversations never downloads it.
import type { FileSeal } from "./content";

const engine = () => import("./engine");

/** Encrypts a file with a fresh key; upload `blob` as application/octet-stream, send `seal` inside MLS. */
export async function sealFile(bytes: Uint8Array<ArrayBuffer>): Promise<{ blob: Uint8Array<ArrayBuffer>; seal: FileSeal }> {
  const { encryptFile } = await engine();
  const { blob, fileKey } = await encryptFile(bytes);
  return { blob, seal: { key: fileKey.key, nonce: fileKey.nonce, sha256: fileKey.sha256 } };
}

/** The plaintext of a downloaded blob; throws if its hash or its tag does not match. */
export async function openFile(blob: Uint8Array<ArrayBuffer>, seal: FileSeal): Promise<Uint8Array<ArrayBuffer>> {
  const { decryptFile } = await engine();
  return new Uint8Array(await decryptFile(blob, seal));
}
