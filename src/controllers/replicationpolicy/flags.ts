// A policy as replicator command-line flags, for the ProtectedMachine
// controller to put into the replicators' pod templates.
//
// A change reaches running replicators by a restart that resumes, not by a
// resync: the flags' hash goes into the pod template (annotation
// dr.ksr.io/policy-hash), so a changed cadence, retention, compression or
// bandwidth limit rolls the replicator pods; the agent resumes from its
// manifest, the process server from its durable cache and the master target
// from its applied sequence numbers, so nothing is copied again.
import { createHash } from "node:crypto";
import type { ReplicationPolicySpec } from "../../api/types.js";
import { parseByteSize } from "../../replicator/process-server/bandwidth.js";

export const policyHashAnnotation = "dr.ksr.io/policy-hash";

export interface ReplicatorFlags {
  agent: string[];
  processServer: string[];
  masterTarget: string[];
  /** Changes whenever any flag above changes: put it on the pod templates. */
  hash: string;
}

const goDurationPart = /(\d+)(ms|s|m|h)/g;
const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A Go-style duration as the API admits it ("1h30m", "90s"), in milliseconds. */
export function policyDurationMs(value: string, field: string): number {
  if (!/^(\d+(ms|s|m|h))+$/.test(value))
    throw new Error(`${field} "${value}" is not a duration such as 30s, 5m or 1h30m`);
  let total = 0;
  for (const [, amount, unit] of value.matchAll(goDurationPart)) total += Number(amount) * (unitMs[unit ?? ""] ?? 0);
  return total;
}

/** The replicators' duration flags take one unit; whole seconds cover every policy bound (≥ 30 s). */
const seconds = (value: string, field: string) => `${Math.round(policyDurationMs(value, field) / 1000)}s`;

export function replicatorFlags(spec: ReplicationPolicySpec): ReplicatorFlags {
  const agent = ["--crash-point-interval", seconds(spec.crashConsistentFrequency, "crashConsistentFrequency")];
  if (spec.appConsistentFrequency !== undefined)
    agent.push("--app-point-interval", seconds(spec.appConsistentFrequency, "appConsistentFrequency"));
  const processServer = ["--compression", spec.compression];
  if (spec.bandwidthLimit !== undefined)
    processServer.push("--bandwidth-limit", String(parseByteSize(spec.bandwidthLimit, "bandwidthLimit")));
  const masterTarget = ["--retention", seconds(spec.recoveryPointRetention, "recoveryPointRetention")];
  const hash = createHash("sha256")
    .update(JSON.stringify({ agent, processServer, masterTarget }))
    .digest("hex")
    .slice(0, 16);
  return { agent, processServer, masterTarget, hash };
}
