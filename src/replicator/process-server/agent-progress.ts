// What the process server knows about an agent's progress beyond the sequence numbers: its latest
// report and the watermarks that turn the master target's applied seq into a source time (the
// RPO of DESIGN.md §5). Kept in memory: an agent reports about once a second, so a restarted
// process server knows again within a second.
import type { AgentReport } from "../../gen/ksr/replication/v1/replication.js";

interface Watermark {
  observedUnixMs: number;
  coveredSeq: number;
}

/** Watermarks kept while the master target lags; beyond it the oldest are merged away. */
const maxWatermarks = 512;

export class AgentProgress {
  latest: AgentReport | undefined;
  latestAt = 0;
  receivedBytes = 0;
  private watermarks: Watermark[] = [];
  private recoveryTime = 0;

  record(report: AgentReport, now: number): void {
    this.latest = report;
    this.latestAt = now;
    const last = this.watermarks.at(-1);
    if (last !== undefined && report.observedUnixMs <= last.observedUnixMs) return;
    if (last !== undefined && report.coveredSeq === last.coveredSeq) {
      // Nothing new was sent since: the same seq now covers a later time (an idle, caught-up agent).
      last.observedUnixMs = report.observedUnixMs;
      return;
    }
    this.watermarks.push({ observedUnixMs: report.observedUnixMs, coveredSeq: report.coveredSeq });
    // Dropping the oldest only makes the RPO look older than it is, never younger.
    if (this.watermarks.length > maxWatermarks) this.watermarks.splice(0, this.watermarks.length - maxWatermarks);
  }

  /** The newest source time whose changes are all applied when the master target has appliedSeq. */
  recoveryTimeAt(appliedSeq: number): number {
    const covered = this.watermarks.filter((mark) => mark.coveredSeq <= appliedSeq);
    const newest = covered.at(-1);
    if (newest !== undefined) {
      this.recoveryTime = Math.max(this.recoveryTime, newest.observedUnixMs);
      // The newest covered watermark stays: an idle agent moves its time forward (see record()).
      this.watermarks.splice(0, covered.length - 1);
    }
    return this.recoveryTime;
  }
}
