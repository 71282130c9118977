// Pod networking with iproute2: one network namespace per pod, all attached to
// a bridge in the cluster's own "switch" namespace, which a veth joins to the
// root namespace (address .254). No default route anywhere, no forwarding: a
// pod reaches other pods of the cluster and the node's .254, nothing else.
// Everything is created and deleted by the cluster's own name prefix only.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Logger } from "pino";
import {
  AddressPool,
  choosePodSubnet,
  loopbackRange,
  networkNames,
  networksInUse,
  nodeAddress,
  podNamespaceName,
  podNetworkPlan,
  podRangeOctet,
  podSwitchPort,
  subnetRange,
  type PodNetworkPlan,
} from "./addresses.js";

const run = promisify(execFile);
const bridge = "br0";
const uplink = "uplink";
/** What pods dial for the apiserver (KUBERNETES_SERVICE_PORT), as in a cluster. */
export const apiServicePort = 443;

const toolDirs = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

function findIp(): string {
  const found = toolDirs.map((dir) => join(dir, "ip")).find((path) => existsSync(path));
  if (found === undefined)
    throw new Error("the local node's pod network needs ip from iproute2 (apt-get install iproute2)");
  return found;
}

async function ip(...args: string[]): Promise<string> {
  try {
    return (await run(findIp(), args, { encoding: "utf8" })).stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(
      `ip ${args.join(" ")}: ${stderr !== undefined && stderr !== "" ? stderr : (error as Error).message}`,
    );
  }
}

async function namespacesNamed(match: (name: string) => boolean): Promise<string[]> {
  // Lines read "NAME" or "NAME (id: N)".
  const listed = await ip("netns", "list");
  return listed
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name !== "" && match(name));
}

/** Where `ip netns add` mounts a named namespace. */
function namespacePath(name: string): string {
  return join("/run/netns", name);
}

async function interfaceExists(name: string): Promise<boolean> {
  return ip("link", "show", "dev", name).then(
    () => true,
    () => false,
  );
}

/**
 * Deletes the cluster's switch namespace, every pod namespace and the host
 * veth (its peer goes with it). Only names carrying this cluster's tag are
 * touched. Quietly does nothing where iproute2 is missing or not permitted.
 */
export async function removeClusterNetwork(clusterDir: string): Promise<void> {
  const names = networkNames(clusterDir);
  let namespaces: string[];
  try {
    namespaces = await namespacesNamed((n) => n === names.switchNamespace || n.startsWith(names.podNamespacePrefix));
  } catch {
    return;
  }
  for (const name of namespaces) await ip("netns", "delete", name).catch(() => undefined);
  if (await interfaceExists(names.hostInterface))
    await ip("link", "delete", names.hostInterface).catch(() => undefined);
}

/**
 * Chooses the cluster's pod subnet for `ksr local up`, after removing what a
 * crashed run of this cluster left behind; says why when there is none.
 */
export async function planPodNetwork(
  clusterDir: string,
  previous?: PodNetworkPlan,
): Promise<{ plan: PodNetworkPlan } | { problem: string }> {
  try {
    await removeClusterNetwork(clusterDir);
    const inUse = networksInUse(await ip("-4", "route"), await ip("-4", "-o", "addr"));
    return { plan: podNetworkPlan(clusterDir, choosePodSubnet(clusterDir, inUse, previous?.subnet)) };
  } catch (error) {
    return { problem: (error as Error).message };
  }
}

/** The address pods get, and the namespace their containers join (none: the node's own network). */
export interface PodSandboxNetwork {
  podIP: string;
  netnsPath?: string;
}

export interface NetworkCondition {
  available: boolean;
  reason: string;
  message: string;
}

export interface PodNetwork {
  /** The apiserver as pods reach it (KUBERNETES_SERVICE_HOST/PORT). */
  readonly apiServer: { host: string; port: number };
  readonly condition: NetworkCondition;
  attach(uid: string): Promise<PodSandboxNetwork>;
  detach(uid: string): Promise<void>;
  stop(): Promise<void>;
}

async function createSwitch(plan: PodNetworkPlan): Promise<void> {
  const sw = plan.switchNamespace;
  await ip("netns", "add", sw);
  await ip("-n", sw, "link", "add", bridge, "type", "bridge");
  await ip("-n", sw, "link", "set", bridge, "up");
  await ip("link", "add", plan.hostInterface, "type", "veth", "peer", "name", uplink, "netns", sw);
  await ip("-n", sw, "link", "set", uplink, "master", bridge, "up");
  await ip("addr", "add", `${plan.hostAddress}/24`, "dev", plan.hostInterface);
  await ip("link", "set", plan.hostInterface, "up");
}

interface Forwarder {
  close(): Promise<void>;
}

/** Relays pods' apiserver connections from the node's pod-network address to the apiserver on loopback. */
function startApiForwarder(host: string, apiPort: number, log: Logger): Promise<Forwarder> {
  const open = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect({ host: nodeAddress, port: apiPort });
    open.add(client);
    const close = () => {
      open.delete(client);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close).on("close", close);
    upstream.on("error", close).on("close", close);
    client.pipe(upstream).pipe(client);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port: apiServicePort, exclusive: true }, () => {
      server.off("error", reject);
      server.on("error", (error) => {
        log.warn({ error: error.message }, "apiserver forwarder error");
      });
      resolve({
        close: () =>
          new Promise((closed) => {
            server.close(() => {
              closed();
            });
            // Watches stay open for good: end them, or close() would wait for them.
            for (const socket of open) socket.destroy();
          }),
      });
    });
  });
}

class BridgedPodNetwork implements PodNetwork {
  private readonly addresses: AddressPool;
  readonly apiServer: { host: string; port: number };
  readonly condition: NetworkCondition;

  constructor(
    private readonly clusterDir: string,
    private readonly plan: PodNetworkPlan,
    private readonly forwarder: Forwarder,
  ) {
    this.addresses = new AddressPool(subnetRange(plan.subnet));
    this.apiServer = { host: plan.hostAddress, port: apiServicePort };
    this.condition = {
      available: true,
      reason: "PodNetworkReady",
      message: `pods have their own network namespaces in ${plan.subnet}`,
    };
  }

  async attach(uid: string): Promise<PodSandboxNetwork> {
    const podIP = this.addresses.allocate(uid);
    const netns = podNamespaceName(this.clusterDir, uid);
    const port = podSwitchPort(uid);
    const sw = this.plan.switchNamespace;
    try {
      await ip("netns", "add", netns);
      await ip("-n", netns, "link", "set", "lo", "up");
      await ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns);
      await ip("-n", sw, "link", "set", port, "master", bridge, "up");
      await ip("-n", netns, "addr", "add", `${podIP}/24`, "dev", "eth0");
      await ip("-n", netns, "link", "set", "eth0", "up");
    } catch (error) {
      await this.detach(uid);
      throw error;
    }
    return { podIP, netnsPath: namespacePath(netns) };
  }

  async detach(uid: string): Promise<void> {
    const netns = podNamespaceName(this.clusterDir, uid);
    // Deleting the namespace destroys eth0 and with it the bridge's end of the pair.
    if (existsSync(namespacePath(netns))) await ip("netns", "delete", netns);
    this.addresses.release(uid);
  }

  async stop(): Promise<void> {
    await this.forwarder.close();
    await removeClusterNetwork(this.clusterDir);
  }
}

/** Without network namespaces: every pod on its own loopback address in the node's namespace. */
class LoopbackPodNetwork implements PodNetwork {
  private readonly addresses: AddressPool;
  readonly apiServer: { host: string; port: number };

  constructor(
    clusterDir: string,
    apiPort: number,
    readonly condition: NetworkCondition,
  ) {
    this.addresses = new AddressPool(loopbackRange(podRangeOctet(clusterDir)));
    this.apiServer = { host: nodeAddress, port: apiPort };
  }

  attach(uid: string): Promise<PodSandboxNetwork> {
    return Promise.resolve({ podIP: this.addresses.allocate(uid) });
  }

  detach(uid: string): Promise<void> {
    this.addresses.release(uid);
    return Promise.resolve();
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Builds the cluster's pod network from the recorded plan, or, when network
 * namespaces cannot be made here, falls back to loopback pod addresses with
 * one warning: EndpointSlices will then refuse every pod.
 */
export async function startPodNetwork(
  clusterDir: string,
  plan: PodNetworkPlan | undefined,
  apiPort: number,
  log: Logger,
): Promise<PodNetwork> {
  let problem: string;
  if (plan === undefined) problem = "`ksr local up` planned no pod subnet (its output says why)";
  else {
    try {
      await removeClusterNetwork(clusterDir);
      await createSwitch(plan);
      const forwarder = await startApiForwarder(plan.hostAddress, apiPort, log);
      return new BridgedPodNetwork(clusterDir, plan, forwarder);
    } catch (error) {
      problem = (error as Error).message;
      await removeClusterNetwork(clusterDir);
    }
  }
  const message =
    `network namespaces unavailable (${problem}); pods get loopback addresses, ` +
    "which the API refuses in EndpointSlices, so Services list no endpoints (run as root with iproute2)";
  log.warn(message);
  return new LoopbackPodNetwork(clusterDir, apiPort, { available: false, reason: "NoNetworkNamespaces", message });
}
