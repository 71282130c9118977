// Prometheus metrics under controller-runtime's names, so dashboards and alerts
// written for Go operators work unchanged. One registry per manager.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { QueueObserver } from "./workqueue.js";

const reconcileBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const queueBuckets = [0.0001, 0.001, 0.01, 0.1, 1, 10, 100, 1000];

export type ReconcileResult = "success" | "error" | "requeue" | "requeue_after";

const controllerLabel = ["controller"] as const;
const queueLabels = ["name", "controller"] as const;

export class RuntimeMetrics {
  readonly registry = new Registry();
  readonly reconcileTotal = this.counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller",
    ["controller", "result"] as const,
  );
  readonly reconcileErrors = this.counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller",
    controllerLabel,
  );
  readonly terminalReconcileErrors = this.counter(
    "controller_runtime_terminal_reconcile_errors_total",
    "Total number of terminal reconciliation errors per controller",
    controllerLabel,
  );
  readonly reconcileTime = this.histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    controllerLabel,
    reconcileBuckets,
  );
  readonly maxConcurrentReconciles = this.gauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller",
    controllerLabel,
  );
  readonly activeWorkers = this.gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller",
    controllerLabel,
  );
  readonly queueDepth = this.gauge("workqueue_depth", "Current depth of workqueue", queueLabels);
  readonly queueAdds = this.counter("workqueue_adds_total", "Total number of adds handled by workqueue", queueLabels);
  readonly queueDuration = this.histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested",
    queueLabels,
    queueBuckets,
  );
  readonly queueRetries = this.counter(
    "workqueue_retries_total",
    "Total number of retries handled by workqueue",
    queueLabels,
  );
  readonly leaderStatus = this.gauge(
    "leader_election_master_status",
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master",
    ["name"] as const,
  );

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  private counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge<L extends string>(name: string, help: string, labelNames: readonly L[]): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  private histogram<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    buckets: number[],
  ): Histogram<L> {
    return new Histogram({ name, help, labelNames, buckets, registers: [this.registry] });
  }

  queueObserver(controller: string): QueueObserver {
    const labels = { name: controller, controller };
    return {
      added: () => {
        this.queueAdds.inc(labels);
      },
      depth: (depth) => {
        this.queueDepth.set(labels, depth);
      },
      retried: () => {
        this.queueRetries.inc(labels);
      },
      waited: (seconds) => {
        this.queueDuration.observe(labels, seconds);
      },
    };
  }
}
