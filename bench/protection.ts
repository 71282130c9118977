// `npm run bench -- protection`: the operator end to end on a fresh `ksr local` cluster.
//   1. apply → Protected for a StatefulSet with a 100 MiB volume, against `cp -a` + sync of the
//      same volume directory in the same run, just before (the floor: a copy inside one kernel);
//   2. RPO p50/p99 read from the machine's status while its pod writes 5 MB/s;
//   3. the leading operator's RSS with no machine and with 20 machines Protected.
// KSR_BENCH_MACHINES (default 20) and KSR_BENCH_RPO_SECONDS (default 60) shrink it.
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { protectedMachines } from "../src/api/types.js";
import { policyDurationMs } from "../src/controllers/replicationpolicy/flags.js";
import { defaultNamespace, leaseName } from "../src/install/manifests.js";
import { leases, statefulSets } from "../src/runtime/index.js";
import { ringOfMiB, writerStatefulSet } from "../test/fixture/writer.js";
import {
  benchMachine,
  benchNamespace,
  machineIn,
  protectAgainstCopy,
  report,
  until,
  withOperatorCluster,
} from "./operator-cluster.js";

const ns = benchNamespace;

const writer = (name: string, mib: number, control: string) =>
  writerStatefulSet({ name, namespace: ns, mib, control, whileWriting: ringOfMiB });

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

export async function run(): Promise<void> {
  const machines = Number(process.env.KSR_BENCH_MACHINES ?? 20);
  const rpoSeconds = Number(process.env.KSR_BENCH_RPO_SECONDS ?? 60);
  await withOperatorCluster("protection", async (cluster) => {
    const { control, client } = cluster;
    const leaderRss = async (): Promise<number> => {
      const holder = (await client.get(leases, leaseName, defaultNamespace))?.spec?.holderIdentity ?? "";
      const pid = holder.slice(holder.lastIndexOf("_") + 1);
      const status = await readFile(`/proc/${pid}/status`, "utf8");
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
    };
    const protectedNow = (name: string) => machineIn(cluster, name, "Protected");
    const idleRss = await leaderRss();

    // 1. apply → Protected, 100 MiB, against cp -a + sync of the same directory.
    const big = await protectAgainstCopy(cluster, { name: "big", mib: 100, whileWriting: ringOfMiB }, 20 * 60_000);

    // 2. RPO under 5 MB/s, read from status (refreshed every 10 s by the controller).
    await writeFile(join(control, "big", "write"), "");
    const rpo: number[] = [];
    const throughput: number[] = [];
    const rpoUntil = Date.now() + rpoSeconds * 1000;
    while (Date.now() < rpoUntil) {
      const status = (await client.get(protectedMachines, "big", ns))?.status;
      if (status?.rpo !== undefined) rpo.push(policyDurationMs(status.rpo, "rpo") / 1000);
      const rate = status?.volumes?.[0]?.throughputBytesPerSecond;
      if (rate !== undefined) throughput.push(rate);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
    await rm(join(control, "big", "write"), { force: true });
    rpo.sort((a, b) => a - b);

    // 3. RSS with many machines.
    for (let i = 0; i < machines; i++) await client.create(statefulSets, writer(`m${i}`, 1, control));
    for (let i = 0; i < machines; i++) await client.create(protectedMachines, benchMachine(`m${i}`));
    const manyStarted = performance.now();
    for (let i = 0; i < machines; i++) await until(`m${i} Protected`, () => protectedNow(`m${i}`), 20 * 60_000);
    const manySeconds = (performance.now() - manyStarted) / 1000;
    await new Promise((resolve) => setTimeout(resolve, 30_000)); // a few status refreshes
    const manyRss = await leaderRss();

    const result = {
      applyToProtected: {
        bytes: 100 * 1024 * 1024,
        seconds: big.protectSeconds,
        baseline: "cp -a + sync",
        baselineSeconds: big.cpSeconds,
        ratio: big.cpSeconds / big.protectSeconds,
      },
      rpoUnder5MBps: {
        samples: rpo.length,
        p50Seconds: percentile(rpo, 50),
        p99Seconds: percentile(rpo, 99),
        maxSeconds: rpo.at(-1),
        // What the process server received meanwhile (status.volumes[0].throughputBytesPerSecond).
        meanThroughputBytesPerSecond: throughput.reduce((a, b) => a + b, 0) / Math.max(1, throughput.length),
      },
      operatorRss: { idleBytes: idleRss, machines: machines + 1, bytes: manyRss, allProtectedSeconds: manySeconds },
    };
    await report("protection", result);
  });
}
