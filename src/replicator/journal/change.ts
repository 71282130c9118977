// The changes the master target applies, as the undo journal sees them. The shape is the one the
// replication protocol's generated `Change` has (proto/ksr/replication/v1), so a master target
// passes its decoded changes straight in; the journal depends on the shape, not on the codegen.

export interface WriteOp {
  path: string;
  offset: number;
  data: Uint8Array;
}
export interface ZeroOp {
  path: string;
  offset: number;
  length: number;
}
export interface MakeOp {
  path: string;
  /** EntryKind: 1 file, 2 directory, 4 FIFO, 5 socket, 6 character and 7 block device. */
  kind: number;
  mode: number;
  /** Device numbers of a device node (0 otherwise). */
  rdevMajor: number;
  rdevMinor: number;
}
export interface PathOp {
  path: string;
}
export interface RenameOp {
  from: string;
  to: string;
}
export interface TruncateOp {
  path: string;
  size: number;
}
export interface SetModeOp {
  path: string;
  mode: number;
}
export interface AttributesValue {
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  xattrs: { name: string; value: Uint8Array }[];
}
export interface SetAttributesOp {
  /** "" is the root of a tree replica. */
  path: string;
  mode: number;
  attributes: AttributesValue | undefined;
}
export interface SymlinkOp {
  path: string;
  target: string;
}
export interface HardLinkOp {
  path: string;
  existing: string;
}
export interface MarkerOp {
  id: string;
  /** Consistency: 0 unspecified, 1 crash, 2 app, 3 best effort. */
  consistency: number;
  timeUnixMs: number;
  consistencyGroup: string;
}

export type JournalOp =
  | { $case: "write"; value: WriteOp }
  | { $case: "zero"; value: ZeroOp }
  | { $case: "make"; value: MakeOp }
  | { $case: "remove"; value: PathOp }
  | { $case: "rename"; value: RenameOp }
  | { $case: "truncate"; value: TruncateOp }
  | { $case: "setMode"; value: SetModeOp }
  | { $case: "symlink"; value: SymlinkOp }
  | { $case: "hardLink"; value: HardLinkOp }
  | { $case: "marker"; value: MarkerOp }
  | { $case: "setAttributes"; value: SetAttributesOp };

export interface JournalChange {
  seq: number;
  op: JournalOp | undefined;
}

export const entryKindFile = 1;
export const entryKindDirectory = 2;

/**
 * The integration seam: the master target calls `beforeChange` before each change touches the
 * replica and `sync` before it persists its applied seq. Same shape as the data path's
 * `ChangeJournal` (src/replicator/master-target/change-journal.ts), so `UndoJournal` plugs in.
 */
export interface ChangeJournal {
  beforeChange(change: JournalChange, replicaRoot: string): Promise<void>;
  /**
   * Optional: journals, with one fdatasync, what the leading run of `changes` that only change
   * file content (writes, zero ranges, truncates) will destroy; `beforeChange` of those seqs then
   * has nothing left to do. Called before any of them touches the replica.
   */
  prepare?(changes: readonly JournalChange[], replicaRoot: string): Promise<void>;
  sync(): Promise<void>;
}

/** Ops a journal can prepare in one run: each changes only its own file's content and size. */
export function changesContentOnly(op: JournalOp | undefined): boolean {
  return op?.$case === "write" || op?.$case === "zero" || op?.$case === "truncate";
}

/** Ops that change which entry a path names: they wait while a live hydration copies the replica. */
export function changesNamespace(op: JournalOp): boolean {
  return op.$case === "remove" || op.$case === "rename" || op.$case === "symlink" || op.$case === "hardLink";
}
