// What the operator benchmarks share: a fresh `ksr local` cluster with the operator installed by
// `ksr install --wait` and the bench namespaces and policy, a host directory for the writers' switches, polling, and the result file.
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { down, up, type ClusterState } from "../src/local/cluster.js";
import { protectedMachines, replicationPolicies, type ProtectedMachine } from "../src/api/types.js";
import { KubeClient, namespaces, persistentVolumeClaims, statefulSets } from "../src/runtime/index.js";
import { packageRoot } from "../src/util/package-root.js";
import { defaultServiceAccount } from "../test/fixture/machine-suite.js";
import { writerStatefulSet } from "../test/fixture/writer.js";

export interface OperatorCluster {
  readonly dir: string;
  /** Host directory of the writers' switch files (test/fixture/writer.ts). */
  readonly control: string;
  readonly state: ClusterState;
  readonly client: KubeClient;
  /** Runs `ksr ARGS`; with `inherit` false its output is returned instead of shown. */
  readonly ksr: (args: string[], inherit?: boolean) => Buffer;
}

/** Runs `body` on a fresh cluster with the operator installed and the bench namespaces and policy, and removes everything afterwards. */
export async function withOperatorCluster(name: string, body: (cluster: OperatorCluster) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), `ksr-bench-${name}-`));
  const control = await mkdtemp(join(tmpdir(), "ksr-bench-ctl-"));
  const state = await up({ dir, readyTimeoutMs: 180_000 });
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(state.kubeconfig);
  const client = new KubeClient(kubeConfig);
  const ksr = (args: string[], inherit = true) =>
    execFileSync(process.execPath, [join(packageRoot, "bin", "ksr.js"), ...args], {
      stdio: inherit ? "inherit" : "pipe",
      maxBuffer: 64 * 1024 * 1024,
    });
  try {
    ksr(["install", "--kubeconfig", state.kubeconfig, "--wait"]);
    await createBenchNamespaces(client);
    await body({ dir, control, state, client, ksr });
  } finally {
    client.close();
    await down({ dir });
    await rm(dir, { recursive: true, force: true });
    await rm(control, { recursive: true, force: true });
  }
}

export async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Prints the result, with when it was taken and the machine's load, and writes it to bench/results/NAME.json. */
export async function report(name: string, result: object): Promise<void> {
  const load = (await readFile("/proc/loadavg", "utf8")).trim();
  const text = `${JSON.stringify({ when: new Date().toISOString(), load, ...result }, undefined, 2)}\n`;
  process.stdout.write(text);
  await writeFile(join(packageRoot, "bench", "results", `${name}.json`), text);
}

/** The namespace the benchmarks protect in, and the one they recover into. */
export const benchNamespace = "bench";
export const benchTarget = "bench-dr";

/** Both namespaces, and the policy "bench" (points every 5 minutes, zstd). */
async function createBenchNamespaces(client: KubeClient): Promise<void> {
  for (const name of [benchNamespace, benchTarget]) await client.create(namespaces, { metadata: { name } });
  await defaultServiceAccount(client, benchNamespace);
  await client.create(replicationPolicies, {
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ReplicationPolicy",
    metadata: { name: "bench", namespace: benchNamespace },
    spec: {
      rpoThreshold: "5m",
      recoveryPointRetention: "1h",
      crashConsistentFrequency: "5m",
      capture: "Continuous",
      compression: "zstd",
      resync: { mode: "Automatic" },
    },
  });
}

/** The bench machine NAME once its status, for its current generation, is in `phase`. */
export async function machineIn(
  cluster: OperatorCluster,
  name: string,
  phase: string,
): Promise<ProtectedMachine | undefined> {
  const found = await cluster.client.get(protectedMachines, name, benchNamespace);
  return found?.status?.phase === phase && found.status.observedGeneration === found.metadata.generation
    ? found
    : undefined;
}

export function benchMachine(name: string): ProtectedMachine {
  return {
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ProtectedMachine",
    metadata: { name, namespace: benchNamespace },
    spec: {
      policyRef: { name: "bench" },
      source: { workloadRef: { kind: "StatefulSet", name } },
      target: { site: "recovery", namespace: benchTarget, storageClassName: "standard" },
      paused: false,
    },
  };
}

/** The host directory of a writer's claim at the primary site, once the writer has filled it. */
export function writtenVolume(cluster: OperatorCluster, claimName: string, timeoutMs: number): Promise<string> {
  return until(
    `the volume ${claimName}`,
    async () => {
      const found = await cluster.client.get(persistentVolumeClaims, claimName, benchNamespace);
      const path = join(cluster.dir, "node", "volumes", "ksr-primary", `pvc-${found?.metadata.uid ?? ""}`);
      return found?.metadata.uid !== undefined &&
        (await readFile(join(path, "ready")).then(
          () => true,
          () => false,
        ))
        ? path
        : undefined;
    },
    timeoutMs,
  );
}

/** The baseline: `cp -a` of a volume directory and a sync, in seconds. */
export async function copySeconds(cluster: OperatorCluster, source: string): Promise<number> {
  const copy = join(cluster.dir, "cp-baseline");
  const started = performance.now();
  execFileSync("cp", ["-a", source, copy]);
  execFileSync("sync");
  const seconds = (performance.now() - started) / 1000;
  await rm(copy, { recursive: true, force: true });
  return seconds;
}

export interface TimedProtection {
  /** The source volume's host directory. */
  volume: string;
  /** `cp -a` + sync of that directory. */
  cpSeconds: number;
  /** apply of the ProtectedMachine → Protected. */
  protectSeconds: number;
}

/**
 * A writer StatefulSet filling `mib` MiB, then its initial replication (apply → Protected) timed
 * against `cp -a` + sync of the same directory in the same run (the floor: a copy inside one kernel).
 */
export async function protectAgainstCopy(
  cluster: OperatorCluster,
  writer: { name: string; mib: number; whileWriting: string },
  timeoutMs: number,
): Promise<TimedProtection> {
  const { name, mib, whileWriting } = writer;
  await cluster.client.create(
    statefulSets,
    writerStatefulSet({ name, namespace: benchNamespace, mib, control: cluster.control, whileWriting }),
  );
  const volume = await writtenVolume(cluster, `data-${name}-0`, timeoutMs);
  const cpSeconds = await copySeconds(cluster, volume);
  const started = performance.now();
  await cluster.client.create(protectedMachines, benchMachine(name));
  await until(`${name} Protected`, () => machineIn(cluster, name, "Protected"), timeoutMs);
  return { volume, cpSeconds, protectSeconds: (performance.now() - started) / 1000 };
}
