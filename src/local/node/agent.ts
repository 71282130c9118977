// The node agent (`ksr local node-agent --dir DIR`): registers the two site
// nodes, keeps them alive, runs the pods the scheduler binds to them and
// provisions their volumes. It uses the cluster's admin kubeconfig: it also
// acts as the storage provisioner, which a node identity may not do.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  AuthorizationV1Api,
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  StorageV1Api,
  type V1Pod,
} from "@kubernetes/client-node";
import { pino, type Logger } from "pino";
import { packageRoot } from "../../util/package-root.js";
import { readClusterState } from "../cluster.js";
import { nodeAddress } from "./addresses.js";
import { touchHeartbeat } from "./component.js";
import { clusterCgroup, stopPodProcesses } from "./containment.js";
import { eventRecorder } from "./events.js";
import { findPostgresBinDir, postgresEntrypointScript, type ImageHost } from "./images.js";
import { describeError, isNotFound, startInformer } from "./kube.js";
import { execTools, startKubeletServers } from "./kubelet-server/node-servers.js";
import { localNodes, nodeLayout, type LocalNodeIdentity, type NodeLayout } from "./layout.js";
import { startPodNetwork } from "./network.js";
import { PodWorker, type NodeContext } from "./pod-worker.js";
import { startProvisioner } from "./provisioner.js";
import { startHeartbeats } from "./registration.js";
import { siteController } from "./site-controller.js";
import type { VolumeSources } from "./volumes.js";

function imageHost(layout: NodeLayout, binDir: string): ImageHost {
  mkdirSync(layout.scripts, { recursive: true });
  const postgresEntrypoint = join(layout.scripts, "postgres-entrypoint.sh");
  writeFileSync(postgresEntrypoint, postgresEntrypointScript, { mode: 0o755 });
  const postgresBinDir = findPostgresBinDir();
  const coreDnsBinary = join(binDir, "coredns");
  return {
    nodeBinary: process.execPath,
    packageRoot,
    postgresEntrypoint,
    ...(postgresBinDir === undefined ? {} : { postgresBinDir }),
    ...(existsSync(coreDnsBinary) ? { coreDnsBinary } : {}),
  };
}

/** Live reads for volumes and env; tokens are cached until 80 % of their lifetime, as the kubelet does. */
function volumeSources(core: CoreV1Api): VolumeSources {
  const orUndefined = <T>(promise: Promise<T>) =>
    promise.catch((error: unknown) => {
      if (isNotFound(error)) return undefined;
      throw error;
    });
  const tokens = new Map<string, { token: string; refreshAt: number }>();
  return {
    configMap: (namespace, name) => orUndefined(core.readNamespacedConfigMap({ name, namespace })),
    secret: (namespace, name) => orUndefined(core.readNamespacedSecret({ name, namespace })),
    claim: (namespace, name) => orUndefined(core.readNamespacedPersistentVolumeClaim({ name, namespace })),
    persistentVolume: (name) => orUndefined(core.readPersistentVolume({ name })),
    async serviceAccountToken(pod, audience, expirationSeconds) {
      const key = `${pod.metadata?.uid}|${audience ?? ""}|${expirationSeconds}`;
      const cached = tokens.get(key);
      if (cached !== undefined && cached.refreshAt > Date.now()) return cached.token;
      const response = await core.createNamespacedServiceAccountToken({
        name: pod.spec?.serviceAccountName ?? "default",
        namespace: pod.metadata?.namespace ?? "default",
        body: {
          spec: {
            audiences: audience === undefined || audience === "" ? [] : [audience],
            expirationSeconds,
            boundObjectRef: { apiVersion: "v1", kind: "Pod", name: pod.metadata?.name, uid: pod.metadata?.uid },
          },
        },
      });
      const token = response.status?.token ?? "";
      tokens.set(key, { token, refreshAt: Date.now() + expirationSeconds * 800 });
      return token;
    },
  };
}

export interface NodeAgentOptions {
  dir: string;
  log?: Logger;
}

export interface RunningNodeAgent {
  stop(): Promise<void>;
}

export async function startNodeAgent(options: NodeAgentOptions): Promise<RunningNodeAgent> {
  const state = readClusterState(options.dir);
  if (state === undefined)
    throw new Error(`no local cluster in ${options.dir}; start one with: ksr local up --dir ${options.dir}`);
  const log = options.log ?? pino({ name: "ksr-node" });
  const layout = nodeLayout(state.dir);
  // Containers of an earlier agent that died are orphans: the pods they belonged to start afresh.
  await stopPodProcesses(state.dir);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(state.kubeconfig);
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const nodeNames = new Set(localNodes.map((n) => n.name));
  const provisioner = await startProvisioner(
    kubeConfig,
    core,
    kubeConfig.makeApiClient(StorageV1Api),
    nodeNames,
    layout,
    log,
  );
  const cgroupRoot = clusterCgroup(state.dir);
  const network = await startPodNetwork(state.dir, state.podNetwork, state.ports.apiServer, log);
  const base = {
    hostIP: nodeAddress,
    layout,
    core,
    sources: volumeSources(core),
    network,
    images: imageHost(layout, state.binDir),
    tools: execTools(),
    ...(cgroupRoot === undefined ? {} : { cgroupRoot }),
    log,
    restartBackoff: { baseMs: 10_000, maxMs: 300_000 },
    volumeRefreshMs: 60_000,
  };
  const workers = new Map<string, PodWorker>();
  /** Nodes whose site is down: they neither watch the API nor heartbeat. */
  const cutOff = new Set<string>();
  const watchNode = (identity: LocalNodeIdentity) => {
    const ctx: NodeContext = {
      ...base,
      nodeName: identity.name,
      events: eventRecorder(core, identity.name, log),
      cutOff: () => cutOff.has(identity.name),
    };
    const upsert = (pod: V1Pod) => {
      const uid = pod.metadata?.uid ?? "";
      const existing = workers.get(uid);
      if (existing !== undefined) existing.update(pod);
      else {
        const worker = new PodWorker(pod, ctx, (done) => workers.delete(done));
        workers.set(uid, worker);
        worker.kick();
      }
    };
    return startInformer<V1Pod>(
      kubeConfig,
      "/api/v1/pods",
      () => core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${identity.name}` }),
      { upsert, remove: (pod) => workers.get(pod.metadata?.uid ?? "")?.removed() },
      log,
      `spec.nodeName=${identity.name}`,
    );
  };
  const informers = new Map<string, ReturnType<typeof watchNode>>();
  const sites = siteController(state.dir, state.podNetwork, network.condition.available, log, {
    cutOff(identity) {
      cutOff.add(identity.name);
      const informer = informers.get(identity.name);
      informers.delete(identity.name);
      return informer?.stop() ?? Promise.resolve();
    },
    async powerOff(identity) {
      // All at once, as in a power loss: nothing is written to the API.
      const doomed = [...workers].filter(([, worker]) => worker.nodeName === identity.name);
      for (const [uid] of doomed) workers.delete(uid);
      await Promise.all(doomed.map(([, worker]) => worker.kill()));
    },
    reconnect(identity) {
      cutOff.delete(identity.name);
      if (!informers.has(identity.name)) informers.set(identity.name, watchNode(identity));
    },
  });
  await sites.apply();
  const kubelets = await startKubeletServers({
    clusterDir: state.dir,
    layout,
    authorization: kubeConfig.makeApiClient(AuthorizationV1Api),
    findPod: (nodeName, namespace, name) =>
      [...workers.values()].find(
        (w) => w.nodeName === nodeName && w.object.metadata?.namespace === namespace && w.object.metadata.name === name,
      ),
    log,
  });
  // Heartbeats last: the first one marks the agent healthy, and by then it serves pods and claims.
  const heartbeats = await startHeartbeats(
    core,
    kubeConfig.makeApiClient(CoordinationV1Api),
    {
      nodes: localNodes,
      network: network.condition,
      kubeletPorts: kubelets.ports,
      cutOff: (name) => cutOff.has(name),
    },
    log,
    () => {
      touchHeartbeat(state.dir);
    },
  );
  log.info(
    {
      nodes: [...nodeNames],
      cgroup: cgroupRoot ?? "none (process groups only)",
      podNetwork: network.condition.available ? state.podNetwork?.subnet : "loopback",
    },
    "node agent running",
  );
  return {
    async stop() {
      sites.stop();
      await Promise.all([...informers.values()].map((informer) => informer.stop()));
      await provisioner.stop();
      heartbeats.stop();
      await kubelets.stop();
      await Promise.all([...workers.values()].map((worker) => worker.kill()));
      await stopPodProcesses(state.dir);
      await network.stop();
    },
  };
}

/** Runs the agent in this process until SIGTERM/SIGINT, then stops every pod process before exiting. */
export async function runNodeAgent(dir: string): Promise<void> {
  const log = pino({ name: "ksr-node" });
  let agent: RunningNodeAgent;
  try {
    agent = await startNodeAgent({ dir, log });
  } catch (error) {
    // Half-started informers would keep the process alive: exit so `ksr local up` reports the failure at once.
    log.fatal({ error: describeError(error) }, "node agent failed to start");
    process.exit(1);
  }
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      log.info({ signal }, "stopping pods and exiting");
      agent
        .stop()
        .catch((error: unknown) => {
          log.error({ error: describeError(error) }, "stop failed");
        })
        .finally(resolve);
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  });
}
