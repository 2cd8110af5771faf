#!/usr/bin/env node
// Draws the app icons into web/public/icons as PNG files: no image library, just signed-distance
// shapes, 4x4 supersampling and a minimal PNG encoder. Run it after changing the design, with the
// project's Node 22 (it strips the types):
//   npx node web/scripts/icons.ts
import { mkdirSync, writeFileSync } from "node:fs";
import { deflateSync } from "node:zlib";

const out = new URL("../public/icons/", import.meta.url);
mkdirSync(out, { recursive: true });

const CRC = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
const crc32 = (buf: Buffer): number => {
  let c = 0xffffffff;
  for (const b of buf) c = (CRC[(c ^ b) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
};
function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
function png(size: number, rgba: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // RGBA
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0;
    rgba.copy(raw, y * (size * 4 + 1) + 1, y * size * 4, (y + 1) * size * 4);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw, { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

// Shapes in unit coordinates (0..1). Negative distance is inside.
const roundedRect = (x: number, y: number, cx: number, cy: number, hw: number, hh: number, r: number): number => {
  const qx = Math.abs(x - cx) - hw + r;
  const qy = Math.abs(y - cy) - hh + r;
  return Math.hypot(Math.max(qx, 0), Math.max(qy, 0)) + Math.min(Math.max(qx, qy), 0) - r;
};
const circle = (x: number, y: number, cx: number, cy: number, r: number): number => Math.hypot(x - cx, y - cy) - r;
// The tail of the bubble: a triangle below its lower left.
const tail = (x: number, y: number): number => {
  const inside = y > 0.6 && y < 0.8 && x > 0.3 && x < 0.45 && x - 0.3 < (0.8 - y) * 0.75 + 0.0;
  return inside ? -1 : 1;
};

/** "full" (rounded square), "maskable" (full bleed, art in the safe zone), "badge" (white shape only). */
type Kind = "full" | "maskable" | "badge";
type Rgba = [number, number, number, number];

function draw(size: number, kind: Kind): Buffer {
  const buf = Buffer.alloc(size * size * 4);
  const S = 4;
  const scale = kind === "maskable" ? 0.78 : 1;
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      let r = 0, g = 0, b = 0, a = 0;
      for (let sy = 0; sy < S; sy++) {
        for (let sx = 0; sx < S; sx++) {
          const u = (px + (sx + 0.5) / S) / size;
          const v = (py + (sy + 0.5) / S) / size;
          // Art coordinates, shrunk around the centre for the maskable safe zone.
          const x = (u - 0.5) / scale + 0.5;
          const y = (v - 0.5) / scale + 0.5;
          const bg = kind === "maskable" ? -1 : roundedRect(u, v, 0.5, 0.5, 0.5, 0.5, 0.22);
          const bubble = Math.min(roundedRect(x, y, 0.5, 0.47, 0.29, 0.21, 0.13), tail(x, y));
          const dot = Math.min(circle(x, y, 0.38, 0.47, 0.042), circle(x, y, 0.5, 0.47, 0.042), circle(x, y, 0.62, 0.47, 0.042));
          let c: Rgba | null = null;
          if (kind === "badge") {
            if (bubble < 0 && dot >= 0) c = [255, 255, 255, 255];
          } else if (bg < 0) {
            if (bubble < 0 && dot < 0) c = [37, 99, 235, 255];
            else if (bubble < 0) c = [255, 255, 255, 255];
            else {
              // A diagonal gradient from blue to teal.
              const t = (u + v) / 2;
              c = [Math.round(37 + (14 - 37) * t), Math.round(99 + (165 - 99) * t), Math.round(235 + (183 - 235) * t), 255];
            }
          }
          if (c) {
            r += c[0]; g += c[1]; b += c[2]; a += c[3];
          }
        }
      }
      const n = S * S;
      const i = (py * size + px) * 4;
      const alpha = a / n;
      // Store straight (not premultiplied) colour.
      buf[i] = alpha ? Math.round((r / n) * (255 / alpha)) : 0;
      buf[i + 1] = alpha ? Math.round((g / n) * (255 / alpha)) : 0;
      buf[i + 2] = alpha ? Math.round((b / n) * (255 / alpha)) : 0;
      buf[i + 3] = Math.round(alpha);
    }
  }
  return png(size, buf);
}

const files: [name: string, size: number, kind: Kind][] = [
  ["icon-192.png", 192, "full"],
  ["icon-512.png", 512, "full"],
  ["maskable-512.png", 512, "maskable"],
  ["apple-touch-icon.png", 180, "maskable"],
  ["favicon-32.png", 32, "full"],
  ["badge-96.png", 96, "badge"],
];
for (const [name, size, kind] of files) {
  const data = draw(size, kind);
  writeFileSync(new URL(name, out), data);
  console.log(`${name}: ${size}x${size}, ${data.length} bytes`);
}
