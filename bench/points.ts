// `npm run bench -- points`: what recovery points cost under the replication benchmark's load
// (20 MB/s of 4–64 KiB random writes into 100 files of 4 MiB), against a baseline measured in the
// same run without points:
//   - lag (write → readable in the replica) and throughput with crash points every 30 s vs none;
//   - per point: how long the capture loop stood still for the cut, and the time from the cut
//     until the master target applied its marker (p50/p99), for the 30 s cadence and for
//     on-demand cuts through the agent's Barrier service every few seconds (more samples).
// KSR_BENCH_POINTS_SECONDS sets the load's duration per run (default 90).
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BarrierClient, Consistency } from "../src/gen/ksr/replication/v1/replication.js";
import type { PointReport } from "../src/replicator/agent/point-cutter.js";
import { callWithin } from "../src/replicator/grpc-util.js";
import { freePort } from "../src/local/ports.js";
import { clientCredentials, grpcOptions } from "../src/replicator/tls.js";
import { lagUnderLoad, percentile, type LagResult } from "./replication.js";

const onDemandEveryMs = 3000;

interface Row {
  scenario: string;
  baseline: string;
  ratio: number;
  [measure: string]: number | string | Record<string, number>;
}

function lagRow(scenario: string, result: LagResult, baseline: LagResult | undefined): Row {
  return {
    scenario,
    baseline: baseline === undefined ? "itself" : "throughput without points, same run",
    ratio: baseline === undefined ? 1 : result.bytesPerSecond / baseline.bytesPerSecond,
    mbPerSecond: result.bytesPerSecond / 1e6,
    lagP50Seconds: result.p50,
    lagP99Seconds: result.p99,
    lagSamples: result.samples,
  };
}

function sortedMs(values: number[]): number[] {
  return values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
}

/**
 * Per-point cost: how long the cut waited for the capture round in progress, how long capture
 * then stood still (catch-up reads and the marker), and cut → marker applied at the master
 * target, against the same run's replication lag
 * (a marker is applied after every change before it, so it can never beat the lag).
 */
function pointRow(scenario: string, points: readonly PointReport[], lag: LagResult): Row {
  const waited = sortedMs(points.map((point) => point.waitMs));
  const stopped = sortedMs(points.map((point) => point.cutMs - point.waitMs));
  const applied = sortedMs(points.map((point) => point.appliedMs ?? Number.NaN));
  const counts: Record<string, number> = {};
  for (const point of points) counts[point.consistency] = (counts[point.consistency] ?? 0) + 1;
  return {
    scenario,
    baseline: "p50 replication lag of the same run (cut → applied p50 / lag p50)",
    ratio: percentile(applied, 50) / 1000 / lag.p50,
    points: points.length,
    consistency: counts,
    waitForRoundP50Ms: percentile(waited, 50),
    waitForRoundP99Ms: percentile(waited, 99),
    captureStoppedP50Ms: percentile(stopped, 50),
    captureStoppedP99Ms: percentile(stopped, 99),
    cutToAppliedP50Ms: percentile(applied, 50),
    cutToAppliedP99Ms: percentile(applied, 99),
  };
}

/** Asks the agent's Barrier service for a point every few seconds while the load runs. */
export async function cutsWhileLoaded(
  address: string,
  credentials: Awaited<ReturnType<typeof clientCredentials>>,
  loaded: () => boolean,
): Promise<number> {
  const client = new BarrierClient(address, credentials, grpcOptions);
  const cuts: Promise<unknown>[] = [];
  let refused = 0;
  try {
    while (loaded()) {
      await new Promise((resolve) => setTimeout(resolve, onDemandEveryMs));
      if (!loaded()) break;
      // Not awaited: the next cut starts while this one's marker travels to the master target.
      const cut = callWithin(client.cut.bind(client), { requested: Consistency.CONSISTENCY_CRASH }, 120_000).catch(
        () => refused++,
      );
      cuts.push(cut);
    }
    await Promise.all(cuts);
  } finally {
    client.close();
  }
  return refused;
}

export async function run(): Promise<void> {
  const seconds = Number(process.env.KSR_BENCH_POINTS_SECONDS ?? "90");
  const work = await mkdtemp(join(tmpdir(), "ksr-bench-points-"));
  const rows: Row[] = [];
  try {
    const baseline = await lagUnderLoad(join(work, "none"), seconds, {
      pipeline: { agentArgs: ["--crash-point-interval", "1h"] },
    });
    rows.push(lagRow("lag, no points", baseline, undefined));

    const cadencePoints: PointReport[] = [];
    const cadence = await lagUnderLoad(join(work, "cadence"), seconds, {
      pipeline: {
        agentArgs: ["--crash-point-interval", "30s"],
        onPoint: (point) => cadencePoints.push(point),
      },
    });
    rows.push(lagRow("lag, crash points every 30 s", cadence, baseline));
    rows.push(pointRow("points every 30 s", cadencePoints, cadence));

    const onDemandPoints: PointReport[] = [];
    const barrierPort = await freePort();
    let refused = 0;
    const onDemand = await lagUnderLoad(join(work, "on-demand"), seconds, {
      pipeline: {
        agentArgs: ["--crash-point-interval", "1h", "--barrier-listen", `localhost:${barrierPort}`],
        onPoint: (point) => onDemandPoints.push(point),
      },
      whileLoaded: async (pipeline, loaded) => {
        refused = await cutsWhileLoaded(
          `localhost:${barrierPort}`,
          await clientCredentials(pipeline.identity("coordinator")),
          loaded,
        );
      },
    });
    const every = `${onDemandEveryMs / 1000} s`;
    rows.push(lagRow(`lag, on-demand points every ${every}`, onDemand, baseline));
    rows.push({ ...pointRow(`on-demand points every ${every}`, onDemandPoints, onDemand), refused });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  await mkdir("bench/results", { recursive: true });
  await writeFile("bench/results/points.json", `${JSON.stringify(rows, null, 2)}\n`);
  for (const row of rows) {
    const { scenario, baseline, ratio, ...measures } = row;
    process.stdout.write(`${scenario.padEnd(44)} ratio ${ratio.toFixed(2)} (vs ${baseline})\n`);
    process.stdout.write(`    ${JSON.stringify(measures)}\n`);
  }
}
