// How a tree agent learns what changed (DESIGN.md §5): a capture strategy behind one small
// interface. Tree scan (inotify plus the block-hash manifest) works everywhere; write ranges
// (fanotify pre-content events, write-ranges.ts) see each write's range and can hold writes for
// a crash-consistent cut. The agent reports which one it runs and why.
import type { Signal } from "../signal.js";
import type { CutFreeze } from "./cut-freeze.js";
import type { Manifest } from "./manifest.js";
import type { ContentTracking, TreeSource } from "./tree-source.js";
import { TreeWatcher } from "./watcher.js";
import { WriteRangeCapture } from "./write-ranges.js";

export const captureStrategies = ["tree-scan", "write-ranges"] as const;
export type CaptureStrategyName = (typeof captureStrategies)[number];
/** What the operator asks for: a strategy, or the best one this machine offers. */
export type CaptureRequest = CaptureStrategyName | "auto";

export interface CaptureChoice {
  strategy: CaptureStrategyName;
  /** Why this strategy runs (for an automatic choice that fell back: why the better one could not). */
  reason: string;
}

/** What a capture round did: nothing pending, changes sent, or notifications lost (verify everything). */
export type RoundOutcome = "idle" | "sent" | "lost";

export interface Capture {
  readonly choice: CaptureChoice;
  /** Notified when changes are waiting. */
  readonly changed: Signal;
  readonly pending: boolean;
  /** Observation starts here, before the first scan, so nothing changed during it goes unnoticed. */
  start(): Promise<void>;
  /**
   * Sends what changed since the last round, through sources the agent makes (with this
   * capture's tracking or none). With `freeze` (a cut, write ranges), file content is read into
   * it instead of being sent; the namespace changes are sent.
   */
  round(source: (tracking?: ContentTracking) => TreeSource, freeze?: CutFreeze): Promise<RoundOutcome>;
  /**
   * Drops what is pending: a verifying scan is about to cover it. With `keepRanges` (a scan of
   * the namespace only, which hands changed files back to the ranges) recorded ranges stay.
   */
  discard(keepRanges?: boolean): void;
  /**
   * Set when the content of known files is tracked without reading them (write ranges): the
   * periodic verifying scan then only checks the namespace and hands changed files to it.
   */
  readonly tracking: ContentTracking | undefined;
  /**
   * Changes a write hold does not stop are waiting (namespace operations, files mapped shared):
   * a cut with any is not quiet.
   */
  readonly unheldChangesPending: boolean;
  /** Holds new writes for at most limitMs; resolves true when no write was in flight. Undefined: cannot hold. */
  holdWrites?(limitMs: number): Promise<boolean>;
  /** Lets held writes go; true when they were held all along (the hold did not expire or break). */
  releaseWrites?(): Promise<boolean>;
  close(): void;
}

/** Tree scan: inotify tells which paths changed; each changed file is read and block-hashed whole. */
export class TreeScanCapture implements Capture {
  readonly tracking = undefined;
  private readonly watcher: TreeWatcher;

  constructor(
    root: string,
    readonly choice: CaptureChoice,
  ) {
    this.watcher = new TreeWatcher(root);
  }

  get changed(): Signal {
    return this.watcher.changed;
  }

  get pending(): boolean {
    return this.watcher.pending;
  }

  get unheldChangesPending(): boolean {
    return this.watcher.pending;
  }

  start(): Promise<void> {
    this.watcher.start();
    return Promise.resolve();
  }

  round(source: (tracking?: ContentTracking) => TreeSource): Promise<RoundOutcome> {
    return watcherRound(this.watcher, source());
  }

  discard(): void {
    this.watcher.take();
  }

  close(): void {
    this.watcher.close();
  }
}

/** One round of notified paths; shared by tree scan and the namespace half of write ranges. */
export async function watcherRound(watcher: TreeWatcher, source: TreeSource): Promise<RoundOutcome> {
  const { paths, overflowed } = watcher.take();
  if (overflowed) return "lost";
  if (paths.length === 0) return "idle";
  await source.syncPaths(paths);
  return "sent";
}

export interface CaptureLog {
  info(message: string): void;
  warn(message: string): void;
}

/**
 * Starts the capture asked for. "auto" tries write ranges and falls back to tree scan, saying
 * why; an explicit "write-ranges" that cannot run is an error naming what is missing.
 */
export async function startCapture(
  requested: CaptureRequest,
  root: string,
  manifest: Manifest,
  options: { watchdogMs: number; log: CaptureLog },
): Promise<Capture> {
  let capture: Capture;
  if (requested === "tree-scan") {
    capture = new TreeScanCapture(root, { strategy: "tree-scan", reason: "chosen with --capture tree-scan" });
  } else {
    const ranges = new WriteRangeCapture(root, manifest, options);
    try {
      await ranges.start();
      capture = ranges;
    } catch (error) {
      ranges.close();
      const why = (error as Error).message;
      if (requested === "write-ranges") throw new Error(`--capture write-ranges cannot run: ${why}`);
      capture = new TreeScanCapture(root, { strategy: "tree-scan", reason: `write ranges unavailable: ${why}` });
    }
  }
  if (capture.choice.strategy === "tree-scan") await capture.start();
  options.log[requested === "auto" && capture.choice.strategy === "tree-scan" ? "warn" : "info"](
    `capture: ${capture.choice.strategy} (${capture.choice.reason})`,
  );
  return capture;
}
