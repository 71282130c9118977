// Everything the process server keeps per machine: the frame cache, the resync flags and the
// forwarding state towards the master target.
import { join } from "node:path";
import type { CaptureInfo } from "../../gen/ksr/replication/v1/replication.js";
import { DurableCounter } from "../durable-counter.js";
import { Signal } from "../signal.js";
import { AgentProgress } from "./agent-progress.js";
import { GroupCommitter, MachineCache } from "./frame-cache.js";

export class MachineState {
  /** Last applied seq the master target reported; undefined until it answered once. */
  appliedSeq: number | undefined;
  masterTargetReachable = false;
  /** The capture strategy the agent last reported (Open), for Control.Status. */
  capture: CaptureInfo | undefined;
  /** Bytes accepted from agents and not yet durable: over the limit, agents are paused. */
  uncommittedBytes = 0;
  /** Settles when everything queued so far is durable. */
  lastDurable: Promise<void> = Promise.resolve();
  readonly changed = new Signal();
  readonly progress = new AgentProgress();

  private constructor(
    readonly machineId: string,
    readonly cache: MachineCache,
    /** The first seq after a gap the master target must accept (set when changes were dropped). */
    readonly gapAt: DurableCounter,
    /** 1 while the agent must resync before its changes are accepted again. */
    readonly resyncRequired: DurableCounter,
    /** 1 while the operator holds resyncs (the policy's window is closed, or its mode is Manual). */
    readonly resyncHold: DurableCounter,
  ) {}

  static async open(cacheDir: string, machineId: string, committer: GroupCommitter): Promise<MachineState> {
    const dir = join(cacheDir, machineId);
    const cache = await MachineCache.open(dir, machineId, committer);
    return new MachineState(
      machineId,
      cache,
      await DurableCounter.open(join(dir, "gap-at")),
      await DurableCounter.open(join(dir, "resync-required")),
      await DurableCounter.open(join(dir, "resync-hold")),
    );
  }

  get needsResync(): boolean {
    return this.resyncRequired.value === 1;
  }

  get resyncHeld(): boolean {
    return this.resyncHold.value === 1;
  }

  /** A required resync the agent must not start yet: it keeps tracking changes and asks again. */
  get resyncDeferred(): boolean {
    return this.needsResync && this.resyncHeld;
  }

  /** Drops the cache and orders a resync: the master target will accept the gap that follows. */
  async dropForResync(): Promise<void> {
    await this.lastDurable.catch(() => undefined);
    await this.cache.dropAll();
    await this.gapAt.set(this.cache.lastAcceptedSeq + 1);
    await this.resyncRequired.set(1);
    this.changed.notify();
  }

  async close(): Promise<void> {
    this.changed.notify();
    await this.cache.close();
    await this.gapAt.close();
    await this.resyncRequired.close();
    await this.resyncHold.close();
  }
}
