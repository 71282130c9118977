// Node objects for the two sites and their heartbeats: a Lease in
// kube-node-lease renewed every 10 s and a fresh Ready condition, so the node
// lifecycle controller keeps them schedulable and untainted.
import { cpus, hostname, release, totalmem } from "node:os";
import { readFileSync } from "node:fs";
import type { CoordinationV1Api, CoreV1Api, V1Lease, V1Node, V1NodeCondition } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { version } from "../../cli/version.js";
import { nodeAddress } from "./addresses.js";
import type { NetworkCondition } from "./network.js";
import { describeError, isAlreadyExists, isNotFound, mergePatch } from "./kube.js";
import { hostnameLabel, siteLabel, type LocalNodeIdentity } from "./layout.js";

export const leaseNamespace = "kube-node-lease";
export const leaseDurationSeconds = 40;
export const heartbeatIntervalMs = 10_000;
/** True when pods only have loopback addresses (no network namespaces here), which EndpointSlices refuse. */
export const loopbackPodNetworkCondition = "LoopbackPodNetwork";
/** The Kubernetes release the control plane runs; reported as the kubelet version. */
const kubeletVersion = "v1.34.4";

/** What the nodes report about this machine. */
export interface NodeFacts {
  capacity: NodeCapacity;
  network: NetworkCondition;
  /** Node name → port of its kubelet API (published as daemonEndpoints.kubeletEndpoint). */
  kubeletPorts?: Record<string, number>;
}

export interface NodeCapacity {
  cpu: string;
  memory: string;
  pods: string;
  "ephemeral-storage": string;
}

/** Each node reports the whole machine: the two sites share it, and the scheduler only needs room to place pods. */
export function machineCapacity(): NodeCapacity {
  return {
    cpu: String(cpus().length),
    memory: `${Math.floor(totalmem() / 1024)}Ki`,
    pods: "110",
    "ephemeral-storage": "100Gi",
  };
}

function readMachineId(): string {
  try {
    return readFileSync("/etc/machine-id", "utf8").trim();
  } catch {
    return hostname();
  }
}

function conditions(now: Date, previous: V1NodeCondition[] | undefined, network: NetworkCondition): V1NodeCondition[] {
  const since = (type: string, status: string) => {
    const before = previous?.find((c) => c.type === type);
    return before?.status === status && before.lastTransitionTime !== undefined ? before.lastTransitionTime : now;
  };
  const pressure = (type: string, reason: string, message: string): V1NodeCondition => ({
    type,
    status: "False",
    reason,
    message,
    lastHeartbeatTime: now,
    lastTransitionTime: since(type, "False"),
  });
  // Not NetworkUnavailable: the node lifecycle controller taints a node with NetworkUnavailable=True
  // NoSchedule, and the loopback fallback is meant to keep running pods.
  const loopbackStatus = network.available ? "False" : "True";
  return [
    {
      type: loopbackPodNetworkCondition,
      status: loopbackStatus,
      reason: network.reason,
      message: network.message,
      lastHeartbeatTime: now,
      lastTransitionTime: since(loopbackPodNetworkCondition, loopbackStatus),
    },
    pressure("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    pressure("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    pressure("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    {
      type: "Ready",
      status: "True",
      reason: "KubeletReady",
      message: "ksr local node agent is posting ready status",
      lastHeartbeatTime: now,
      lastTransitionTime: since("Ready", "True"),
    },
  ];
}

export function nodeObject(identity: LocalNodeIdentity, facts: NodeFacts, now: Date, previous?: V1Node): V1Node {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: identity.name,
      labels: {
        [hostnameLabel]: identity.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": process.arch === "x64" ? "amd64" : process.arch,
        [siteLabel]: identity.site,
        "node.kubernetes.io/instance-type": "ksr-local",
      },
    },
    spec: {},
    status: {
      capacity: { ...facts.capacity },
      allocatable: { ...facts.capacity },
      conditions: conditions(now, previous?.status?.conditions, facts.network),
      addresses: [
        { type: "InternalIP", address: nodeAddress },
        { type: "Hostname", address: identity.name },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: facts.kubeletPorts?.[identity.name] ?? 0 } },
      nodeInfo: {
        machineID: readMachineId(),
        systemUUID: readMachineId(),
        bootID: readBootId(),
        kernelVersion: release(),
        osImage: "ksr local node",
        containerRuntimeVersion: `ksr-local://${version}`,
        kubeletVersion,
        kubeProxyVersion: "",
        operatingSystem: "linux",
        architecture: process.arch === "x64" ? "amd64" : process.arch,
      },
    },
  };
}

function readBootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}

/** Creates the node, or brings an existing one (from an earlier `up`) back to our labels and status. */
export async function registerNode(core: CoreV1Api, identity: LocalNodeIdentity, facts: NodeFacts): Promise<void> {
  const now = new Date();
  const body = nodeObject(identity, facts, now);
  try {
    await core.createNode({ body });
    return;
  } catch (error) {
    if (!isAlreadyExists(error)) throw error;
  }
  const existing = await core.readNode({ name: identity.name });
  await core.patchNode({ name: identity.name, body: { metadata: { labels: body.metadata?.labels } } }, mergePatch);
  await core.patchNodeStatus(
    { name: identity.name, body: { status: nodeObject(identity, facts, now, existing).status } },
    mergePatch,
  );
}

/** Lease times are MicroTime: the apiserver insists on six fractional digits, which Date.toISOString lacks. */
export function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

function leaseObject(identity: LocalNodeIdentity, nodeUid: string | undefined): V1Lease {
  return {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: {
      name: identity.name,
      namespace: leaseNamespace,
      ...(nodeUid === undefined
        ? {}
        : { ownerReferences: [{ apiVersion: "v1", kind: "Node", name: identity.name, uid: nodeUid }] }),
    },
    spec: { holderIdentity: identity.name, leaseDurationSeconds },
  };
}

/** Renews the node's Lease (merge patch, so renewTime goes out as a MicroTime string); creates it when missing. */
export async function renewLease(
  coordination: CoordinationV1Api,
  core: CoreV1Api,
  identity: LocalNodeIdentity,
): Promise<void> {
  const body = { spec: { holderIdentity: identity.name, leaseDurationSeconds, renewTime: microTime(new Date()) } };
  try {
    await coordination.patchNamespacedLease({ name: identity.name, namespace: leaseNamespace, body }, mergePatch);
  } catch (error) {
    if (!isNotFound(error)) throw error;
    const node = await core.readNode({ name: identity.name });
    await coordination.createNamespacedLease({
      namespace: leaseNamespace,
      body: leaseObject(identity, node.metadata?.uid),
    });
    await coordination.patchNamespacedLease({ name: identity.name, namespace: leaseNamespace, body }, mergePatch);
  }
}

async function postStatus(core: CoreV1Api, identity: LocalNodeIdentity, facts: NodeFacts): Promise<void> {
  const existing = await core.readNode({ name: identity.name }).catch((error: unknown) => {
    if (isNotFound(error)) return undefined;
    throw error;
  });
  if (existing === undefined) {
    await registerNode(core, identity, facts);
    return;
  }
  const status = nodeObject(identity, facts, new Date(), existing).status;
  await core.patchNodeStatus({ name: identity.name, body: { status: { conditions: status?.conditions } } }, mergePatch);
}

/** Registers the nodes and keeps their Leases and Ready conditions fresh until stopped. */
export async function startHeartbeats(
  core: CoreV1Api,
  coordination: CoordinationV1Api,
  {
    nodes,
    network,
    kubeletPorts,
  }: { nodes: readonly LocalNodeIdentity[]; network: NetworkCondition; kubeletPorts?: Record<string, number> },
  log: Logger,
  onBeat: () => void,
): Promise<{ stop(): void }> {
  const facts: NodeFacts = {
    capacity: machineCapacity(),
    network,
    ...(kubeletPorts === undefined ? {} : { kubeletPorts }),
  };
  for (const identity of nodes) {
    await registerNode(core, identity, facts);
    await renewLease(coordination, core, identity);
  }
  onBeat();
  const beat = async () => {
    let healthy = true;
    for (const identity of nodes) {
      try {
        await renewLease(coordination, core, identity);
        await postStatus(core, identity, facts);
      } catch (error) {
        healthy = false;
        log.warn({ node: identity.name, error: describeError(error) }, "heartbeat failed");
      }
    }
    if (healthy) onBeat();
  };
  const timer = setInterval(() => void beat(), heartbeatIntervalMs);
  return {
    stop() {
      clearInterval(timer);
    },
  };
}
