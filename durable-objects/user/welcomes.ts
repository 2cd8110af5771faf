// Welcomes for this user's devices (API.md "Commits"): kept from the moment the conversation hands
// them over (after their commit is stored) until the device acknowledges its own, or until the
// user leaves or is removed from the conversation. Each is told to its device's user sockets as an
// `mls.welcome` frame when it arrives; `GET /mls/welcomes` lists the rest.
import type { PendingWelcome, UserServerFrame } from "../../protocol";
import type { WelcomeForDevice } from "../contract";
import { trySend } from "../lib/socketIo";

export class Welcomes {
  constructor(
    private readonly sql: SqlStorage,
    private readonly socketsOf: (deviceId: string) => WebSocket[],
  ) {}

  /** Keeps the Welcomes not already kept and tells their devices; a repeated hand-over tells nobody twice. */
  receive(welcomes: WelcomeForDevice[]): void {
    for (const w of welcomes) {
      const inserted = this.sql.exec(
        "INSERT OR IGNORE INTO mls_welcomes (id, device_id, conversation_id, seq, welcome) VALUES (?, ?, ?, ?, ?)",
        w.id,
        w.deviceId,
        w.conversationId,
        w.seq,
        w.welcome,
      ).rowsWritten;
      if (inserted === 0) continue;
      const frame = JSON.stringify({
        type: "mls.welcome",
        id: w.id,
        conversationId: w.conversationId,
        seq: w.seq,
        welcome: w.welcome,
      } satisfies UserServerFrame);
      for (const ws of this.socketsOf(w.deviceId)) trySend(ws, frame);
    }
  }

  list(deviceId: string): PendingWelcome[] {
    return this.sql
      .exec<{ id: string; conversation_id: string; seq: number; welcome: string }>(
        "SELECT id, conversation_id, seq, welcome FROM mls_welcomes WHERE device_id = ? ORDER BY seq, id",
        deviceId,
      )
      .toArray()
      .map((r) => ({ id: r.id, conversationId: r.conversation_id, seq: r.seq, welcome: r.welcome }));
  }

  /** Whether the device had that Welcome. */
  delete(deviceId: string, id: string): boolean {
    return this.sql.exec("DELETE FROM mls_welcomes WHERE device_id = ? AND id = ?", deviceId, id).rowsWritten > 0;
  }

  /** The device logged out: its Welcomes, which it can no longer fetch, go. */
  dropDevice(deviceId: string): void {
    this.sql.exec("DELETE FROM mls_welcomes WHERE device_id = ?", deviceId);
  }

  /** The user left or was removed: the conversation's Welcomes go. */
  dropConversation(conversationId: string): void {
    this.sql.exec("DELETE FROM mls_welcomes WHERE conversation_id = ?", conversationId);
  }
}
