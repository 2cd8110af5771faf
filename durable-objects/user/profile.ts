// What `GET /me` answers, kept by the user's own object so that the request reads no D1: the
// user's profile as the directory (D1 `users`) has it, and each signed-in device's name. Written
// by the calls that change them (a login or registration, PATCH /me, PATCH /devices/:id), each of
// which writes D1 too; D1 stays the directory others search. A device signed out loses its row.
import { User, type Device } from "../../protocol";

export const PROFILE_MIGRATIONS_TRACK = "_schema_profile";

// Append-only. Index i is this track's version i + 1.
export const PROFILE_MIGRATIONS = [
  `CREATE TABLE profile (id INTEGER PRIMARY KEY CHECK (id = 1), user TEXT NOT NULL)`,
  `CREATE TABLE device_profiles (device_id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID`,
];

export class Profile {
  constructor(private readonly sql: SqlStorage) {}

  setUser(user: User): void {
    this.sql.exec("INSERT INTO profile (id, user) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET user = excluded.user", JSON.stringify(user));
  }

  setDevice(device: Device): void {
    this.sql.exec(
      "INSERT INTO device_profiles (device_id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET name = excluded.name",
      device.id,
      device.name,
      device.createdAt,
    );
  }

  dropDevice(deviceId: string): void {
    this.sql.exec("DELETE FROM device_profiles WHERE device_id = ?", deviceId);
  }

  /** The user and this device, or null when either was never written here (a device from before this copy existed). */
  me(deviceId: string): { user: User; device: Device } | null {
    const user = this.sql.exec<{ user: string }>("SELECT user FROM profile WHERE id = 1").toArray()[0];
    const device = this.sql.exec<{ name: string; created_at: number }>("SELECT name, created_at FROM device_profiles WHERE device_id = ?", deviceId).toArray()[0];
    if (!user || !device) return null;
    return { user: User.parse(JSON.parse(user.user)), device: { id: deviceId, name: device.name, createdAt: device.created_at } };
  }
}
