// The user object's side of QuietMembers (durable-objects/conversation/quiet.ts): it answers a
// conversation's in-order calls with the devices holding this user's sockets, so the conversation
// may skip the calls while those devices watch it live; and before a new user socket is let in,
// it tells every conversation that may still rely on an answer (with a new epoch), so that none
// skips a message the new device has neither synced (it syncs after `ready`) nor been sent live.
import { QUIET_HINT_MS, type ConversationPeer, type DeliveryAnswer, type LiveOn } from "../contract";
import type { DeviceSockets } from "./deviceSockets";

export class DeliveryAnswers {
  /** `answered` rows written during this wake-up, so a busy conversation's answer writes once per hint. */
  private readonly answeredUntil = new Map<string, number>();
  /** User sockets being let in: no answer names the devices online while one is. */
  private connecting = 0;
  private socketEpoch: number | undefined = undefined;

  constructor(
    private readonly sql: SqlStorage,
    private readonly sockets: DeviceSockets,
    private readonly conversations: (conversationId: string) => Pick<ConversationPeer, "memberOnline">,
  ) {}

  /**
   * For a conversation's call that asks: the devices holding this user's sockets, while any of
   * them is live (with none, a message may need a push, so the conversation must keep calling),
   * and the epoch. `watched` when each of them got the call's messages live on a dedupe socket
   * (`liveOn`): only then may the conversation skip calling, and the caller watches it. The
   * conversation is remembered, to be told when a device opens a user socket.
   */
  answer(conversationId: string | null, now: number, liveOn: LiveOn = {}): DeliveryAnswer | null {
    if (conversationId === null || this.connecting > 0) return null;
    // Read now, not at the start of the call: a socket let in during its awaits must be named
    // (its handshake told the conversations only of the answers given before it).
    if (this.sockets.live(now).length === 0) return null;
    const devices = this.sockets.openDevices();
    // The row outlives the conversation's use of the answer (QUIET_HINT_MS), whatever the clocks.
    if ((this.answeredUntil.get(conversationId) ?? 0) < now + QUIET_HINT_MS) {
      const until = now + 3 * QUIET_HINT_MS;
      this.sql.exec(
        `INSERT INTO answered (conversation_id, until) VALUES (?, ?)
         ON CONFLICT (conversation_id) DO UPDATE SET until = excluded.until`,
        conversationId,
        until,
      );
      this.answeredUntil.set(conversationId, until);
    }
    return { devices, epoch: this.epoch(), watched: devices.every((deviceId) => Object.hasOwn(liveOn, deviceId)) };
  }

  /**
   * Runs `letIn` (accepting a user socket) once every conversation that may still skip this user
   * on an earlier answer has been told, with a new epoch. Throws, letting nobody in, if one
   * cannot be told: the device retries.
   */
  async beforeNewSocket<T>(userId: string, now: number, letIn: () => T): Promise<T> {
    this.connecting++;
    try {
      await this.endAnswers(userId, now);
    } finally {
      this.connecting--;
    }
    return letIn();
  }

  private epoch(): number {
    return (this.socketEpoch ??= this.sql.exec<{ epoch: number }>("SELECT epoch FROM socket_epoch").toArray()[0]?.epoch ?? 0);
  }

  private async endAnswers(userId: string, now: number): Promise<void> {
    const rows = this.sql.exec<{ conversation_id: string }>("SELECT conversation_id FROM answered WHERE until > ?", now).toArray();
    if (rows.length > 0) {
      const epoch = this.epoch() + 1;
      this.sql.exec("INSERT INTO socket_epoch (id, epoch) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch", epoch);
      this.socketEpoch = epoch;
      await Promise.all(rows.map((r) => this.conversations(r.conversation_id).memberOnline(userId, epoch)));
    }
    this.sql.exec("DELETE FROM answered");
    this.answeredUntil.clear();
  }
}
