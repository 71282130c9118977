// `npm run bench -- reprotect`: reprotect and failback of a 1 GiB volume on a fresh `ksr local`
// cluster, through the installed operator.
//   1. baseline: `cp -a` + sync of the volume directory, and the product's own full copy (apply →
//      Protected), both of the same 1 GiB in the same run;
//   2. planned failover + commit, then 1% of the 64 KiB blocks changed at the recovery site;
//   3. Reprotect: bytes the agent sent (its "resync done" line) against the bytes changed, and
//      its duration; the volumes are then compared byte for byte;
//   4. failback (a Planned run on the reprotected machine): its RTO as the run measured it.
// KSR_BENCH_MIB (default 1024) shrinks the volume.
import { execFileSync } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { failoverRuns, type FailoverRun, type FailoverRunPhase, type FailoverRunType } from "../src/api/types.js";
import { persistentVolumeClaims, pods } from "../src/runtime/index.js";
import { treesDiffer } from "../test/fixture/tree-compare.js";
import { appendSmall } from "../test/fixture/writer.js";
import {
  benchNamespace,
  benchTarget,
  machineIn,
  protectAgainstCopy,
  report,
  until,
  withOperatorCluster,
} from "./operator-cluster.js";

const ns = benchNamespace;
const target = benchTarget;
const name = "vol";
const claim = `data-${name}-0`;
const blockSize = 64 * 1024;

export async function run(): Promise<void> {
  const mib = Number(process.env.KSR_BENCH_MIB ?? 1024);
  await withOperatorCluster("reprotect", async (cluster) => {
    const { dir, client, ksr } = cluster;
    const volumeDir = async (namespace: string, node: string) => {
      const found = await client.get(persistentVolumeClaims, claim, namespace);
      return join(dir, "node", "volumes", node, `pvc-${found?.metadata.uid ?? ""}`);
    };
    const machinePhase = (phase: string) => machineIn(cluster, name, phase);
    const runUntil = async (type: FailoverRunType, phase: FailoverRunPhase): Promise<FailoverRun> => {
      const created = await client.create(failoverRuns, {
        apiVersion: "dr.ksr.io/v1alpha1",
        kind: "FailoverRun",
        metadata: { generateName: `${name}-${type.toLowerCase()}-`, name: "", namespace: ns },
        spec: { type, machineRef: { name }, commit: false, cleanup: false },
      } as FailoverRun);
      return until(
        `${type} run ${phase}`,
        async () => {
          const found = await client.get(failoverRuns, created.metadata.name, ns);
          if (found?.status?.phase === "Failed") throw new Error(`${type} run failed: ${JSON.stringify(found.status)}`);
          return found?.status?.phase === phase ? found : undefined;
        },
        30 * 60_000,
      );
    };
    const commit = async (failover: FailoverRun) => {
      await client.patch(
        failoverRuns,
        { name: failover.metadata.name, namespace: ns },
        { spec: { commit: true } },
        "merge",
      );
      await until("FailedOver", () => machinePhase("FailedOver"), 5 * 60_000);
    };
    const volumeBytes = mib * 2 ** 20;

    // 1. A full copy, twice: cp -a + sync, and the product's initial replication.
    const full = await protectAgainstCopy(cluster, { name, mib, whileWriting: appendSmall }, 60 * 60_000);
    const source = full.volume;

    // 2. Planned failover and commit; then 1% of the blocks change where the workload runs now.
    await commit(await runUntil("Planned", "Succeeded"));
    const recovered = await volumeDir(target, "ksr-recovery");
    const blocksPerFile = 2 ** 20 / blockSize;
    const blocks = (volumeBytes / blockSize) * 0.01;
    const chosen = new Set<string>();
    while (chosen.size < blocks) chosen.add(`${randomInt(mib)}:${randomInt(blocksPerFile)}`);
    for (const entry of chosen) {
      const [file, block] = entry.split(":").map(Number) as [number, number];
      const handle = await open(join(recovered, "static", `f${file}`), "r+");
      await handle.write(randomBytes(blockSize), 0, blockSize, block * blockSize);
      await handle.close();
    }
    execFileSync("sync");
    const changedBytes = chosen.size * blockSize;

    // 3. Reprotect: what travelled, against what changed.
    const reprotectStarted = performance.now();
    await runUntil("Reprotect", "Succeeded");
    const reprotectSeconds = (performance.now() - reprotectStarted) / 1000;
    const agents = await client.list(pods, {
      namespace: target,
      labelSelector: `dr.ksr.io/machine=${name},app.kubernetes.io/component=agent`,
    });
    const agent = agents.items[0]?.metadata.name ?? "";
    const logs = ksr(["local", "logs", agent, "-n", target, "-c", "agent-0", "--dir", dir], false).toString();
    const done = /resync done: (\d+) bytes compared, (\d+) bytes sent/.exec(logs);
    if (done === null) throw new Error(`the agent did not report its resync:\n${logs}`);
    const [comparedBytes, sentBytes] = [Number(done[1]), Number(done[2])];
    const difference = await treesDiffer(recovered, source);
    if (difference !== "") throw new Error(`after reprotect the original volume differs:\n${difference}`);

    // 4. Failback: a Planned run on the reprotected machine.
    const failback = await runUntil("Planned", "Succeeded");
    const result = {
      volumeBytes,
      fullCopy: { cpSeconds: full.cpSeconds, initialReplicationSeconds: full.protectSeconds },
      reprotect: {
        changedBlocks: chosen.size,
        changedBytes,
        comparedBytes,
        sentBytes,
        wireOverChanged: sentBytes / changedBytes,
        wireOverVolume: sentBytes / volumeBytes,
        seconds: reprotectSeconds,
      },
      failback: { rto: failback.status?.rto, runSeconds: secondsOf(failback) },
    };
    await report("reprotect", result);
  });
}

function secondsOf(run: FailoverRun): number | undefined {
  const { startTime, completionTime } = run.status ?? {};
  return startTime === undefined || completionTime === undefined
    ? undefined
    : (Date.parse(completionTime) - Date.parse(startTime)) / 1000;
}
