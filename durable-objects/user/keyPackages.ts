// The user's MLS KeyPackage directory (API.md "Key packages"): per device, one-time key packages
// and one last-resort package. A claim hands each one-time package out at most once, ever: it is
// taken and deleted in one synchronous SQLite step, which no other event interleaves with. When a
// device has none left the claim hands out its last-resort package (kept). Claims are rate limited
// per claiming user, with the bucket in SQLite rather than memory: draining a victim's packages
// is what the limit is for, and an eviction must not hand a fresh bucket out.
// Packages arrive already checked (the Worker's kernel/mls checkOwnKeyPackage); expired ones are
// dropped whenever the directory is read.
import type { StoredKeyPackage } from "../contract";

/** Below this many one-time packages a device is told to upload more (API.md). */
export const KEY_PACKAGES_LOW = 10;

/** The most one-time packages a device keeps here: enough for any burst of claims, and a bound on its storage. */
export const KEY_PACKAGES_MAX = 1000;

export interface ClaimedPackage {
  deviceId: string;
  keyPackage: string;
  lastResort: boolean;
  /** One-time packages the device has left after this claim. */
  left: number;
}

export class KeyPackageDirectory {
  constructor(private readonly sql: SqlStorage) {}

  /**
   * Stores a device's packages (all of them, in this one step) and returns its one-time count, or
   * null, storing nothing, when they would take it above KEY_PACKAGES_MAX.
   */
  upload(deviceId: string, packages: StoredKeyPackage[], lastResort: StoredKeyPackage | null, now: number): number | null {
    this.dropExpired(now);
    if (this.oneTimeCount(deviceId) + packages.length > KEY_PACKAGES_MAX) return null;
    for (const p of packages) {
      this.sql.exec(
        "INSERT OR IGNORE INTO key_packages (device_id, key_package, not_after, last_resort) VALUES (?, ?, ?, 0)",
        deviceId,
        p.keyPackage,
        p.notAfter,
      );
    }
    if (lastResort) {
      this.sql.exec("DELETE FROM key_packages WHERE device_id = ? AND last_resort = 1", deviceId);
      this.sql.exec(
        "INSERT INTO key_packages (device_id, key_package, not_after, last_resort) VALUES (?, ?, ?, 1)",
        deviceId,
        lastResort.keyPackage,
        lastResort.notAfter,
      );
    }
    return this.oneTimeCount(deviceId);
  }

  count(deviceId: string, now: number): { count: number; lastResort: boolean } {
    this.dropExpired(now);
    const lastResort = this.sql.exec("SELECT 1 FROM key_packages WHERE device_id = ? AND last_resort = 1", deviceId).toArray().length > 0;
    return { count: this.oneTimeCount(deviceId), lastResort };
  }

  /**
   * One package for each of `deviceIds` that has one (the calling device is left out by the
   * caller): the oldest one-time package, taken for good, else the last-resort package.
   */
  claim(deviceIds: string[], now: number): ClaimedPackage[] {
    this.dropExpired(now);
    const out: ClaimedPackage[] = [];
    for (const deviceId of deviceIds) {
      const oneTime = this.sql
        .exec<{ id: number; key_package: string }>(
          "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages WHERE device_id = ? AND last_resort = 0 ORDER BY id LIMIT 1) RETURNING id, key_package",
          deviceId,
        )
        .toArray()[0];
      if (oneTime) {
        out.push({ deviceId, keyPackage: oneTime.key_package, lastResort: false, left: this.oneTimeCount(deviceId) });
        continue;
      }
      const lastResort = this.sql
        .exec<{ key_package: string }>("SELECT key_package FROM key_packages WHERE device_id = ? AND last_resort = 1", deviceId)
        .toArray()[0];
      if (lastResort) out.push({ deviceId, keyPackage: lastResort.key_package, lastResort: true, left: 0 });
    }
    return out;
  }

  /**
   * Takes one claim from this (claiming) user's bucket: `perMinute` claims a minute, bursts of as
   * many. Returns 0 when allowed, else the seconds until one is.
   */
  takeClaim(now: number, perMinute: number): number {
    const row = this.sql.exec<{ tokens: number; at: number }>("SELECT tokens, at FROM claim_bucket WHERE id = 1").toArray()[0];
    const tokens = Math.min(perMinute, (row?.tokens ?? perMinute) + ((now - (row?.at ?? now)) / 60_000) * perMinute);
    if (tokens < 1) return ((1 - tokens) * 60) / perMinute;
    this.sql.exec(
      "INSERT INTO claim_bucket (id, tokens, at) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
      tokens - 1,
      now,
    );
    return 0;
  }

  /** The device logged out: its packages, never handed out again, go. */
  dropDevice(deviceId: string): void {
    this.sql.exec("DELETE FROM key_packages WHERE device_id = ?", deviceId);
  }

  private oneTimeCount(deviceId: string): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM key_packages WHERE device_id = ? AND last_resort = 0", deviceId).one().n;
  }

  private dropExpired(now: number): void {
    this.sql.exec("DELETE FROM key_packages WHERE not_after < ?", now);
  }
}
