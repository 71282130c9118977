// The operator's protection metrics, labelled by namespace and machine, in the
// manager's registry: /metrics serves them next to controller-runtime's. The
// ProtectedMachine controller sets them from what the replicators report.
import { Counter, Gauge, type Registry } from "prom-client";

const machineLabels = ["namespace", "machine"] as const;
type MachineLabel = (typeof machineLabels)[number];

/** ksr_machine_health values. */
export const healthValue = { Healthy: 0, Warning: 1, Critical: 2 } as const;

export interface MachineRef {
  namespace: string;
  machine: string;
}

export class MachineMetrics {
  /** now − source time of the newest change durable at the recovery site (DESIGN.md §5). */
  readonly rpoSeconds: Gauge<MachineLabel>;
  /** The policy's rpoThreshold beside it, so alerts compare the two instead of reading health (which has other causes). */
  readonly rpoThresholdSeconds: Gauge<MachineLabel>;
  /** Bytes captured at the source and not yet durable at the master target. */
  readonly pendingBytes: Gauge<MachineLabel>;
  /** Bytes made durable at the master target. */
  readonly replicatedBytes: Counter<MachineLabel>;
  /** Recovery points the journal holds. */
  readonly recoveryPoints: Gauge<MachineLabel>;
  /** 0 Healthy, 1 Warning, 2 Critical (against the policy's rpoThreshold). */
  readonly health: Gauge<MachineLabel>;

  /** Bytes the machine's journal holds at the recovery site (segments and entries moved out of the replica). */
  readonly journalUsedBytes: Gauge<MachineLabel>;
  /** Size of the journal volume holding it (shared by the policy's machines of one namespace). */
  readonly journalCapacityBytes: Gauge<MachineLabel>;
  /** Age of the oldest recovery point every volume still has. */
  readonly journalOldestPointAgeSeconds: Gauge<MachineLabel>;
  /** The retention window the master target keeps points for. */
  readonly journalRetentionSeconds: Gauge<MachineLabel>;

  constructor(registry: Registry) {
    const registers = [registry];
    const gauge = (name: string, help: string) => new Gauge({ name, help, labelNames: machineLabels, registers });
    this.rpoSeconds = gauge("ksr_machine_rpo_seconds", "Current recovery point objective of a protected machine");
    this.rpoThresholdSeconds = gauge(
      "ksr_machine_rpo_threshold_seconds",
      "The rpoThreshold of a machine's policy, exported while its RPO is (Protected, Resynchronizing)",
    );
    this.pendingBytes = gauge("ksr_machine_pending_bytes", "Bytes changed at the source not yet durable at the target");
    this.replicatedBytes = new Counter({
      name: "ksr_replicated_bytes_total",
      help: "Bytes of a machine made durable at the recovery site",
      labelNames: machineLabels,
      registers,
    });
    this.recoveryPoints = gauge("ksr_recovery_points", "Recovery points held in a machine's journal");
    this.health = gauge("ksr_machine_health", "Protection health of a machine: 0 Healthy, 1 Warning, 2 Critical");
    this.journalUsedBytes = gauge("ksr_journal_used_bytes", "Bytes of a machine's recovery-point journal");
    this.journalCapacityBytes = gauge(
      "ksr_journal_capacity_bytes",
      "Capacity of the journal volume holding a machine's journal (shared by its policy's machines of a namespace)",
    );
    this.journalOldestPointAgeSeconds = gauge(
      "ksr_journal_oldest_point_age_seconds",
      "Age of a machine's oldest recovery point",
    );
    this.journalRetentionSeconds = gauge(
      "ksr_journal_retention_seconds",
      "Retention window of a machine's recovery points",
    );
  }

  /** Drops every series of a machine (after it is deleted), so /metrics does not report it forever. */
  forget(ref: MachineRef): void {
    const labels = { namespace: ref.namespace, machine: ref.machine };
    for (const metric of [
      this.rpoSeconds,
      this.rpoThresholdSeconds,
      this.pendingBytes,
      this.replicatedBytes,
      this.recoveryPoints,
      this.health,
      this.journalUsedBytes,
      this.journalCapacityBytes,
      this.journalOldestPointAgeSeconds,
      this.journalRetentionSeconds,
    ])
      metric.remove(labels);
  }
}
