// A crash-safe counter on disk: two checksummed slots written alternately with fdatasync,
// so a write torn by a crash leaves the previous value readable.
import { open, type FileHandle } from "node:fs/promises";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { fsyncDirectory } from "./durable-fs.js";

const slotBytes = 32;
const magic = 0x6b737231; // "ksr1"

function encodeSlot(generation: number, value: number): Buffer {
  const slot = Buffer.alloc(slotBytes);
  slot.writeUInt32LE(magic, 0);
  slot.writeDoubleLE(generation, 4);
  slot.writeDoubleLE(value, 12);
  createHash("sha256").update(slot.subarray(0, 20)).digest().copy(slot, 20, 0, 12);
  return slot;
}

function decodeSlot(slot: Buffer): { generation: number; value: number } | undefined {
  if (slot.length < slotBytes || slot.readUInt32LE(0) !== magic) return undefined;
  const digest = createHash("sha256").update(slot.subarray(0, 20)).digest().subarray(0, 12);
  if (!digest.equals(slot.subarray(20, 32))) return undefined;
  return { generation: slot.readDoubleLE(4), value: slot.readDoubleLE(12) };
}

export class DurableCounter {
  private constructor(
    private readonly handle: FileHandle,
    private generation: number,
    private current: number,
  ) {}

  static async open(path: string): Promise<DurableCounter> {
    const created = !existsSync(path);
    const handle = await open(path, "a+");
    await handle.close();
    if (created) await fsyncDirectory(dirname(path)); // the new file's name must survive a crash too
    const file = await open(path, "r+");
    const contents = Buffer.alloc(slotBytes * 2);
    await file.read(contents, 0, contents.length, 0);
    const slots = [decodeSlot(contents.subarray(0, slotBytes)), decodeSlot(contents.subarray(slotBytes))];
    const newest = slots
      .filter((slot) => slot !== undefined)
      .reduce<{ generation: number; value: number }>((a, b) => (b.generation > a.generation ? b : a), {
        generation: 0,
        value: 0,
      });
    return new DurableCounter(file, newest.generation, newest.value);
  }

  get value(): number {
    return this.current;
  }

  /** Persists the value; returns once it is on stable storage. */
  async set(value: number): Promise<void> {
    if (value === this.current) return;
    const generation = this.generation + 1;
    await this.handle.write(encodeSlot(generation, value), 0, slotBytes, (generation % 2) * slotBytes);
    await this.handle.datasync();
    this.generation = generation;
    this.current = value;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
