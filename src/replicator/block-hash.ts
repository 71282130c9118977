// Change detection: 64 KiB blocks hashed with xxhash64 (DESIGN.md §5). Hashes travel and
// persist as little-endian 8-byte words packed in one buffer per file.
import xxhash, { type XXHashAPI } from "xxhash-wasm";

export const blockSize = 64 * 1024;
const zeroBlock = Buffer.alloc(blockSize);

let api: XXHashAPI | undefined;

/** Loads the wasm hasher once; every other function here needs it loaded. */
export async function loadBlockHasher(): Promise<void> {
  api ??= await xxhash();
}

export function hashBlock(block: Uint8Array): bigint {
  if (api === undefined) throw new Error("loadBlockHasher() must complete before hashing");
  return api.h64Raw(block);
}

export function isZeroBlock(block: Buffer): boolean {
  return block.length <= blockSize && block.equals(zeroBlock.subarray(0, block.length));
}

export function blockCount(size: number): number {
  return Math.ceil(size / blockSize);
}

/** A growable list of block hashes backed by one buffer. */
export class BlockHashes {
  private words: BigUint64Array;
  private count: number;

  constructor(packed?: Uint8Array) {
    const bytes = packed === undefined ? new Uint8Array(0) : Uint8Array.from(packed);
    if (bytes.length % 8 !== 0) throw new Error(`block hash list of ${bytes.length} bytes is not a multiple of 8`);
    this.count = bytes.length / 8;
    this.words = new BigUint64Array(Math.max(this.count, 1));
    new Uint8Array(this.words.buffer).set(bytes);
  }

  get length(): number {
    return this.count;
  }

  get(index: number): bigint | undefined {
    return index < this.count ? this.words[index] : undefined;
  }

  set(index: number, hash: bigint): void {
    if (index >= this.words.length) {
      const grown = new BigUint64Array(Math.max(index + 1, this.words.length * 2));
      grown.set(this.words.subarray(0, this.count));
      this.words = grown;
    }
    this.words[index] = hash;
    if (index >= this.count) this.count = index + 1;
  }

  truncate(count: number): void {
    this.count = Math.min(this.count, count);
  }

  packed(): Buffer {
    return Buffer.from(this.words.buffer, this.words.byteOffset, this.count * 8);
  }

  equals(other: BlockHashes): boolean {
    return this.packed().equals(other.packed());
  }
}
