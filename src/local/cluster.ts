// `ksr local`: a real Kubernetes control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) running as detached local processes
// on loopback, with its own PKI and an admin kubeconfig.
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createCertificateAuthority, loadCertificateAuthority, type PemKeyPair } from "../pki/certificates.js";
import { resolveControlPlaneBinaries } from "./binaries.js";
import { renderKubeconfig } from "./kubeconfig.js";
import { assertPortFree, freePort, loopback } from "./ports.js";
import { clearHeartbeat, nodeAgentComponent } from "./node/component.js";
import { stopPodProcesses } from "./node/containment.js";
import { addonSpecs, podNetworkUp, prepareAddons } from "./addons/addons.js";
import { addressIn, type PodNetworkPlan } from "./node/addresses.js";
import { planPodNetwork, removeClusterNetwork } from "./node/network.js";
import { probe } from "./probe.js";
import { kubeletClient, waitUntilUsable } from "./readiness.js";
import { isRunning, logTail, spawnDetached, stopProcess, type ProcessRecord } from "./processes.js";

export const defaultClusterDir = join(homedir(), ".ksr", "local");
const stateFileName = "cluster.json";
/** Without a pod network nothing routes Services anyway; the apiserver still needs a range. */
const fallbackServiceSubnet = "198.19.255.0/24";
const serviceSubnetOf = (podNetwork: PodNetworkPlan | undefined) => podNetwork?.serviceSubnet ?? fallbackServiceSubnet;

export interface ClusterPorts {
  etcdClient: number;
  etcdPeer: number;
  apiServer: number;
  controllerManager: number;
  scheduler: number;
}

export interface ClusterState {
  dir: string;
  kubeconfig: string;
  server: string;
  etcdEndpoint: string;
  binDir: string;
  ports: ClusterPorts;
  components: ProcessRecord[];
  startedAt: string;
  /** The pod network chosen at `up`; absent when iproute2 is missing (pods then fall back to loopback). */
  podNetwork?: PodNetworkPlan;
}

export interface UpOptions {
  dir?: string;
  apiPort?: number;
  binDir?: string;
  readyTimeoutMs?: number;
  progress?: (message: string) => void;
}

export interface ComponentHealth {
  name: string;
  pid: number;
  running: boolean;
  healthy: boolean;
  detail: string;
}

const stateFile = (dir: string) => join(dir, stateFileName);

export function readClusterState(dir: string): ClusterState | undefined {
  const file = stateFile(resolve(dir));
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, "utf8")) as ClusterState;
  } catch (error) {
    throw new Error(
      `${file} is not a readable cluster state (${(error as Error).message}); remove the directory to start over`,
    );
  }
}

function writeClusterState(state: ClusterState): void {
  writeFileSync(stateFile(state.dir), JSON.stringify(state, null, 2) + "\n");
}

function writeSecret(path: string, content: string): void {
  writeFileSync(path, content, { mode: 0o600 });
}

function readPair(dir: string, name: string): PemKeyPair | undefined {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  if (!existsSync(cert) || !existsSync(key)) return undefined;
  return { cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") };
}

function writePair(dir: string, name: string, pair: PemKeyPair): void {
  writeFileSync(join(dir, `${name}.crt`), pair.cert);
  writeSecret(join(dir, `${name}.key`), pair.key);
}

/**
 * The cluster's PKI lives in DIR/pki and survives restarts, so kubeconfigs and
 * service-account tokens stay valid across `down` and `up`. Only the
 * apiserver's serving certificate follows the pod network: pods dial the
 * node's pod-network address, which may change between runs.
 */
async function ensurePki(pkiDir: string, podNetwork: PodNetworkPlan | undefined): Promise<void> {
  mkdirSync(pkiDir, { recursive: true, mode: 0o700 });
  const ca = readPair(pkiDir, "ca") ?? (await createCertificateAuthority("ksr-local-ca"));
  writePair(pkiDir, "ca", ca);
  const authority = loadCertificateAuthority(ca);
  if (!existsSync(join(pkiDir, "sa.pub"))) {
    const issued: [string, Parameters<typeof authority.issue>[0]][] = [
      ["admin", { commonName: "kubernetes-admin", organizations: ["system:masters"], usage: "client" }],
      ["controller-manager", { commonName: "system:kube-controller-manager", usage: "client" }],
      ["scheduler", { commonName: "system:kube-scheduler", usage: "client" }],
      ["apiserver-etcd-client", { commonName: "kube-apiserver-etcd-client", usage: "client" }],
    ];
    for (const [name, request] of issued) writePair(pkiDir, name, await authority.issue(request));
    const serviceAccount = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    writeSecret(join(pkiDir, "sa.key"), serviceAccount.privateKey.export({ type: "pkcs8", format: "pem" }).toString());
    // The public key is written last: its presence marks a complete client PKI.
    writeFileSync(join(pkiDir, "sa.pub"), serviceAccount.publicKey.export({ type: "spki", format: "pem" }).toString());
  }
  // Added after the first PKI layout: clusters made before it get it at their next `up`.
  if (readPair(pkiDir, kubeletClient) === undefined)
    writePair(
      pkiDir,
      kubeletClient,
      await authority.issue({ commonName: kubeletClient, organizations: ["system:masters"], usage: "client" }),
    );
  const serving = await authority.issue({
    commonName: "kube-apiserver",
    usage: "server",
    dnsNames: [
      "localhost",
      "kubernetes",
      "kubernetes.default",
      "kubernetes.default.svc",
      "kubernetes.default.svc.cluster.local",
    ],
    ipAddresses: [
      loopback,
      // The kubernetes Service's ClusterIP, the first of the range.
      addressIn(serviceSubnetOf(podNetwork), 1),
      ...(podNetwork === undefined ? [] : [podNetwork.hostAddress]),
    ],
  });
  writePair(pkiDir, "apiserver", serving);
}

async function choosePorts(
  dir: string,
  previous: ClusterPorts | undefined,
  apiPort: number | undefined,
): Promise<ClusterPorts> {
  const ports: ClusterPorts = previous ?? {
    etcdClient: await freePort(),
    etcdPeer: await freePort(),
    apiServer: apiPort ?? (await freePort()),
    controllerManager: await freePort(),
    scheduler: await freePort(),
  };
  if (apiPort !== undefined) ports.apiServer = apiPort;
  const checks: [number, string, string][] = [
    [ports.apiServer, "kube-apiserver", "--api-port"],
    [ports.etcdClient, "etcd client", `a fresh --dir (this one, ${dir}, recorded it)`],
    [ports.etcdPeer, "etcd peer", `a fresh --dir (this one, ${dir}, recorded it)`],
    [ports.controllerManager, "kube-controller-manager", `a fresh --dir (this one, ${dir}, recorded it)`],
    [ports.scheduler, "kube-scheduler", `a fresh --dir (this one, ${dir}, recorded it)`],
  ];
  for (const [port, what, remedy] of checks) await assertPortFree(port, what, remedy);
  return ports;
}

function writeKubeconfigs(dir: string, server: string): void {
  const pki = join(dir, "pki");
  const caCert = readFileSync(join(pki, "ca.crt"), "utf8");
  const files: [string, string, string][] = [
    ["kubeconfig", "admin", "kubernetes-admin"],
    ["controller-manager.kubeconfig", "controller-manager", "system:kube-controller-manager"],
    ["scheduler.kubeconfig", "scheduler", "system:kube-scheduler"],
  ];
  for (const [file, pair, user] of files) {
    const client = readPair(pki, pair);
    if (client === undefined) throw new Error(`missing ${pair} certificate in ${pki}; remove ${dir} to regenerate`);
    writeSecret(join(dir, file), renderKubeconfig({ server, caCert, user, client }));
  }
}

interface ComponentSpec {
  name: string;
  /** The binary of that name in the binary directory, unless given. */
  command?: string;
  env?: NodeJS.ProcessEnv;
  /** Components of one stage start together once every earlier stage is healthy. */
  stage: number;
  args: string[];
  health: () => Promise<boolean>;
}

function componentSpecs(dir: string, ports: ClusterPorts, serviceSubnet: string): ComponentSpec[] {
  const pki = (file: string) => join(dir, "pki", file);
  const etcdUrl = `http://${loopback}:${ports.etcdClient}`;
  const peerUrl = `http://${loopback}:${ports.etcdPeer}`;
  const cmKubeconfig = join(dir, "controller-manager.kubeconfig");
  const schedKubeconfig = join(dir, "scheduler.kubeconfig");
  const ca = readFileSync(pki("ca.crt"));
  const admin = readPair(join(dir, "pki"), "admin");
  return [
    {
      name: "etcd",
      stage: 0,
      args: [
        "--name=ksr-local",
        `--data-dir=${join(dir, "etcd")}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=ksr-local=${peerUrl}`,
        // Frequent progress notifications let watch bookmarks and consistent reads from cache work promptly.
        "--watch-progress-notify-interval=5s",
        "--log-level=warn",
      ],
      health: () => probe(`${etcdUrl}/health`),
    },
    {
      name: "kube-apiserver",
      stage: 1,
      args: [
        `--etcd-servers=${etcdUrl}`,
        `--bind-address=${loopback}`,
        `--advertise-address=${loopback}`,
        `--secure-port=${ports.apiServer}`,
        `--cert-dir=${join(dir, "apiserver")}`,
        `--tls-cert-file=${pki("apiserver.crt")}`,
        `--tls-private-key-file=${pki("apiserver.key")}`,
        `--client-ca-file=${pki("ca.crt")}`,
        "--authorization-mode=Node,RBAC",
        // The nodes' kubelet API (src/local/node/kubelet-server): both nodes are 127.0.0.1, on ports of their own.
        `--kubelet-client-certificate=${pki(`${kubeletClient}.crt`)}`,
        `--kubelet-client-key=${pki(`${kubeletClient}.key`)}`,
        `--kubelet-certificate-authority=${pki("ca.crt")}`,
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true",
        `--service-cluster-ip-range=${serviceSubnet}`,
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        `--service-account-key-file=${pki("sa.pub")}`,
        `--service-account-signing-key-file=${pki("sa.key")}`,
        // The "kubernetes" Service cannot have loopback endpoints (validation rejects 127.0.0.0/8);
        // local pods reach the apiserver through the node agent's forwarder instead (docs/local-node.md).
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--v=1",
      ],
      health: () => probe(`https://${loopback}:${ports.apiServer}/readyz`, { ca, ...(admin ?? {}) }),
    },
    {
      // The controller-manager and scheduler exit when the apiserver's RBAC bootstrap is unfinished.
      name: "kube-controller-manager",
      stage: 2,
      args: [
        `--kubeconfig=${cmKubeconfig}`,
        `--authentication-kubeconfig=${cmKubeconfig}`,
        `--authorization-kubeconfig=${cmKubeconfig}`,
        `--bind-address=${loopback}`,
        `--secure-port=${ports.controllerManager}`,
        `--cert-dir=${join(dir, "controller-manager")}`,
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        `--service-account-private-key-file=${pki("sa.key")}`,
        `--root-ca-file=${pki("ca.crt")}`,
        `--cluster-signing-cert-file=${pki("ca.crt")}`,
        `--cluster-signing-key-file=${pki("ca.key")}`,
        "--cluster-name=ksr-local",
        "--controllers=*,bootstrapsigner,tokencleaner",
        "--profiling=false",
        "--v=1",
      ],
      health: () => probe(`https://${loopback}:${ports.controllerManager}/healthz`, { insecure: true }),
    },
    {
      name: "kube-scheduler",
      stage: 2,
      args: [
        `--kubeconfig=${schedKubeconfig}`,
        `--authentication-kubeconfig=${schedKubeconfig}`,
        `--authorization-kubeconfig=${schedKubeconfig}`,
        `--bind-address=${loopback}`,
        `--secure-port=${ports.scheduler}`,
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
      ],
      health: () => probe(`https://${loopback}:${ports.scheduler}/healthz`, { insecure: true }),
    },
  ];
}

function componentDied(record: ProcessRecord): Error {
  return new Error(
    `${record.name} exited during start-up; last lines of ${record.logFile}:\n${logTail(record.logFile)}`,
  );
}

async function waitHealthy(spec: ComponentSpec, record: ProcessRecord, deadline: number): Promise<void> {
  for (;;) {
    if (!isRunning(record)) throw componentDied(record);
    if (await spec.health()) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${record.name} did not become healthy in time; last lines of ${record.logFile}:\n${logTail(record.logFile)}`,
      );
    }
    await sleep(100);
  }
}

function startComponent(
  state: ClusterState,
  spec: ComponentSpec,
  progress: (message: string) => void,
): [ComponentSpec, ProcessRecord] {
  progress(`starting ${spec.name}`);
  const record = spawnDetached({
    name: spec.name,
    command: spec.command ?? join(state.binDir, spec.name),
    args: spec.args,
    ...(spec.env === undefined ? {} : { env: spec.env }),
    logFile: join(state.dir, "logs", `${spec.name}.log`),
  });
  state.components = [...state.components.filter((c) => c.name !== spec.name), record];
  writeClusterState(state);
  return [spec, record];
}

/**
 * Stops one component and starts it again with the same configuration, waiting
 * until it is healthy. Tests use it to break watches the way a real apiserver
 * restart does; returns the updated state.
 */
export async function restartComponent(
  state: ClusterState,
  name: string,
  readyTimeoutMs = 60_000,
): Promise<ClusterState> {
  const spec = componentSpecs(state.dir, state.ports, serviceSubnetOf(state.podNetwork)).find(
    (candidate) => candidate.name === name,
  );
  const record = state.components.find((candidate) => candidate.name === name);
  if (spec === undefined || record === undefined)
    throw new Error(`no component named ${name} in the cluster at ${state.dir}`);
  await stopProcess(record, 10_000);
  const next: ClusterState = { ...state, components: [...state.components] };
  const [, started] = startComponent(next, spec, () => undefined);
  await waitHealthy(spec, started, Date.now() + readyTimeoutMs);
  return next;
}

/** Starts the control plane (or fails with everything it started stopped again). */
export async function up(options: UpOptions = {}): Promise<ClusterState> {
  const dir = resolve(options.dir ?? defaultClusterDir);
  const progress = options.progress ?? (() => undefined);
  const previous = readClusterState(dir);
  const alive = previous?.components.filter(isRunning) ?? [];
  if (alive.length > 0) {
    throw new Error(
      `a local cluster is already running in ${dir} (${alive.map((c) => `${c.name} pid ${c.pid}`).join(", ")}); ` +
        `use it through ${join(dir, "kubeconfig")}, or stop it with: ksr local down --dir ${dir}`,
    );
  }
  const binDir = options.binDir ?? (await resolveControlPlaneBinaries());
  mkdirSync(join(dir, "logs"), { recursive: true });
  const ports = await choosePorts(dir, previous?.ports, options.apiPort);
  progress("choosing the pod network");
  const planned = await planPodNetwork(dir, previous?.podNetwork);
  const podNetwork = "plan" in planned ? planned.plan : undefined;
  if ("problem" in planned) progress(`no pod network (${planned.problem}); pods fall back to loopback addresses`);
  progress("generating certificates");
  await ensurePki(join(dir, "pki"), podNetwork);
  const server = `https://${loopback}:${ports.apiServer}`;
  writeKubeconfigs(dir, server);

  const state: ClusterState = {
    dir,
    kubeconfig: join(dir, "kubeconfig"),
    server,
    etcdEndpoint: `http://${loopback}:${ports.etcdClient}`,
    binDir,
    ports,
    components: [],
    startedAt: new Date().toISOString(),
    ...(podNetwork === undefined ? {} : { podNetwork }),
  };
  const deadline = Date.now() + (options.readyTimeoutMs ?? 120_000);
  const specs = componentSpecs(dir, ports, serviceSubnetOf(podNetwork));
  const stages = [...new Set(specs.map((spec) => spec.stage))].sort((a, b) => a - b);
  try {
    for (const stage of stages) {
      const started = specs.filter((spec) => spec.stage === stage).map((spec) => startComponent(state, spec, progress));
      for (const [spec, record] of started) await waitHealthy(spec, record, deadline);
    }
    await startNodeAgent(state, deadline, progress);
    await startAddons(state, deadline, progress);
    await waitUntilUsable(dir, podNetworkUp(dir, state.podNetwork), deadline, progress);
  } catch (error) {
    await stopComponents(state.components);
    await stopPodProcesses(dir);
    await removeClusterNetwork(dir);
    writeClusterState({ ...state, components: [] });
    throw error;
  }
  progress("ready");
  return state;
}

/** The local node (src/local/node) runs pods once the control plane serves. */
async function startNodeAgent(
  state: ClusterState,
  deadline: number,
  progress: (message: string) => void,
): Promise<void> {
  const spec = nodeAgentComponent(state.dir);
  clearHeartbeat(state.dir);
  progress(`starting ${spec.name}`);
  const record = spawnDetached({ ...spec, logFile: join(state.dir, "logs", `${spec.name}.log`) });
  state.components.push(record);
  writeClusterState(state);
  await waitHealthy(spec, record, deadline);
}

/** kube-proxy, CoreDNS and kube-network-policies, in the namespaces the node agent made (src/local/addons). */
async function startAddons(state: ClusterState, deadline: number, progress: (message: string) => void): Promise<void> {
  const plan = state.podNetwork;
  if (!podNetworkUp(state.dir, plan)) {
    progress("no pod network namespaces: no kube-proxy, cluster DNS or NetworkPolicy enforcement");
    return;
  }
  progress("preparing kube-proxy, CoreDNS and kube-network-policies");
  await prepareAddons(state.dir, plan, state.kubeconfig, deadline);
  const started = addonSpecs({ clusterDir: state.dir, binDir: state.binDir, plan }).map((spec) =>
    startComponent(state, spec, progress),
  );
  for (const [spec, record] of started) await waitHealthy(spec, record, deadline);
}

async function stopComponents(components: ProcessRecord[]): Promise<void> {
  // Reverse start order: clients before the apiserver, the apiserver before etcd.
  for (const record of [...components].reverse()) await stopProcess(record, 10_000);
}

/** Stops every process recorded for the cluster in dir; with purge, deletes its data too. */
export async function down(options: { dir?: string; purge?: boolean } = {}): Promise<ProcessRecord[]> {
  const dir = resolve(options.dir ?? defaultClusterDir);
  const state = readClusterState(dir);
  const stopped = state?.components.filter(isRunning) ?? [];
  if (state !== undefined) {
    await stopComponents(state.components);
    writeClusterState({ ...state, components: [] });
  }
  // Pods are the node agent's children; should the agent have died, they are found through its records.
  await stopPodProcesses(dir);
  await removeClusterNetwork(dir);
  if (options.purge === true && existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  return stopped;
}

/** Reports whether each recorded component is alive and healthy. */
export async function status(
  dir: string = defaultClusterDir,
): Promise<{ state?: ClusterState; components: ComponentHealth[] }> {
  const state = readClusterState(dir);
  if (state === undefined) return { components: [] };
  const specs = new Map(
    [
      ...componentSpecs(state.dir, state.ports, serviceSubnetOf(state.podNetwork)),
      nodeAgentComponent(state.dir),
      ...(state.podNetwork === undefined
        ? []
        : addonSpecs({ clusterDir: state.dir, binDir: state.binDir, plan: state.podNetwork })),
    ].map((spec) => [spec.name, spec]),
  );
  const components: ComponentHealth[] = [];
  for (const record of state.components) {
    const running = isRunning(record);
    const spec = specs.get(record.name);
    const healthy = running && spec !== undefined && (await spec.health());
    const detail = !running ? "not running" : healthy ? "ok" : "running but not healthy";
    components.push({ name: record.name, pid: record.pid, running, healthy, detail });
  }
  return { state, components };
}
