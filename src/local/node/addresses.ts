// Pod addresses and the names of the network objects a cluster creates.
//
// With network namespaces (the normal case) every cluster draws pod IPs from
// one /24 of 198.18.0.0/15, the RFC 2544 benchmarking range: not loopback nor
// link-local, so EndpointSlice validation accepts it, and never routed
// anywhere, so nothing a pod sends can leave the machine. Without them pods
// fall back to their own 127.0.0.0/8 address, which Linux routes to loopback.
import { clusterTag } from "./layout.js";

export const nodeAddress = "127.0.0.1";

/** A number derived from the cluster directory, so each cluster starts its address search elsewhere. */
function clusterSpread(clusterDir: string): number {
  return parseInt(clusterTag(clusterDir).slice(0, 6), 16);
}

/** The second octet of this cluster's loopback fallback range: 2..254 (127.0.x and 127.1.x are left to the machine). */
export function podRangeOctet(clusterDir: string): number {
  return 2 + (clusterSpread(clusterDir) % 253);
}

/** A finite list of addresses, the i-th one computed on demand. */
export interface AddressRange {
  readonly size: number;
  addressAt(index: number): string;
  readonly description: string;
}

export function loopbackRange(octet: number): AddressRange {
  if (!Number.isInteger(octet) || octet < 1 || octet > 254) throw new Error(`pod range octet ${octet} is not 1..254`);
  return {
    size: 256 * 254, // x = 0..255, y = 1..254
    addressAt: (index) => `127.${octet}.${Math.floor(index / 254)}.${(index % 254) + 1}`,
    description: `127.${octet}.0.0/16`,
  };
}

/**
 * Where each address of the cluster's /24 goes: every node has its own network
 * namespace and pod range (its podCIDR half), the top addresses are fixed.
 */
export const reservedOctets = {
  /** The kubelet's end in the root namespace: the node agent probes pods from here. */
  kubelet: 250,
  /** Node namespaces: .251 for the first node, .252 for the second. */
  firstNode: 251,
  /** The core router namespace joining root, nodes and CoreDNS. */
  core: 253,
  /** The root namespace's address: the apiserver forwarder. */
  host: 254,
} as const;

/**
 * Pod addresses of node `index` (0 or 1): .1 to .126 (the lower /25) and
 * .129 to .249 (the upper /25, below the reserved addresses).
 */
export function nodePodRange(subnet: string, index: number): AddressRange {
  const prefix = subnetPrefix(subnet);
  if (index !== 0 && index !== 1) throw new Error(`node index ${index} is not 0 or 1`);
  const first = index === 0 ? 1 : 129;
  const size = index === 0 ? 126 : reservedOctets.kubelet - 129;
  return {
    size,
    addressAt: (i) => `${prefix}.${first + i}`,
    description: `${prefix}.${index * 128}/25`,
  };
}

/** The /25 holding node `index`'s pods, routed to that node's namespace. */
export function nodePodCidr(subnet: string, index: number): string {
  return `${subnetPrefix(subnet)}.${index * 128}/25`;
}

/** An address of the cluster's /24 by its last octet. */
export function addressIn(subnet: string, octet: number): string {
  return `${subnetPrefix(subnet)}.${octet}`;
}

/**
 * Hands out addresses round-robin, so a released address is reused as late as
 * possible (a client holding a stale EndpointSlice then fails fast instead of
 * reaching another pod).
 */
export class AddressPool {
  private readonly byOwner = new Map<string, string>();
  private readonly inUse = new Set<string>();
  private cursor = 0;

  constructor(private readonly range: AddressRange) {}

  /** The owner's address, allocating one on first call. */
  allocate(owner: string): string {
    const existing = this.byOwner.get(owner);
    if (existing !== undefined) return existing;
    for (let tried = 0; tried < this.range.size; tried++) {
      const candidate = this.range.addressAt(this.cursor);
      this.cursor = (this.cursor + 1) % this.range.size;
      if (this.inUse.has(candidate)) continue;
      this.inUse.add(candidate);
      this.byOwner.set(owner, candidate);
      return candidate;
    }
    throw new Error(`all ${this.range.size} pod addresses in ${this.range.description} are in use`);
  }

  release(owner: string): void {
    const address = this.byOwner.get(owner);
    if (address === undefined) return;
    this.byOwner.delete(owner);
    this.inUse.delete(address);
  }
}

/** What `ksr local up` chose for the cluster's pod network; recorded in the cluster state. */
export interface PodNetworkPlan {
  /** 198.18.N.0/24 or 198.19.N.0/24. */
  subnet: string;
  /** The root network namespace's end of the pod network (.254): the apiserver forwarder listens here. */
  hostAddress: string;
  /** The /24 of 198.18.0.0/15 ClusterIPs come from (kube-apiserver --service-cluster-ip-range). */
  serviceSubnet: string;
  /** The core router namespace: joins the root namespace, the node namespaces and CoreDNS. */
  switchNamespace: string;
  /** The root namespace's veth towards the bridge. */
  hostInterface: string;
}

const benchmarkingSubnets = 512; // 198.18.0.0/15 in /24s

function subnetAt(index: number): string {
  return `198.${18 + Math.floor(index / 256)}.${index % 256}.0/24`;
}

/** "198.18.N" of a /24 of 198.18.0.0/15; undefined for anything else. */
function benchmarkingPrefix(subnet: string): string | undefined {
  const match = /^(198\.1[89]\.\d{1,3})\.0\/24$/.exec(subnet);
  if (match?.[1] === undefined || Number(match[1].split(".")[2]) > 255) return undefined;
  return match[1];
}

function subnetPrefix(subnet: string): string {
  const prefix = benchmarkingPrefix(subnet);
  if (prefix === undefined) throw new Error(`pod subnet ${subnet} is not a /24 of 198.18.0.0/15`);
  return prefix;
}

/** Linux interface names hold at most 15 characters; netns names are file names. */
export function networkNames(clusterDir: string): Pick<PodNetworkPlan, "switchNamespace" | "hostInterface"> & {
  podNamespacePrefix: string;
} {
  const tag = clusterTag(clusterDir);
  return { switchNamespace: `ksr-${tag}`, hostInterface: `ksr${tag}`, podNamespacePrefix: `ksr-${tag}-` };
}

/** A node's own network namespace (its kube-proxy and policy enforcer run there): the prefix and the site. */
export function nodeNamespaceName(clusterDir: string, site: string): string {
  return `${networkNames(clusterDir).podNamespacePrefix}${site}`;
}

const uidDigits = (uid: string) =>
  uid
    .replace(/[^0-9a-f]/gi, "")
    .slice(0, 12)
    .toLowerCase();

/** The pod's network namespace: the cluster's prefix and the first 12 hex digits of its UID. */
export function podNamespaceName(clusterDir: string, uid: string): string {
  return `${networkNames(clusterDir).podNamespacePrefix}${uidDigits(uid)}`;
}

/** What every pod veth's node end is named after; nothing else in a node's namespace starts with it. */
export const podPortPrefix = "p";

/** The node's end of a pod's veth (inside the node's namespace, so only unique per cluster). */
export function podSwitchPort(uid: string): string {
  return `${podPortPrefix}${uidDigits(uid)}`;
}

interface Cidr {
  base: number;
  bits: number;
}

function parseCidr(text: string): Cidr | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(text);
  if (match === null) return undefined;
  const octets = match.slice(1, 5).map(Number);
  const bits = match[5] === undefined ? 32 : Number(match[5]);
  if (octets.some((o) => o > 255) || bits > 32) return undefined;
  const address = octets.reduce((sum, octet) => sum * 256 + octet, 0);
  const size = 2 ** (32 - bits);
  return { base: address - (address % size), bits };
}

function overlaps(a: Cidr, b: Cidr): boolean {
  const wider = Math.min(a.bits, b.bits);
  const size = 2 ** (32 - wider);
  return Math.floor(a.base / size) === Math.floor(b.base / size);
}

/**
 * The IPv4 networks this machine already uses, from `ip -4 route` (destination
 * first on each line; the default route says nothing about local use) and
 * `ip -4 -o addr` (`inet A.B.C.D/N`).
 */
export function networksInUse(routes: string, addresses: string): string[] {
  const fromRoutes = routes
    .split("\n")
    .map((line) => line.trim().split(/\s+/)[0] ?? "")
    .filter((destination) => destination !== "" && destination !== "default");
  const fromAddresses = [...addresses.matchAll(/\binet (\d+\.\d+\.\d+\.\d+\/\d+)/g)].map((m) => m[1] ?? "");
  return [...fromRoutes, ...fromAddresses].filter((cidr) => parseCidr(cidr) !== undefined);
}

/**
 * The cluster's /24: its previous one while still free, else the first free one
 * from a start derived from the cluster directory, so clusters sharing a
 * machine rarely compete and never overlap anything already routed.
 */
export function choosePodSubnet(clusterDir: string, inUse: readonly string[], previous?: string, offset = 0): string {
  const taken = inUse.flatMap((text) => parseCidr(text) ?? []);
  const free = (subnet: string) => {
    const cidr = parseCidr(subnet);
    return cidr !== undefined && !taken.some((t) => overlaps(t, cidr));
  };
  if (previous !== undefined && benchmarkingPrefix(previous) !== undefined && free(previous)) return previous;
  const start = (clusterSpread(clusterDir) + offset) % benchmarkingSubnets;
  for (let step = 0; step < benchmarkingSubnets; step++) {
    const candidate = subnetAt((start + step) % benchmarkingSubnets);
    if (free(candidate)) return candidate;
  }
  throw new Error("every /24 of 198.18.0.0/15 is already routed on this machine; no pod subnet is left");
}

export function podNetworkPlan(clusterDir: string, subnet: string, serviceSubnet: string): PodNetworkPlan {
  const { switchNamespace, hostInterface } = networkNames(clusterDir);
  subnetPrefix(serviceSubnet);
  return {
    subnet,
    hostAddress: addressIn(subnet, reservedOctets.host),
    serviceSubnet,
    switchNamespace,
    hostInterface,
  };
}

/**
 * The Service /24: its previous one while still free, else a free /24 other
 * than the pod subnet, searched from the other half of 198.18.0.0/15.
 */
export function chooseServiceSubnet(
  clusterDir: string,
  inUse: readonly string[],
  podSubnet: string,
  previous?: string,
): string {
  return choosePodSubnet(clusterDir, [...inUse, podSubnet], previous, benchmarkingSubnets / 2);
}
