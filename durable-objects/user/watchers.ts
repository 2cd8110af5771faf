// Presence between users: which devices of other users watch this user (their viewport, set with
// `presence.watch`), what this user's devices watch, and the relay of a change to the watchers.
// The privacy rule: only users who share a conversation with the watcher are disclosed
// (./presencePrivacy.ts).
import type { Presence, UserServerFrame } from "../../protocol";
import type { Identity } from "../../kernel/identity";
import type { PresencePeer } from "../contract";
import { trySend } from "../lib/socketIo";
import type { DeviceSockets, SocketState } from "./deviceSockets";

export interface WatchDeps {
  sql: SqlStorage;
  sockets: DeviceSockets;
  users(userId: string): Pick<PresencePeer, "watch" | "unwatch" | "presenceEvent">;
  /** Which of `userIds` share a conversation with this object's user now (./presencePrivacy.ts). */
  sharedWith(userIds: string[]): Promise<Set<string>>;
}

export class Watchers {
  constructor(private readonly deps: WatchDeps) {}

  /** A watcher device of another user starts watching this user. */
  add(watcher: Identity): void {
    this.deps.sql.exec("INSERT OR IGNORE INTO watchers (watcher_user_id, watcher_device_id) VALUES (?, ?)", watcher.userId, watcher.deviceId);
  }

  remove(watcher: Identity): void {
    this.deps.sql.exec("DELETE FROM watchers WHERE watcher_user_id = ? AND watcher_device_id = ?", watcher.userId, watcher.deviceId);
  }

  /**
   * Sets what the device holding `ws` watches: `requested`, less those the privacy rule hides.
   * Each newly watched user's object registers the device and answers its presence, which the
   * socket gets at once for its first paint.
   */
  async setWatch(ws: WebSocket, state: SocketState, requested: string[]): Promise<void> {
    const wanted = [...new Set(requested)].filter((id) => id !== state.userId);
    const allowed = await this.deps.sharedWith(wanted);
    const before = new Set(state.watch);
    const after = wanted.filter((id) => allowed.has(id));
    const added = after.filter((id) => !before.has(id));
    const removed = state.watch.filter((id) => !allowed.has(id) || !after.includes(id));
    state.watch = after;
    this.deps.sockets.write(ws, state);
    const watcher: Identity = { userId: state.userId, deviceId: state.deviceId };
    const results = await Promise.allSettled([
      ...removed.map((id) => this.deps.users(id).unwatch(watcher)),
      ...added.map(async (id) => {
        const presence = await this.deps.users(id).watch(id, watcher);
        trySend(ws, JSON.stringify({ type: "presence", ...presence } satisfies UserServerFrame));
      }),
    ]);
    // A user whose object could not register the watch is not counted as watched, so the device's
    // next presence.watch (a retry, or the same viewport again) asks again.
    const failed = added.filter((_, i) => results[removed.length + i]!.status === "rejected");
    if (failed.length > 0) {
      state.watch = state.watch.filter((id) => !failed.includes(id));
      this.deps.sockets.write(ws, state);
    }
    const error = results.find((r) => r.status === "rejected");
    if (error) throw error.reason;
  }

  /**
   * A socket of this user closed: the users it watched are told, unless another socket of the
   * same device still watches them. Returns the calls, for the object to wait on.
   */
  stopWatching(ws: WebSocket, state: SocketState): Promise<unknown>[] {
    if (state.watch.length === 0) return [];
    const watcher: Identity = { userId: state.userId, deviceId: state.deviceId };
    const still = new Set(
      this.deps.sockets
        .ofDevice(state.deviceId)
        .filter((s) => s !== ws && s.readyState === WebSocket.OPEN)
        .flatMap((s) => this.deps.sockets.state(s)?.watch ?? []),
    );
    return state.watch.filter((id) => !still.has(id)).map((id) => this.deps.users(id).unwatch(watcher).catch(() => undefined));
  }

  /** Tells every watcher of this user of a change; forgets the watcher devices that stopped watching. */
  async publish(event: Presence): Promise<void> {
    const rows = this.deps.sql
      .exec<{ watcher_user_id: string; watcher_device_id: string }>("SELECT watcher_user_id, watcher_device_id FROM watchers")
      .toArray();
    const byUser = new Map<string, string[]>();
    for (const r of rows) byUser.set(r.watcher_user_id, [...(byUser.get(r.watcher_user_id) ?? []), r.watcher_device_id]);
    await Promise.all(
      [...byUser].map(async ([watcherUserId, deviceIds]) => {
        try {
          const gone = await this.deps.users(watcherUserId).presenceEvent(deviceIds, event);
          for (const deviceId of gone) this.remove({ userId: watcherUserId, deviceId });
        } catch (err) {
          console.warn(`presence event to ${watcherUserId} failed`, String(err));
        }
      }),
    );
  }

  /**
   * A watched user's change, for this user's devices that watch them. Returns the devices that no
   * longer do, so the watched user's object can forget them.
   */
  relay(deviceIds: string[], event: Presence): string[] {
    const frame = JSON.stringify({ type: "presence", ...event } satisfies UserServerFrame);
    const gone: string[] = [];
    for (const deviceId of deviceIds) {
      const watching = this.deps.sockets.ofDevice(deviceId).filter((ws) => this.deps.sockets.state(ws)?.watch.includes(event.userId));
      if (watching.length === 0) gone.push(deviceId);
      for (const ws of watching) trySend(ws, frame);
    }
    return gone;
  }
}
