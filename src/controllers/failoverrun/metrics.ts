// ksr_failover_runs_total{type,result}, ksr_failover_rto_seconds and
// ksr_failover_step_duration_seconds{action}, in the manager's registry.
import { Counter, Histogram, type Registry } from "prom-client";
import type { FailoverRunType } from "../../api/types.js";
import type { Measurements } from "./machine.js";

export class FailoverMetrics {
  private readonly runs: Counter<"type" | "result">;
  private readonly rto: Histogram<"type">;
  private readonly steps: Histogram<"action">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.runs = new Counter({
      name: "ksr_failover_runs_total",
      help: "FailoverRuns that reached a final phase, by type and phase",
      labelNames: ["type", "result"],
      registers,
    });
    this.rto = new Histogram({
      name: "ksr_failover_rto_seconds",
      help: "Measured recovery time of a run: from its start until its last machine was up",
      labelNames: ["type"],
      buckets: [10, 30, 60, 120, 300, 600, 1800, 3600],
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
    if (measurements.rtoSeconds !== undefined) this.rto.observe({ type }, measurements.rtoSeconds);
  }
}
