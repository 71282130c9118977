// The seam where the undo journal of recovery points (issue 7) hooks into the apply path.
import type { Change } from "../../gen/ksr/replication/v1/replication.js";

/**
 * Called by the applier before each change touches the replica. An implementation preserves
 * whatever the change is about to destroy (overwritten blocks, truncated tails, removed or
 * renamed-over entries) with the change's seq, and records markers as recovery points.
 * `sync` runs before the applied seq is persisted, so the journal is never behind the replica.
 */
export interface ChangeJournal {
  beforeChange(change: Change, replicaRoot: string): Promise<void>;
  /** Journals the leading run of content-only changes at once (one fdatasync); see journal/change.ts. */
  prepare?(changes: readonly Change[], replicaRoot: string): Promise<void>;
  sync(): Promise<void>;
}

/** No journal: the replica keeps only the latest state. */
export const noJournal: ChangeJournal = {
  beforeChange: () => Promise.resolve(),
  sync: () => Promise.resolve(),
};
