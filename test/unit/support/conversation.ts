// A conversation's rules as its object hosts them, in memory: the store on `memorySql()`, a token
// bucket limiter, in-memory sockets, and recording stand-ins for what the object does later
// (defer, wakeAt, notifyReceipt).
import { expect } from "vitest";
import { Conversation, type SendRequest } from "../../../durable-objects/conversation/conversation";
import { ConversationStore } from "../../../durable-objects/conversation/conversationStore";
import type { Identity } from "../../../kernel/identity";
import { TokenBuckets } from "../../../durable-objects/lib/rateLimit";
import type { ConversationType, Message, Receipt } from "../../../protocol";
import type { Failure, Result } from "../../../kernel/result";
import { Clock } from "./clock";
import { SocketRoom, type MemorySocket } from "./sockets";
import { memorySql } from "./sql";

export const identity = (userId: string): Identity => ({ userId, deviceId: `${userId}-device` });

export interface HarnessOptions {
  /** The limiter's rate; generous by default so only the rate limit tests meet it. */
  perSecond?: number;
  burst?: number;
}

export class ConversationHarness {
  readonly sql = memorySql();
  readonly clock = new Clock();
  readonly room = new SocketRoom();
  /** How many times the rules asked for the deferred pass. */
  deferred = 0;
  readonly wakes: number[] = [];
  readonly notified: { userIds: string[]; receipt: Receipt }[] = [];
  store: ConversationStore;
  conversation: Conversation;
  private readonly limiter: TokenBuckets;

  constructor(options: HarnessOptions = {}) {
    this.limiter = new TokenBuckets(options.perSecond ?? 1000, options.burst ?? 1000);
    this.store = new ConversationStore(this.sql);
    this.conversation = this.open();
  }

  /** A new wake-up over the same storage: the store reloads from SQLite, memory starts empty. */
  reopen(): void {
    this.store = new ConversationStore(this.sql);
    this.conversation = this.open();
  }

  private open(): Conversation {
    return new Conversation(this.store, {
      limiter: this.limiter,
      sockets: this.room,
      defer: () => this.deferred++,
      wakeAt: (at) => this.wakes.push(at),
      notifyReceipt: (userIds, receipt) => this.notified.push({ userIds, receipt }),
    });
  }

  create(type: ConversationType, creator: string, memberIds: string[], id = "c1") {
    return this.conversation.create({
      id,
      type,
      title: type === "group" ? "a group" : null,
      e2ee: false,
      creator: identity(creator),
      memberIds,
      now: this.clock.now(),
    });
  }

  /** A group created by `creator` (its admin) with `memberIds`. */
  group(creator: string, memberIds: string[]): void {
    expectOk(this.create("group", creator, memberIds));
  }

  send(userId: string, request: Partial<SendRequest> & { clientMsgId: string }, origin: MemorySocket | null = null) {
    const input: SendRequest = request.body === undefined && request.mediaIds === undefined ? { ...request, body: "hi" } : request;
    return this.conversation.send(identity(userId), input, this.clock.now(), origin?.ws ?? null);
  }

  /** Sends `count` text messages from `userId` and returns them. */
  sendMany(userId: string, count: number, prefix = `${userId}-m`): Message[] {
    return Array.from({ length: count }, (_, i) => expectOk(this.send(userId, { clientMsgId: `${prefix}${i}` })).message);
  }

  read(userId: string, seq: number) {
    return this.conversation.updateReceipt(userId, "read", seq, this.clock.now());
  }

  delivered(userId: string, seq: number) {
    return this.conversation.updateReceipt(userId, "delivered", seq, this.clock.now());
  }

  /** The count of stored messages, from SQLite. */
  storedMessages(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM messages").one().n;
  }
}

export function expectOk<T>(result: Result<T>): { ok: true } & T {
  if (!result.ok) throw new Error(`expected ok, got ${result.code}: ${result.message}`);
  return result;
}

export function expectFailure(result: Result<unknown>, code: Failure["code"]): Failure {
  expect(result).toMatchObject({ ok: false, code });
  return result as Failure;
}
