// Pod networking with iproute2, routed as kindnet does: one network namespace
// per pod, its veth ending in its node's namespace (where the node's kube-proxy
// and policy enforcer see every packet), both nodes joined by the cluster's
// "core" router namespace, which a veth joins to the root namespace (.254).
// Forwarding is on only inside the cluster's own namespaces and there is no
// default route anywhere: a pod reaches the cluster's pods, Services and the
// node's .254, nothing else. Everything is created and deleted by the
// cluster's own name prefix only.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Logger } from "pino";
import {
  addressIn,
  AddressPool,
  choosePodSubnet,
  chooseServiceSubnet,
  loopbackRange,
  networkNames,
  networksInUse,
  nodeAddress,
  nodeNamespaceName,
  nodePodCidr,
  nodePodRange,
  podNamespaceName,
  podNetworkPlan,
  podRangeOctet,
  podSwitchPort,
  reservedOctets,
  type PodNetworkPlan,
} from "./addresses.js";
import { localNodes } from "./layout.js";

const run = promisify(execFile);
/** The core namespace's veth towards the root namespace. */
const uplink = "uplink";
/** A node namespace's veth towards the core. */
const nodeUplink = "core";
const coreLinkTo = (site: string) => `n-${site}`;
/** What pods dial for the apiserver (KUBERNETES_SERVICE_PORT), as in a cluster. */
export const apiServicePort = 443;

/** The kube-dns Service's fixed ClusterIP: .10 of the Service /24, as kubeadm and kind choose. */
export function clusterDnsAddress(serviceSubnet: string): string {
  return addressIn(serviceSubnet, 10);
}

const toolDirs = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

function findTool(name: string, packageName: string): string {
  const found = toolDirs.map((dir) => join(dir, name)).find((path) => existsSync(path));
  if (found === undefined)
    throw new Error(`the local node's pod network needs ${name} from ${packageName} (apt-get install ${packageName})`);
  return found;
}

const findIp = () => findTool("ip", "iproute2");

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

/** Sets sysctls inside one of the cluster's namespaces (they are per namespace: the host's stay as they are). */
async function sysctlIn(netns: string, ...settings: string[]): Promise<void> {
  await ip("netns", "exec", netns, findTool("sysctl", "procps"), "-q", "-w", ...settings);
}

/** The cluster's routers forward; the host's ip_forward stays as it is. */
async function makeRouter(netns: string): Promise<void> {
  await sysctlIn(netns, "net.ipv4.ip_forward=1");
  await ip("-n", netns, "link", "set", "lo", "up");
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
    const subnet = choosePodSubnet(clusterDir, inUse, previous?.subnet);
    const serviceSubnet = chooseServiceSubnet(clusterDir, inUse, subnet, previous?.serviceSubnet);
    return { plan: podNetworkPlan(clusterDir, subnet, serviceSubnet) };
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
  /** The cluster DNS Service's address for pods' resolv.conf; absent without a pod network. */
  readonly clusterDns?: string;
  /** Where the kubelet's probes come from (source address), so a cut-off site still probes its pods. */
  readonly probeSource?: string;
  attach(uid: string, nodeName: string): Promise<PodSandboxNetwork>;
  detach(uid: string, nodeName: string): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The core router: .253 on its uplink, routes to the root namespace's .254 and
 * .250, and to each node's namespace and pod /25. The root namespace gets the
 * /24 on its veth and the Service /24 via the core (answered by the first
 * node's kube-proxy), so the host reaches ClusterIPs as a node would.
 */
async function createCore(clusterDir: string, plan: PodNetworkPlan): Promise<void> {
  const core = plan.switchNamespace;
  const at = (octet: number) => addressIn(plan.subnet, octet);
  await ip("netns", "add", core);
  await makeRouter(core);
  await ip("link", "add", plan.hostInterface, "type", "veth", "peer", "name", uplink, "netns", core);
  await ip("-n", core, "addr", "add", `${at(reservedOctets.core)}/32`, "dev", uplink);
  await ip("-n", core, "link", "set", uplink, "up");
  await sysctlIn(core, `net.ipv4.conf.${uplink}.proxy_arp=1`, `net.ipv4.neigh.${uplink}.proxy_delay=0`);
  for (const octet of [reservedOctets.host, reservedOctets.kubelet])
    await ip("-n", core, "route", "add", `${at(octet)}/32`, "dev", uplink);
  await ip("addr", "add", `${plan.hostAddress}/24`, "dev", plan.hostInterface);
  await ip("addr", "add", `${at(reservedOctets.kubelet)}/32`, "dev", plan.hostInterface);
  await ip("link", "set", plan.hostInterface, "up");
  await ip("route", "add", plan.serviceSubnet, "via", at(reservedOctets.core), "dev", plan.hostInterface);
  for (const [index, identity] of localNodes.entries())
    await createNodeNamespace(clusterDir, plan, index, identity.site);
  await ip("-n", core, "route", "add", plan.serviceSubnet, "via", at(reservedOctets.firstNode));
}

/** A node's namespace: .251 or .252 towards the core, its pods' veths, and a route to the rest via the core. */
async function createNodeNamespace(clusterDir: string, plan: PodNetworkPlan, index: number, site: string) {
  const core = plan.switchNamespace;
  const netns = nodeNamespaceName(clusterDir, site);
  const node = addressIn(plan.subnet, reservedOctets.firstNode + index);
  const coreAddress = addressIn(plan.subnet, reservedOctets.core);
  await ip("netns", "add", netns);
  await makeRouter(netns);
  await ip("-n", core, "link", "add", coreLinkTo(site), "type", "veth", "peer", "name", nodeUplink, "netns", netns);
  await ip("-n", core, "link", "set", coreLinkTo(site), "up");
  await ip("-n", core, "route", "add", `${node}/32`, "dev", coreLinkTo(site));
  await ip("-n", core, "route", "add", nodePodCidr(plan.subnet, index), "via", node);
  await ip("-n", netns, "addr", "add", `${node}/32`, "dev", nodeUplink);
  await ip("-n", netns, "link", "set", nodeUplink, "up");
  await ip("-n", netns, "route", "add", `${coreAddress}/32`, "dev", nodeUplink);
  await ip("-n", netns, "route", "add", plan.subnet, "via", coreAddress, "dev", nodeUplink);
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

interface NodeSegment {
  netns: string;
  gateway: string;
  addresses: AddressPool;
}

class RoutedPodNetwork implements PodNetwork {
  private readonly nodes = new Map<string, NodeSegment>();
  readonly apiServer: { host: string; port: number };
  readonly condition: NetworkCondition;
  readonly clusterDns: string;
  readonly probeSource: string;

  constructor(
    private readonly clusterDir: string,
    private readonly plan: PodNetworkPlan,
    private readonly forwarder: Forwarder,
  ) {
    for (const [index, identity] of localNodes.entries()) {
      this.nodes.set(identity.name, {
        netns: nodeNamespaceName(clusterDir, identity.site),
        gateway: addressIn(plan.subnet, reservedOctets.firstNode + index),
        addresses: new AddressPool(nodePodRange(plan.subnet, index)),
      });
    }
    this.apiServer = { host: plan.hostAddress, port: apiServicePort };
    this.clusterDns = clusterDnsAddress(plan.serviceSubnet);
    this.probeSource = addressIn(plan.subnet, reservedOctets.kubelet);
    this.condition = {
      available: true,
      reason: "PodNetworkReady",
      message: `pods have their own network namespaces in ${plan.subnet}, Services in ${plan.serviceSubnet}`,
    };
  }

  private segment(nodeName: string): NodeSegment {
    const segment = this.nodes.get(nodeName);
    if (segment === undefined) throw new Error(`no pod network for node ${nodeName}`);
    return segment;
  }

  async attach(uid: string, nodeName: string): Promise<PodSandboxNetwork> {
    const segment = this.segment(nodeName);
    const podIP = segment.addresses.allocate(uid);
    const netns = podNamespaceName(this.clusterDir, uid);
    const port = podSwitchPort(uid);
    try {
      await ip("netns", "add", netns);
      await ip("-n", netns, "link", "set", "lo", "up");
      await ip("-n", segment.netns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns);
      await ip("-n", segment.netns, "link", "set", port, "up");
      await ip("-n", segment.netns, "route", "add", `${podIP}/32`, "dev", port);
      // Everything goes through the node's namespace (its kube-proxy and policy enforcer), as on a kindnet node:
      // the pod only ever resolves its gateway's link address.
      await ip("-n", netns, "addr", "add", `${podIP}/24`, "noprefixroute", "dev", "eth0");
      await ip("-n", netns, "link", "set", "eth0", "up");
      await ip("-n", netns, "route", "add", segment.gateway, "dev", "eth0", "scope", "link");
      for (const destination of [this.plan.subnet, this.plan.serviceSubnet])
        await ip("-n", netns, "route", "add", destination, "via", segment.gateway, "dev", "eth0");
    } catch (error) {
      await this.detach(uid, nodeName);
      throw error;
    }
    return { podIP, netnsPath: namespacePath(netns) };
  }

  async detach(uid: string, nodeName: string): Promise<void> {
    const netns = podNamespaceName(this.clusterDir, uid);
    // Deleting the namespace destroys eth0 and with it the node's end of the pair and its route.
    if (existsSync(namespacePath(netns))) await ip("netns", "delete", netns);
    this.segment(nodeName).addresses.release(uid);
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
      await createCore(clusterDir, plan);
      const forwarder = await startApiForwarder(plan.hostAddress, apiPort, log);
      return new RoutedPodNetwork(clusterDir, plan, forwarder);
    } catch (error) {
      problem = (error as Error).message;
      await removeClusterNetwork(clusterDir);
    }
  }
  const message =
    `network namespaces unavailable (${problem}); pods get loopback addresses, ` +
    "which the API refuses in EndpointSlices, so Services list no endpoints and there is no cluster DNS " +
    "(run as root with iproute2)";
  log.warn(message);
  return new LoopbackPodNetwork(clusterDir, apiPort, { available: false, reason: "NoNetworkNamespaces", message });
}
