// `npm run bench -- points`: what recovery points cost under the replication benchmark's load
// (20 MB/s of 4–64 KiB random writes into 100 files of 4 MiB), against a baseline measured in the
// same run without points:
//   - lag (write → readable in the replica) and throughput with crash points every 30 s vs none;
//   - per-point latency, from the start of a cut until the master target applied its marker,
//     for on-demand cuts through the agent's Barrier service every few seconds under the load.
// KSR_BENCH_POINTS_SECONDS sets the load's duration per run (default 90).
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Metadata } from "@grpc/grpc-js";
import {
  BarrierClient,
  Consistency,
  type CutReply,
  type CutRequest,
} from "../src/gen/ksr/replication/v1/replication.js";
import type { PointReport } from "../src/replicator/agent/point-cutter.js";
import { unaryCall } from "../src/replicator/grpc-util.js";
import { consistencyFromWire } from "../src/replicator/journal/point.js";
import { freePort } from "../src/local/ports.js";
import { clientCredentials, grpcOptions } from "../src/replicator/tls.js";
import { lagUnderLoad, percentile, type LagResult } from "./replication.js";

const onDemandEveryMs = 5000;

interface Row {
  scenario: string;
  baseline: string;
  ratio: number;
  [measure: string]: number | string | Record<string, number>;
}

function lagRow(scenario: string, result: LagResult, baseline: LagResult | undefined): Row {
  return {
    scenario,
    baseline: baseline === undefined ? "itself" : "no points, same run (throughput ratio)",
    ratio: baseline === undefined ? 1 : result.bytesPerSecond / baseline.bytesPerSecond,
    mbPerSecond: result.bytesPerSecond / 1e6,
    lagP50Seconds: result.p50,
    lagP99Seconds: result.p99,
    lagSamples: result.samples,
  };
}

function latencyRow(scenario: string, latenciesMs: number[], consistencies: string[], baseline: LagResult): Row {
  const sorted = [...latenciesMs].sort((a, b) => a - b);
  const counts: Record<string, number> = {};
  for (const consistency of consistencies) counts[consistency] = (counts[consistency] ?? 0) + 1;
  const p50 = percentile(sorted, 50);
  return {
    scenario,
    baseline: "p50 replication lag without points, same run",
    ratio: p50 / 1000 / baseline.p50,
    points: sorted.length,
    cutToAppliedP50Ms: p50,
    cutToAppliedP99Ms: percentile(sorted, 99),
    cutToAppliedMaxMs: sorted.at(-1) ?? Number.NaN,
    consistency: counts,
  };
}

/** Cuts a point through the agent's Barrier service every few seconds while the load runs. */
async function cutsWhileLoaded(
  address: string,
  credentials: Awaited<ReturnType<typeof clientCredentials>>,
  loaded: () => boolean,
  latenciesMs: number[],
  consistencies: string[],
): Promise<void> {
  const client = new BarrierClient(address, credentials, grpcOptions);
  try {
    while (loaded()) {
      await new Promise((resolve) => setTimeout(resolve, onDemandEveryMs));
      if (!loaded()) break;
      const started = Date.now();
      const reply = await unaryCall<CutRequest, CutReply>(
        (request, callback) => client.cut(request, new Metadata(), { deadline: Date.now() + 120_000 }, callback),
        { requested: Consistency.CONSISTENCY_CRASH },
      );
      latenciesMs.push(Date.now() - started);
      consistencies.push(consistencyFromWire(reply.consistency));
    }
  } finally {
    client.close();
  }
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
    rows.push(
      latencyRow(
        "30 s cadence: cut → applied",
        cadencePoints.map((point) => point.appliedMs ?? Number.NaN),
        cadencePoints.map((point) => point.consistency),
        baseline,
      ),
    );

    const latenciesMs: number[] = [];
    const consistencies: string[] = [];
    const barrierPort = await freePort();
    const onDemand = await lagUnderLoad(join(work, "on-demand"), seconds, {
      pipeline: { agentArgs: ["--crash-point-interval", "1h", "--barrier-listen", `localhost:${barrierPort}`] },
      whileLoaded: async (pipeline, loaded) =>
        cutsWhileLoaded(
          `localhost:${barrierPort}`,
          await clientCredentials(pipeline.identity("coordinator")),
          loaded,
          latenciesMs,
          consistencies,
        ),
    });
    rows.push(lagRow(`lag, on-demand points every ${onDemandEveryMs / 1000} s`, onDemand, baseline));
    rows.push(
      latencyRow(`on-demand every ${onDemandEveryMs / 1000} s: cut → applied`, latenciesMs, consistencies, baseline),
    );
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
