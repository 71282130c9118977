// Names and labels of what the ProtectedMachine controller creates. Names are derived, never
// stored, so a restarted operator finds its objects again; long inputs are shortened with a hash.
import { createHash } from "node:crypto";

export const siteLabel = "topology.dr.ksr.io/site";
export const machineLabel = "dr.ksr.io/machine";
export const machineNamespaceLabel = "dr.ksr.io/machine-namespace";
export const componentLabel = "app.kubernetes.io/component";
export const policyLabel = "dr.ksr.io/policy";
export const replicatorLabel = "dr.ksr.io/replicator";
export const finalizer = "dr.ksr.io/protection";
/** Set on a machine by `kubectl dr resync`; the controller starts a resync when it changes. */
export const resyncRequestAnnotation = "dr.ksr.io/resync-requested-at";
/** Port every replicator serves its gRPC services on. */
export const replicatorPort = 7443;
/** First Barrier port of an agent pod: one per agent container. */
export const barrierBasePort = 7500;

export type Component = "agent" | "process-server" | "master-target";

function digest(...parts: string[]): string {
  return createHash("sha256").update(parts.join("\u0000")).digest("hex").slice(0, 8);
}

/** `value` when it fits `max` characters, otherwise a prefix and a hash of the whole, so names stay unique. */
export function shorten(value: string, max: number): string {
  if (value.length <= max) return value;
  return `${value.slice(0, max - 9).replace(/[-.]+$/, "")}-${digest(value)}`;
}

/**
 * The change stream of one claim. Claim names are unique in the namespace, and a process server and
 * a master target each serve one policy, so one namespace. The id is the agent certificate's common
 * name (`ksr-agent:<id>`), which X.509 limits to 64 characters.
 */
export function streamId(claimName: string): string {
  return shorten(claimName, 54);
}

/** Labels on everything a machine owns or shares. */
export function commonLabels(component: Component): Record<string, string> {
  return {
    "app.kubernetes.io/name": "kube-site-recovery",
    "app.kubernetes.io/managed-by": "kube-site-recovery",
    "app.kubernetes.io/part-of": "kube-site-recovery",
    [componentLabel]: component,
  };
}

/** The process server of a policy's machines in one source site that replicate to one master target. */
export function processServerName(policy: string, sourceSite: string, targetNamespace: string): string {
  return shorten(`ksr-ps-${policy}-${sourceSite}`, 40) + `-${digest(policy, sourceSite, targetNamespace)}`;
}

/** The master target of a policy's machines (from one namespace) recovered into one namespace. */
export function masterTargetName(policy: string, sourceNamespace: string, targetSite: string): string {
  return shorten(`ksr-mt-${policy}`, 40) + `-${digest(policy, sourceNamespace, targetSite)}`;
}

export function agentName(podName: string): string {
  return shorten(`ksr-agent-${podName}`, 63);
}

/** The agent's state claim (its manifests), kept while the pod it follows exists. */
export function agentStateClaimName(podName: string): string {
  return shorten(`ksr-agent-state-${podName}`, 63);
}

export const cacheClaimName = (processServer: string) => `${processServer}-cache`;
export const journalClaimName = (masterTarget: string) => `${masterTarget}-journal`;
export const keySecretName = (masterTarget: string) => `${masterTarget}-key`;
export const tlsSecretName = (owner: string) => `${owner}-tls`;
export const agentTlsSecretName = (machineId: string) => shorten(`ksr-agent-${machineId}`, 59) + "-tls";
export const hooksConfigMapName = (machine: string) => shorten(`ksr-hooks-${machine}`, 63);
