// Client of a master target's RecoveryPoints service. `hydrateRemote` writes a streamed point into
// a new directory (or image file), durably, and resumes from its progress file after an interruption.
import { constants } from "node:fs";
import { chmod, link, lstat, mkdir, open, readdir, readFile, rm, symlink, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Metadata, type ServiceError } from "@grpc/grpc-js";
import {
  EntryKind,
  RecoveryPointsClient,
  type Attributes,
  type DataChunk,
  type HydrateReply,
  type HydrateTotals,
  type ListPointsReply,
  type PointEntry,
  type PointInfo,
  type PruneReply,
  type RollbackReply,
} from "../gen/ksr/replication/v1/replication.js";
import { fsyncDirectory } from "./durable-fs.js";
import { applyAttributes, invalidAttributes, isSpecialKind, makeSpecial } from "./file-attributes.js";
import { unaryCall } from "./grpc-util.js";
import { lstatOrUndefined, writeFileAtomic } from "./journal/durable.js";
import { JournalUsageError } from "./journal/errors.js";
import { consistencyFromWire, type RecoveryPoint } from "./journal/point.js";
import { clientCredentials, grpcOptions, type TlsFiles } from "./tls.js";
import { wireParent, wirePathComponents } from "./wire-path.js";

export async function connectRecoveryPoints(address: string, tls: TlsFiles): Promise<RecoveryPointsClient> {
  return new RecoveryPointsClient(address, await clientCredentials(tls), {
    ...grpcOptions,
    // Points stream towards the client: a 64 KiB HTTP/2 window would stall it every 64 KiB.
    "grpc-node.flow_control_window": 32 * 1024 * 1024,
  });
}

export function listPoints(client: RecoveryPointsClient, machineId: string): Promise<ListPointsReply> {
  return unaryCall((request, callback) => client.listPoints(request, new Metadata(), callback), { machineId });
}

export function prunePoints(client: RecoveryPointsClient, machineId: string, retentionMs: number): Promise<PruneReply> {
  return unaryCall((request, callback) => client.prune(request, new Metadata(), callback), {
    machineId,
    retentionMs,
    releaseAll: false,
  });
}

/** Every point and the journal of a stream whose epoch ended (the replica stays as it is). */
export function releasePoints(client: RecoveryPointsClient, machineId: string): Promise<PruneReply> {
  return unaryCall((request, callback) => client.prune(request, new Metadata(), callback), {
    machineId,
    retentionMs: 0,
    releaseAll: true,
  });
}

export function rollbackTo(
  client: RecoveryPointsClient,
  machineId: string,
  point: RecoveryPoint,
): Promise<RollbackReply> {
  return unaryCall((request, callback) => client.rollback(request, new Metadata(), callback), {
    machineId,
    pointId: point.id,
    pointSeq: point.seq,
  });
}

/** The listed points as the journal library describes them (for selecting and printing). */
export function pointsOf(points: readonly PointInfo[]): RecoveryPoint[] {
  return points.map((point) => ({
    id: point.id,
    seq: point.seq,
    timeUnixMs: point.timeUnixMs,
    consistency: consistencyFromWire(point.consistency),
    group: point.consistencyGroup,
  }));
}

// ------------------------------------------------------------------------------------ hydrate

export interface RemoteHydrateOptions {
  onProgress?: (message: string) => void;
  /** Stop (as an interruption would) once this many data bytes arrived; lets tests interrupt deterministically. */
  stopAfterBytes?: number;
  /** Where the resume cursor is kept; default DEST.ksr-hydrate-stream.json (e.g. another volume when DEST is a mount). */
  progressPath?: string;
}

interface StreamProgress {
  format: 1;
  machineId: string;
  pointId: string;
  pointSeq: number;
  cursor: { path: string; offset: number };
  /** Directories whose mode lacks owner rwx: set at the end, so entries can be written inside first. */
  deferredModes: [string, number][];
  /** Directories' owner, mode, mtime and xattrs (values base64): set at the end, after their entries. */
  deferredAttributes?: [path: string, mode: number, attributes: SavedAttributes][];
}

type SavedAttributes = Omit<Attributes, "xattrs"> & { xattrs: [string, string][] };

export function streamProgressPath(destination: string): string {
  return `${destination.replace(/\/+$/, "")}.ksr-hydrate-stream.json`;
}

const checkpointBytes = 64 * 1024 * 1024;
const checkpointMs = 2000;
const ownerRwx = 0o700;

/** Writes the stream into `destination`, keeping a durable cursor so an interrupted run resumes. */
class PointWriter {
  private file: { entry: PointEntry; handle: FileHandle } | undefined;
  private readonly unsyncedFiles: string[] = [];
  private readonly unsyncedDirectories = new Set<string>();
  private readonly verifiedDirectories = new Set<string>();
  private bytesSinceCheckpoint = 0;
  private lastCheckpoint = Date.now();
  receivedBytes = 0;
  receivedEntries = 0;
  /** What the destination could not keep (owner, xattrs, device nodes), one line per path. */
  readonly notKept: string[] = [];
  private readonly noteNotKept = (path: string, what: string): void => {
    this.notKept.push(`${path}: ${what}`);
  };

  constructor(
    private readonly destination: string,
    private readonly progressPath: string,
    private readonly progress: StreamProgress,
    private resumeAt: { path: string; offset: number } | undefined,
  ) {}

  private absolute(path: string): string {
    if (path === "") return this.destination;
    try {
      wirePathComponents(path);
    } catch (error) {
      throw new Error(`the master target sent an invalid path: ${(error as Error).message}`);
    }
    return join(this.destination, path);
  }

  /** Every parent component must be a real directory: a symlink there would lead outside the destination. */
  private async checkParent(path: string): Promise<void> {
    if (path === "") return;
    const parent = wireParent(path);
    let prefix = "";
    for (const component of parent === "" ? [] : parent.split("/")) {
      prefix = prefix === "" ? component : `${prefix}/${component}`;
      if (this.verifiedDirectories.has(prefix)) continue;
      const stats = await lstat(this.absolute(prefix)).catch(() => undefined);
      if (stats?.isDirectory() !== true)
        throw new Error(`the master target sent "${path}", but "${prefix}" is not a directory it sent`);
      this.verifiedDirectories.add(prefix);
    }
  }

  /** The path (and anything below it) is being replaced: it is no longer a verified directory. */
  private forgetVerified(path: string): void {
    for (const verified of this.verifiedDirectories)
      if (verified === path || verified.startsWith(`${path}/`)) this.verifiedDirectories.delete(verified);
  }

  async entry(entry: PointEntry): Promise<void> {
    await this.finishFile();
    const path = this.absolute(entry.path);
    await this.checkParent(entry.path);
    const resuming = this.resumeAt?.path === entry.path ? this.resumeAt : undefined;
    this.resumeAt = undefined;
    this.progress.cursor = { path: entry.path, offset: resuming?.offset ?? 0 };
    this.receivedEntries++;
    if (entry.attributes !== undefined) {
      const problem = invalidAttributes(entry.attributes);
      if (problem !== undefined) throw new Error(`the master target sent "${entry.path}" with ${problem}`);
    }
    if (entry.path !== "") this.unsyncedDirectories.add(dirname(path));
    if (entry.kind !== EntryKind.ENTRY_KIND_DIRECTORY) this.forgetVerified(entry.path);
    switch (entry.kind) {
      case EntryKind.ENTRY_KIND_DIRECTORY:
        await this.makeDirectory(entry, path);
        return;
      case EntryKind.ENTRY_KIND_SYMLINK:
        await replaceWith(path, () => symlink(entry.linkTarget, path));
        await this.applyAttributes(path, undefined, entry.attributes);
        return;
      case EntryKind.ENTRY_KIND_FILE:
        if (entry.hardLinkTo !== "") {
          const existing = this.absolute(entry.hardLinkTo);
          await this.checkParent(entry.hardLinkTo);
          if ((await lstatOrUndefined(existing))?.isFile() !== true)
            throw new Error(
              `the master target linked "${entry.path}" to "${entry.hardLinkTo}", which is no file it sent`,
            );
          await replaceWith(path, () => link(existing, path));
          return;
        }
        await this.openFile(entry, path, resuming !== undefined && resuming.offset > 0);
        return;
      default:
        if (!isSpecialKind(entry.kind))
          throw new Error(`the master target sent "${entry.path}" with unknown kind ${entry.kind}`);
        await this.makeSpecial(entry, path);
    }
  }

  private async applyAttributes(
    path: string,
    mode: number | undefined,
    attributes: Attributes | undefined,
  ): Promise<void> {
    if (attributes !== undefined) await applyAttributes(path, mode, attributes, this.noteNotKept);
  }

  private async makeSpecial(entry: PointEntry, path: string): Promise<void> {
    try {
      await replaceWith(path, () => {
        makeSpecial(path, entry.kind, entry.mode, entry);
        return Promise.resolve();
      });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EPERM") throw error;
      this.noteNotKept(entry.path, `${EntryKind[entry.kind]} (mknod: EPERM, needs CAP_MKNOD)`);
      return;
    }
    await chmod(path, entry.mode);
    await this.applyAttributes(path, entry.mode, entry.attributes);
  }

  private async makeDirectory(entry: PointEntry, path: string): Promise<void> {
    const stats = await lstatOrUndefined(path);
    if (stats !== undefined && !stats.isDirectory()) await rm(path, { force: true });
    if (stats?.isDirectory() !== true) await mkdir(path, { mode: ownerRwx });
    if ((entry.mode & ownerRwx) === ownerRwx) await chmod(path, entry.mode);
    else {
      await chmod(path, entry.mode | ownerRwx);
      this.progress.deferredModes.push([entry.path, entry.mode]);
    }
    if (entry.attributes !== undefined) {
      const { xattrs, ...rest } = entry.attributes;
      const saved = {
        ...rest,
        xattrs: xattrs.map(({ name, value }): [string, string] => [name, Buffer.from(value).toString("base64")]),
      };
      (this.progress.deferredAttributes ??= []).push([entry.path, entry.mode, saved]);
    }
    this.unsyncedDirectories.add(path);
  }

  private async openFile(entry: PointEntry, path: string, keepContent: boolean): Promise<void> {
    let handle: FileHandle | undefined;
    if (keepContent) handle = await open(path, constants.O_WRONLY | constants.O_NOFOLLOW).catch(() => undefined);
    handle ??= await replaceWith(path, () =>
      open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600),
    );
    this.file = { entry, handle };
  }

  async chunk(chunk: DataChunk): Promise<void> {
    if (this.file === undefined) throw new Error("the master target sent data without a file entry");
    if (chunk.offset + chunk.data.length > this.file.entry.size)
      throw new Error(`the master target sent data beyond the end of "${this.file.entry.path}"`);
    await this.file.handle.write(chunk.data, 0, chunk.data.length, chunk.offset);
    this.progress.cursor = { path: this.file.entry.path, offset: chunk.offset + chunk.data.length };
    this.receivedBytes += chunk.data.length;
    this.bytesSinceCheckpoint += chunk.data.length;
    if (this.bytesSinceCheckpoint >= checkpointBytes || Date.now() - this.lastCheckpoint >= checkpointMs)
      await this.checkpoint();
  }

  /** The current file is complete: its size (zero ranges were not sent) and mode. */
  private async finishFile(): Promise<void> {
    const file = this.file;
    if (file === undefined) return;
    this.file = undefined;
    try {
      await file.handle.truncate(file.entry.size);
      await file.handle.chmod(file.entry.mode);
    } finally {
      await file.handle.close();
    }
    await this.applyAttributes(this.absolute(file.entry.path), file.entry.mode, file.entry.attributes);
    this.unsyncedFiles.push(this.absolute(file.entry.path));
  }

  /** Everything before the cursor is durable, then the cursor is. */
  async checkpoint(): Promise<void> {
    await this.file?.handle.datasync();
    for (const path of this.unsyncedFiles.splice(0)) await syncFile(path);
    for (const directory of [...this.unsyncedDirectories].reverse()) await fsyncDirectory(directory);
    this.unsyncedDirectories.clear();
    await writeFileAtomic(this.progressPath, JSON.stringify(this.progress));
    this.bytesSinceCheckpoint = 0;
    this.lastCheckpoint = Date.now();
  }

  async finish(): Promise<void> {
    await this.finishFile();
    await this.checkpoint();
    for (const [path, mode] of [...this.progress.deferredModes].reverse()) {
      await chmod(this.absolute(path), mode);
      await fsyncDirectory(this.absolute(path));
    }
    // Directory attributes last, deepest first: every entry written inside moved the mtime.
    for (const [path, mode, saved] of [...(this.progress.deferredAttributes ?? [])].reverse()) {
      const xattrs = saved.xattrs.map(([name, value]) => ({ name, value: Buffer.from(value, "base64") }));
      await this.applyAttributes(this.absolute(path), mode, { ...saved, xattrs });
      await fsyncDirectory(this.absolute(path));
    }
    await rm(this.progressPath, { force: true });
    await fsyncDirectory(dirname(this.destination));
  }

  async abandon(): Promise<void> {
    await this.file?.handle.close();
    this.file = undefined;
  }
}

async function syncFile(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Whatever an interrupted run left at the path goes first (entries after the cursor are redone). */
async function replaceWith<T>(path: string, create: () => Promise<T>): Promise<T> {
  const stats = await lstatOrUndefined(path);
  if (stats !== undefined) await rm(path, { recursive: stats.isDirectory(), force: true });
  return create();
}

async function startOrResume(
  machineId: string,
  point: RecoveryPoint,
  destination: string,
  progressPath: string,
): Promise<{ progress: StreamProgress; resumed: boolean }> {
  const saved = await readFile(progressPath, "utf8").then(
    (text) => JSON.parse(text) as StreamProgress,
    (error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new JournalUsageError(`progress file ${progressPath} is unreadable; delete it and ${destination}`);
    },
  );
  if (saved !== undefined) {
    if (saved.machineId !== machineId || saved.pointId !== point.id || saved.pointSeq !== point.seq)
      throw new JournalUsageError(
        `${destination} holds an interrupted hydration of point "${saved.pointId}" of machine "${saved.machineId}"; remove it and ${progressPath} to start over`,
      );
    return { progress: saved, resumed: true };
  }
  const existing = await lstatOrUndefined(destination);
  if (existing !== undefined) {
    if (!existing.isDirectory() || (await readdir(destination)).length > 0)
      throw new JournalUsageError(`destination ${destination} already exists and is not an empty directory`);
    // A mount point (a new claim mounted there, as in a drill) cannot be removed: it stays and takes the root entry.
    await rm(destination, { recursive: true }).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code !== "EBUSY") throw error;
    });
  }
  await mkdir(dirname(destination), { recursive: true });
  const progress: StreamProgress = {
    format: 1,
    machineId,
    pointId: point.id,
    pointSeq: point.seq,
    cursor: { path: "", offset: 0 },
    deferredModes: [],
  };
  await writeFileAtomic(progressPath, JSON.stringify(progress));
  return { progress, resumed: false };
}

function describeTotals(totals: HydrateTotals | undefined, writer: PointWriter): string {
  const percent = totals === undefined || totals.bytes === 0 ? 100 : (100 * writer.receivedBytes) / totals.bytes;
  return `${(writer.receivedBytes / 2 ** 20).toFixed(1)} MiB (${percent.toFixed(0)}%), ${writer.receivedEntries}/${totals?.entries ?? "?"} entries`;
}

/**
 * Streams `point` of `machineId` from the master target into `destination` (a new directory, or
 * a new image file for a block replica). Returns false when stopped early by `stopAfterBytes`.
 */
export async function hydrateRemote(
  client: RecoveryPointsClient,
  machineId: string,
  point: RecoveryPoint,
  destination: string,
  options: RemoteHydrateOptions = {},
): Promise<boolean> {
  const progressPath = options.progressPath ?? streamProgressPath(destination);
  const { progress, resumed } = await startOrResume(machineId, point, destination, progressPath);
  if (resumed) options.onProgress?.(`resuming at "${progress.cursor.path}" (+${progress.cursor.offset} bytes)`);
  const writer = new PointWriter(destination, progressPath, progress, resumed ? progress.cursor : undefined);
  const call = client.hydrate({
    machineId,
    pointId: point.id,
    pointSeq: point.seq,
    resume: resumed ? progress.cursor : undefined,
  });
  let totals: HydrateTotals | undefined;
  let lastReport = Date.now();
  try {
    for await (const reply of call as AsyncIterable<HydrateReply>) {
      const item = reply.item;
      if (item === undefined) continue;
      if (item.$case === "totals") totals = item.value;
      else if (item.$case === "entry") await writer.entry(item.value);
      else if (item.$case === "chunk") await writer.chunk(item.value);
      else {
        await writer.finish();
        options.onProgress?.(`point ${point.id} hydrated into ${destination}: ${describeTotals(totals, writer)}`);
        if (writer.notKept.length > 0)
          options.onProgress?.(
            `${destination} could not keep ${writer.notKept.length} attribute(s): ${writer.notKept.slice(0, 5).join("; ")}`,
          );
        return true;
      }
      if (Date.now() - lastReport >= 2000) {
        lastReport = Date.now();
        options.onProgress?.(`hydrating: ${describeTotals(totals, writer)}`);
      }
      if (options.stopAfterBytes !== undefined && writer.receivedBytes >= options.stopAfterBytes) {
        call.cancel();
        await writer.checkpoint();
        await writer.abandon();
        return false;
      }
    }
    throw new Error("the master target ended the stream before the point was complete");
  } catch (error) {
    await writer.checkpoint().catch(() => undefined);
    await writer.abandon();
    throw describeCallError(error);
  }
}

function describeCallError(error: unknown): Error {
  const details = (error as Partial<ServiceError>).details;
  return details === undefined ? (error as Error) : new Error(details);
}
