// ksr_failover_runs_total{type,result}, ksr_failover_rto_seconds (a histogram),
// ksr_failover_last_rto_seconds{type} and ksr_failover_step_duration_seconds{action},
// in the manager's registry.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { FailoverRunPhase, FailoverRunType } from "../../api/types.js";
import type { Measurements } from "./machine.js";

/** The labels of ksr_failover_runs_total, each exported from the start. */
export const RUN_TYPES: readonly FailoverRunType[] = ["Test", "Planned", "Unplanned", "Reprotect"];
export const RUN_RESULTS: readonly FailoverRunPhase[] = ["Succeeded", "Failed", "Committed", "CleanedUp"];

export class FailoverMetrics {
  private readonly runs: Counter<"type" | "result">;
  private readonly rto: Histogram<"type">;
  private readonly lastRto: Gauge<"type">;
  private readonly steps: Histogram<"action">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.runs = new Counter({
      name: "ksr_failover_runs_total",
      help: "FailoverRuns that reached a final phase, by type and phase",
      labelNames: ["type", "result"],
      registers,
    });
    // A counter born at 1 has no earlier sample, so increase() over the dashboard's range would miss
    // the first run of each kind: every series starts at 0 instead.
    for (const type of RUN_TYPES) for (const result of RUN_RESULTS) this.runs.inc({ type, result }, 0);
    this.rto = new Histogram({
      name: "ksr_failover_rto_seconds",
      help: "Measured recovery time of a run: from its start until its last machine was up",
      labelNames: ["type"],
      buckets: [10, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    });
    this.lastRto = new Gauge({
      name: "ksr_failover_last_rto_seconds",
      help: "Measured recovery time of the latest run of each type that measured one",
      labelNames: ["type"],
      registers,
    });
    this.steps = new Histogram({
      name: "ksr_failover_step_duration_seconds",
      help: "How long the steps of FailoverRuns took, by action",
      labelNames: ["action"],
      buckets: [1, 5, 15, 30, 60, 300, 900, 3600],
      registers,
    });
  }

  observe(type: FailoverRunType, measurements: Measurements): void {
    if (measurements.stepEnded !== undefined)
      this.steps.observe({ action: measurements.stepEnded.action }, measurements.stepEnded.seconds);
    if (measurements.runEnded !== undefined) this.runs.inc({ type, result: measurements.runEnded.result });
    if (measurements.rtoSeconds !== undefined) {
      this.rto.observe({ type }, measurements.rtoSeconds);
      this.lastRto.set({ type }, measurements.rtoSeconds);
    }
  }
}
