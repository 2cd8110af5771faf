// Simulated E2EE devices for the workerd tests: the client engine (web/src/e2ee/engine.ts) set up
// and driven as a client drives it, through the real Worker.
import { expect } from "vitest";
import type { Conversation, Message } from "../protocol";
import { MlsDevice, type PendingCommit } from "../web/src/e2ee/engine";
import { call, json, login, register, unique, waitFor, type Session } from "./helpers";

/** One simulated device: a session, its MLS engine, and how far it has read each conversation. */
export interface Device {
  session: Session;
  mls: MlsDevice;
  readThrough: Map<string, number>;
}

/**
 * A device set up as a client does. It checks every leaf it meets against the server's device
 * directory, as a client must; `checked: false` makes a client that does not (a hostile one).
 */
export async function setUp(session: Session, oneTime = 12, checked = true): Promise<Device> {
  const directory = async (userId: string) =>
    (await json<{ devices: { id: string; signatureKey: string | null }[] }>(`/users/${userId}/devices`, { token: session.token })).devices;
  const mls = await MlsDevice.create(session.user.id, session.device.id, checked ? directory : null);
  await json("/devices/me/mls", { method: "PUT", token: session.token, body: { signatureKey: mls.signatureKey } });
  const keyPackages = await mls.generateKeyPackages(oneTime);
  const lastResort = await mls.generateLastResort();
  await json("/mls/key-packages", { token: session.token, body: { keyPackages, lastResort } }, 201);
  return { session, mls, readThrough: new Map() };
}

export const newDevice = async (name = unique("e"), checked = true) => setUp(await register(name), 12, checked);
export const anotherDevice = async (of: Device, checked = true) => setUp(await login(of.session.user.username, "second"), 12, checked);

export async function createGroup(admin: Device, others: Device[]): Promise<Conversation> {
  const body = { title: "secret", memberIds: [...new Set(others.map((o) => o.session.user.id))], e2ee: true };
  const { conversation } = await json<{ conversation: Conversation }>("/group/create", { token: admin.session.token, body }, 201);
  await admin.mls.createGroup(conversation.id);
  return conversation;
}

export async function claim(by: Device, userIds: string[]) {
  return json<{ keyPackages: { userId: string; deviceId: string; keyPackage: string; lastResort: boolean }[] }>("/mls/key-packages/claim", {
    token: by.session.token,
    body: { userIds },
  });
}

export function commitBody(pending: PendingCommit, clientMsgId = unique("c")) {
  const { epoch, commit, groupInfo, welcome, welcomeDeviceIds } = pending;
  return { clientMsgId, epoch, commit, groupInfo, ...(welcome ? { welcome, welcomeDeviceIds } : {}) };
}

export async function postCommit(by: Device, conversationId: string, body: unknown): Promise<Response> {
  return call(`/conversations/${conversationId}/mls/commits`, { token: by.session.token, body });
}

/** Commits and, once the server stored it, moves the device to the new epoch. */
export async function commit(by: Device, conversationId: string, pending: PendingCommit): Promise<Message> {
  const res = await postCommit(by, conversationId, commitBody(pending));
  if (res.status !== 201) throw new Error(`commit: ${res.status} ${await res.text()}`);
  by.mls.accept(pending);
  const { message } = (await res.json()) as { message: Message };
  by.readThrough.set(conversationId, message.seq);
  return message;
}

/** Adds every device of `users` that has a key package. */
export async function addMembers(admin: Device, conversationId: string, users: Device[]): Promise<Message> {
  const { keyPackages } = await claim(admin, [...new Set(users.map((u) => u.session.user.id))]);
  return commit(admin, conversationId, await admin.mls.commit(conversationId, { add: keyPackages.map((k) => k.keyPackage) }));
}

/** Joins from the Welcome the server kept for this device, and acknowledges it. */
export async function acceptWelcome(device: Device, conversationId: string): Promise<void> {
  // Handed to the device's user object once the commit is stored, a moment after the commit's answer.
  const welcome = await waitFor(async () => {
    const { welcomes } = await json<{ welcomes: { id: string; conversationId: string; seq: number; welcome: string }[] }>("/mls/welcomes", {
      token: device.session.token,
    });
    return welcomes.find((w) => w.conversationId === conversationId);
  }, `a welcome for ${device.session.device.id}`);
  expect(await device.mls.joinFromWelcome(welcome.welcome)).toBe(conversationId);
  device.readThrough.set(conversationId, welcome.seq);
  await json(`/mls/welcomes/${welcome.id}`, { method: "DELETE", token: device.session.token }, 204);
}

export async function sendText(device: Device, conversationId: string, text: string, extra: Record<string, unknown> = {}) {
  const ciphertext = await device.mls.encrypt(conversationId, text);
  const body = { conversationId, clientMsgId: unique("m"), ciphertext, ...extra };
  const { message } = await json<{ message: Message }>("/send", { token: device.session.token, body }, 201);
  device.readThrough.set(conversationId, message.seq);
  return message;
}

/** Reads what the device has not seen: applies commits, decrypts messages; returns the texts. */
export async function catchUp(device: Device, conversationId: string): Promise<string[]> {
  const after = device.readThrough.get(conversationId) ?? 0;
  const { messages } = await json<{ messages: Message[] }>(`/conversations/${conversationId}/messages?after=${after}`, {
    token: device.session.token,
  });
  const texts: string[] = [];
  for (const m of messages) {
    if (m.kind === "mls.commit") await device.mls.processCommit(conversationId, m.commit!);
    else if (m.kind === "encrypted" && m.senderDeviceId !== device.session.device.id) {
      texts.push(new TextDecoder().decode(await device.mls.decrypt(conversationId, m.ciphertext!)));
    }
    device.readThrough.set(conversationId, m.seq);
  }
  return texts;
}
