// A ReplicationPolicy as the replicators' flags: cadences for the agent, compression and
// bandwidth for the process server, retention for the master target.
import type { ReplicationPolicySpec } from "../../api/types.js";

const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds of an API duration ("30s", "1h30m", "250ms"); the CRD's pattern has checked its shape. */
export function apiDurationMs(value: string): number {
  let total = 0;
  for (const [, amount, unit] of value.matchAll(/(\d+)(ms|s|m|h)/g))
    total += Number(amount) * (unitMs[unit ?? ""] ?? 0);
  return total;
}

/** The replicators' duration flags take one unit. */
const seconds = (value: string) => `${Math.max(1, Math.round(apiDurationMs(value) / 1000))}s`;

export interface ReplicatorFlags {
  agent: string[];
  processServer: string[];
  masterTarget: string[];
}

export function replicatorFlags(policy: ReplicationPolicySpec, hasHooks: boolean): ReplicatorFlags {
  const agent = ["--crash-point-interval", seconds(policy.crashConsistentFrequency)];
  // Without hooks nothing is quiesced, so the agent refuses an app cadence (the machine's status says so).
  if (hasHooks)
    agent.push(
      "--app-point-interval",
      policy.appConsistentFrequency === undefined ? "off" : seconds(policy.appConsistentFrequency),
    );
  return {
    agent,
    processServer: [
      "--compression",
      policy.compression,
      ...(policy.bandwidthLimit === undefined ? [] : ["--bandwidth-limit", policy.bandwidthLimit]),
    ],
    masterTarget: ["--retention", seconds(policy.recoveryPointRetention)],
  };
}
