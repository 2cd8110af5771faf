// The bench's MLS client: the web client's engine (web/src/e2ee/engine.ts) as simulated devices,
// in a child process of its own (bench/lib/mls.ts starts it), because the engine needs Node's
// type transform and an extensionless resolver (bench/lib/extensionless.ts) that the bench's own
// process runs without. It reads its task as JSON on stdin and writes its answer as JSON on stdout.
//
//   costs: the client-side costs of MLS on this machine, no server (S8)
//   groups: E2EE groups on a server for S7, each with its members added by one commit, and a pool
//           of the sender's ciphertexts for each
import { api, type User } from "./clients.ts";

/** What the bench uses of web/src/e2ee/engine.ts (imported by path, so that tsc does not check it under Node's rules). */
interface Pending {
  epoch: number;
  commit: string;
  groupInfo: string;
  welcome?: string;
  welcomeDeviceIds?: string[];
}
interface Device {
  readonly signatureKey: string;
  generateKeyPackages(count: number): Promise<string[]>;
  createGroup(conversationId: string): Promise<void>;
  commit(conversationId: string, change?: { add?: string[]; removeDevices?: string[] }): Promise<Pending>;
  accept(pending: Pending): void;
  joinFromWelcome(text: string): Promise<string>;
  processCommit(conversationId: string, text: string): Promise<boolean>;
  encrypt(conversationId: string, plaintext: Uint8Array | string): Promise<string>;
  decrypt(conversationId: string, text: string): Promise<Uint8Array>;
}
interface Engine {
  MlsDevice: { create(userId: string, deviceId: string): Promise<Device> };
}

const enginePath = new URL("../../web/src/e2ee/engine.ts", import.meta.url).href;
const { MlsDevice } = (await import(enginePath)) as Engine;

const ms = (start: number) => performance.now() - start;

/** A message as the web client would encrypt it: a JSON payload with a ~100-character text. */
const samplePayload = (k: number) => JSON.stringify({ text: `message ${k} ${"lorem ipsum dolor sit amet ".repeat(4)}`.slice(0, 100) });

export interface CostsTask {
  sizes: number[];
  messages: number;
}

/** One group size's costs, in ms. */
export interface GroupCosts {
  devices: number;
  /** How many groups of this size were made: each cost is the median over them. */
  runs: number;
  /** Making the n - 1 other devices (an Ed25519 key pair each) and one key package each. */
  keyPackagesMs: number;
  /** The creator's one commit adding all of them (with its Welcome and GroupInfo). */
  addCommitMs: number;
  /** One joiner processing that Welcome (the ratchet tree of n leaves included). */
  welcomeMs: number;
  /** A member making an update commit, and another member processing it. */
  updateCommitMs: number;
  processCommitMs: number;
  /** Per application message: the median of `messages` of them. */
  encryptMs: number;
  decryptMs: number;
  /** What goes over the wire, in characters of base64url. */
  sizes: { addCommit: number; welcome: number; groupInfo: number; updateCommit: number; ciphertext: number; plaintextFrame: number };
}

/** Per message, the same payload as a plaintext client handles it: the send frame's JSON encoding and decoding. */
export interface PlaintextCosts {
  encodeMs: number;
  decodeMs: number;
}

/** The median of `xs` (not empty). */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** One group of `n` devices made and used once; per message, the median of `messages`. */
async function measureGroup(n: number, messages: number): Promise<GroupCosts> {
  const conversationId = `bench-${n}-${Date.now().toString(36)}`;
  const creator = await MlsDevice.create("u0", "d0");
  await creator.createGroup(conversationId);
  let t = performance.now();
  const others: Device[] = [];
  const keyPackages: string[] = [];
  for (let i = 1; i < n; i++) {
    const device = await MlsDevice.create(`u${i}`, `d${i}`);
    others.push(device);
    keyPackages.push(...(await device.generateKeyPackages(1)));
  }
  const keyPackagesMs = ms(t);
  t = performance.now();
  const add = await creator.commit(conversationId, { add: keyPackages });
  const addCommitMs = ms(t);
  creator.accept(add);
  const joiner = others[0];
  if (!joiner || !add.welcome) throw new Error("a group needs at least 2 devices");
  t = performance.now();
  await joiner.joinFromWelcome(add.welcome);
  const welcomeMs = ms(t);
  t = performance.now();
  const update = await joiner.commit(conversationId);
  const updateCommitMs = ms(t);
  joiner.accept(update);
  t = performance.now();
  await creator.processCommit(conversationId, update.commit);
  const processCommitMs = ms(t);
  const ciphertexts: string[] = [];
  const encrypts: number[] = [];
  for (let k = 0; k < messages; k++) {
    t = performance.now();
    ciphertexts.push(await creator.encrypt(conversationId, samplePayload(k)));
    encrypts.push(ms(t));
  }
  const decrypts: number[] = [];
  for (const c of ciphertexts) {
    t = performance.now();
    await joiner.decrypt(conversationId, c);
    decrypts.push(ms(t));
  }
  return {
    devices: n,
    runs: 1,
    keyPackagesMs,
    addCommitMs,
    welcomeMs,
    updateCommitMs,
    processCommitMs,
    encryptMs: median(encrypts),
    decryptMs: median(decrypts),
    sizes: {
      addCommit: add.commit.length,
      welcome: add.welcome.length,
      groupInfo: add.groupInfo.length,
      updateCommit: update.commit.length,
      ciphertext: ciphertexts[0]?.length ?? 0,
      plaintextFrame: JSON.stringify({ type: "send", clientMsgId: "m.0.0", body: samplePayload(0) }).length,
    },
  };
}

/** Groups of up to this many devices are made `REPEATS` times (each cost the median); larger ones once. */
const REPEATED_UP_TO = 100;
const REPEATS = 5;

async function costs({ sizes, messages }: CostsTask): Promise<{ groups: GroupCosts[]; plaintext: PlaintextCosts }> {
  // A first group, not reported, so that the first size measured does not pay for the JIT's warm-up.
  await measureGroup(Math.min(...sizes), messages);
  const groups: GroupCosts[] = [];
  for (const n of sizes) {
    const runs: GroupCosts[] = [];
    for (let r = 0; r < (n <= REPEATED_UP_TO ? REPEATS : 1); r++) runs.push(await measureGroup(n, messages));
    const med = (f: (g: GroupCosts) => number) => median(runs.map(f));
    groups.push({
      ...runs[0]!,
      runs: runs.length,
      keyPackagesMs: med((g) => g.keyPackagesMs),
      addCommitMs: med((g) => g.addCommitMs),
      welcomeMs: med((g) => g.welcomeMs),
      updateCommitMs: med((g) => g.updateCommitMs),
      processCommitMs: med((g) => g.processCommitMs),
      encryptMs: med((g) => g.encryptMs),
      decryptMs: med((g) => g.decryptMs),
    });
    process.stderr.write(`  S8: groups of ${n} measured (${runs.length}x)\n`);
  }
  // The plaintext client's work for the same payloads, many more of them (it is microseconds).
  const rounds = Math.max(10_000, messages * 50);
  const frames: string[] = [];
  let t = performance.now();
  for (let k = 0; k < rounds; k++) frames.push(JSON.stringify({ type: "send", clientMsgId: `m.0.${k}`, body: samplePayload(k) }));
  const encodeMs = ms(t) / rounds;
  t = performance.now();
  let length = 0;
  for (const f of frames) length += (JSON.parse(f) as { body: string }).body.length;
  const decodeMs = ms(t) / rounds;
  if (length === 0) throw new Error("nothing decoded");
  return { groups, plaintext: { encodeMs, decodeMs } };
}

export interface GroupsTask {
  base: string;
  devices: User[];
  groups: number;
  ciphertexts: number;
  title: string;
}

/** One E2EE group for S7: its conversation, at epoch 1 with every device added, and the sender's (device 0's) ciphertexts. */
export interface E2eeGroup {
  conversationId: string;
  ciphertexts: string[];
  encryptMs: number;
}

async function groups({ base, devices, groups: count, ciphertexts, title }: GroupsTask): Promise<E2eeGroup[]> {
  const [creator, ...others] = devices;
  if (!creator) throw new Error("groups: no devices");
  const engines = await Promise.all(devices.map((d) => MlsDevice.create(d.userId, d.deviceId)));
  // Each device registers its key once, with a key package for every group it is to join.
  for (const [i, d] of devices.entries()) {
    const engine = engines[i]!;
    await api(base, "PUT", "/devices/me/mls", { token: d.token, body: { signatureKey: engine.signatureKey } });
    if (i > 0) await api(base, "POST", "/mls/key-packages", { token: d.token, body: { keyPackages: await engine.generateKeyPackages(count) } });
  }
  const sender = engines[0]!;
  const out: E2eeGroup[] = [];
  for (let g = 0; g < count; g++) {
    const { conversation } = await api<{ conversation: { id: string } }>(base, "POST", "/group/create", {
      token: creator.token,
      body: { title: `${title} ${g}`, memberIds: others.map((u) => u.userId), e2ee: true },
    });
    await sender.createGroup(conversation.id);
    const { keyPackages } = await api<{ keyPackages: { keyPackage: string }[] }>(base, "POST", "/mls/key-packages/claim", {
      token: creator.token,
      body: { userIds: others.map((u) => u.userId) },
    });
    if (keyPackages.length !== others.length) throw new Error(`groups: ${keyPackages.length} key packages claimed for ${others.length} devices`);
    const pending = await sender.commit(conversation.id, { add: keyPackages.map((k) => k.keyPackage) });
    const { epoch, commit, groupInfo, welcome, welcomeDeviceIds } = pending;
    await api(base, "POST", `/conversations/${conversation.id}/mls/commits`, {
      token: creator.token,
      body: { clientMsgId: `add-${g}`, epoch, commit, groupInfo, welcome, welcomeDeviceIds },
    });
    sender.accept(pending);
    // The plaintext room's bodies are "m<device>.<n>@<send time>": the same length here.
    const pool: string[] = [];
    const t = performance.now();
    for (let k = 0; k < ciphertexts; k++) pool.push(await sender.encrypt(conversation.id, `m0.${k}@${(Date.now() + 0.123).toFixed(3)}`));
    out.push({ conversationId: conversation.id, ciphertexts: pool, encryptMs: ms(t) / ciphertexts });
  }
  return out;
}

const chunks: Buffer[] = [];
for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
const task = JSON.parse(Buffer.concat(chunks).toString()) as { mode: "costs"; costs: CostsTask } | { mode: "groups"; groups: GroupsTask };
const answer = task.mode === "costs" ? await costs(task.costs) : await groups(task.groups);
process.stdout.write(JSON.stringify(answer));
