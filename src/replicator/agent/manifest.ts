// The agent's picture of the replica: per entry its kind, mode, size, link target, block
// hashes, attributes (owner, mtime, xattrs, as a key) and device numbers, plus the stat identity that lets a scan skip unchanged files. Persisted with the
// seq it corresponds to, and only once the process server acknowledged that seq.
import { open, readFile, rename } from "node:fs/promises";
import { dirname } from "node:path";
import type { BigIntStats } from "node:fs";
import { EntryKind, type ManifestEntry } from "../../gen/ksr/replication/v1/replication.js";
import { BlockHashes, blockSize } from "../block-hash.js";
import { fsyncDirectory } from "../durable-fs.js";
import { attributesKey } from "../file-attributes.js";

export interface ManifestRecord {
  kind: EntryKind;
  mode: number;
  size: number;
  linkTarget: string;
  hashes: BlockHashes;
  /** Stat identity when the record was taken from the source; empty when it came from a replica. */
  identity: string;
  ino: string;
  /** attributesKey() of what the replica holds; "" when unknown (the attributes are sent again). */
  attributes: string;
  /** "major:minor" of a device node, "" otherwise. */
  device: string;
}

/** Version 1 manifests predate attributes: their entries load with unknown attributes. */
const manifestVersion = 2;

interface PersistedManifest {
  version: number;
  machineId: string;
  seq: number;
  rootAttributes?: string;
  entries: [
    path: string,
    kind: EntryKind,
    mode: number,
    size: number,
    linkTarget: string,
    hashes: string,
    identity: string,
    ino: string,
    attributes?: string,
    device?: string,
  ][];
}

/** Changes when the content or metadata of a file could have changed. */
export function statIdentity(stats: BigIntStats): string {
  return `${stats.ino}:${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}:${stats.mode}`;
}

/**
 * Whether stats describe the same object a record was taken from, as a rename leaves it: inode,
 * size, mtime and mode unchanged (a rename changes only ctime). Inode numbers alone are reused
 * as soon as an entry is deleted.
 */
export function sameObjectMoved(record: ManifestRecord, stats: BigIntStats): boolean {
  const [ino, size, mtime, , mode] = record.identity.split(":");
  return (
    ino === String(stats.ino) &&
    size === String(stats.size) &&
    mtime === String(stats.mtimeNs) &&
    mode === String(stats.mode)
  );
}

export class Manifest {
  readonly entries = new Map<string, ManifestRecord>();
  private readonly byIno = new Map<string, Set<string>>();
  /** The inode each path is indexed under (records are updated in place, so not read from them). */
  private readonly inoOf = new Map<string, string>();
  /** attributesKey() of the replica's root directory ("" when unknown). */
  rootAttributes = "";

  constructor(
    readonly machineId: string,
    public seq = 0,
  ) {}

  get(path: string): ManifestRecord | undefined {
    return this.entries.get(path);
  }

  set(path: string, record: ManifestRecord): void {
    this.unindex(path);
    this.entries.set(path, record);
    if (record.ino !== "") {
      let paths = this.byIno.get(record.ino);
      if (paths === undefined) this.byIno.set(record.ino, (paths = new Set()));
      paths.add(path);
      this.inoOf.set(path, record.ino);
    }
  }

  /** Removes path and everything below it; returns the removed paths. */
  deleteTree(path: string): void {
    for (const candidate of [...this.entries.keys()]) {
      if (candidate === path || candidate.startsWith(`${path}/`)) {
        this.unindex(candidate);
        this.entries.delete(candidate);
      }
    }
  }

  /** Moves path and everything below it to a new path. */
  moveTree(from: string, to: string): void {
    this.deleteTree(to);
    for (const [candidate, record] of [...this.entries]) {
      if (candidate !== from && !candidate.startsWith(`${from}/`)) continue;
      this.unindex(candidate);
      this.entries.delete(candidate);
      this.set(to + candidate.slice(from.length), record);
    }
  }

  /** Takes over another manifest's entries (after a resync read the replica's). */
  replaceWith(other: Manifest): void {
    this.entries.clear();
    this.byIno.clear();
    this.inoOf.clear();
    for (const [path, record] of other.entries) this.set(path, record);
    this.rootAttributes = other.rootAttributes;
  }

  pathsWithIno(ino: string): string[] {
    return [...(this.byIno.get(ino) ?? [])];
  }

  private unindex(path: string): void {
    const ino = this.inoOf.get(path);
    if (ino === undefined) return;
    this.inoOf.delete(path);
    const paths = this.byIno.get(ino);
    paths?.delete(path);
    if (paths?.size === 0) this.byIno.delete(ino);
  }

  /** Writes atomically (temporary file, fsync, rename, fsync of the directory). */
  async save(file: string): Promise<void> {
    const persisted: PersistedManifest = {
      version: manifestVersion,
      machineId: this.machineId,
      seq: this.seq,
      rootAttributes: this.rootAttributes,
      entries: [...this.entries].map(([path, r]) => [
        path,
        r.kind,
        r.mode,
        r.size,
        r.linkTarget,
        r.hashes.packed().toString("base64"),
        r.identity,
        r.ino,
        r.attributes,
        r.device,
      ]),
    };
    const temporary = `${file}.tmp`;
    const handle = await open(temporary, "w", 0o600);
    try {
      await handle.writeFile(JSON.stringify(persisted));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, file);
    await fsyncDirectory(dirname(file));
  }

  static async load(file: string, machineId: string): Promise<Manifest> {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return new Manifest(machineId);
      throw error;
    }
    const persisted = JSON.parse(text) as PersistedManifest;
    if ((persisted.version !== 1 && persisted.version !== manifestVersion) || persisted.machineId !== machineId)
      throw new Error(`${file} is not a manifest of machine "${machineId}"; move it away to start over`);
    const manifest = new Manifest(machineId, persisted.seq);
    manifest.rootAttributes = persisted.rootAttributes ?? "";
    for (const [path, kind, mode, size, linkTarget, hashes, identity, ino, attributes, device] of persisted.entries)
      manifest.set(path, {
        kind,
        mode,
        size,
        linkTarget,
        hashes: new BlockHashes(Buffer.from(hashes, "base64")),
        identity,
        ino,
        attributes: attributes ?? "",
        device: device ?? "",
      });
    return manifest;
  }

  /** A manifest describing a replica as the master target reported it (no stat identities). */
  static fromReplica(machineId: string, entries: readonly ManifestEntry[]): Manifest {
    const manifest = new Manifest(machineId);
    for (const entry of entries) {
      if (entry.blockSize !== 0 && entry.blockSize !== blockSize)
        throw new Error(`the replica uses ${entry.blockSize}-byte blocks, this agent ${blockSize}`);
      const attributes = entry.attributes === undefined ? "" : attributesKey(entry.attributes);
      if (entry.path === "" && entry.kind === EntryKind.ENTRY_KIND_DIRECTORY) {
        // A tree replica's root (a block replica's image is the file with the empty path).
        manifest.rootAttributes = `${entry.mode}:${attributes}`;
        continue;
      }
      manifest.set(entry.path, {
        kind: entry.kind,
        mode: entry.mode,
        size: entry.size,
        linkTarget: entry.linkTarget,
        hashes: new BlockHashes(entry.blockHashes),
        identity: "",
        ino: "",
        attributes,
        device: deviceKey(entry),
      });
    }
    return manifest;
  }
}

/** A record of an entry the replica does not hold yet. */
export function emptyRecord(kind: EntryKind, mode: number): ManifestRecord {
  return {
    kind,
    mode,
    size: 0,
    linkTarget: "",
    hashes: new BlockHashes(),
    identity: "",
    ino: "",
    attributes: "",
    device: "",
  };
}

/** The manifest's form of a device node's numbers ("" for every other kind). */
export function deviceKey(device: { rdevMajor: number; rdevMinor: number }): string {
  return device.rdevMajor === 0 && device.rdevMinor === 0 ? "" : `${device.rdevMajor}:${device.rdevMinor}`;
}
