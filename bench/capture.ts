// `npm run bench -- capture`: the two capture strategies against each other and against no agent,
// each ratio against a baseline measured in the same run (bench/results/capture.json):
//  - writer cost: 4 KiB random pwrites per second from another process, with capture attached vs none;
//  - lag under 20 MB/s of 4–64 KiB random writes, on 100 files of 4 MiB and on 4 files of 1 GiB;
//  - lag under 54 MB/s (ASR's per-VM churn limit), and whether it stays bounded;
//  - how long crash-consistent cuts hold the application's writes (write ranges), under load.
// KSR_BENCH_LAG_SECONDS (default 60) sets each load's length; --only NAME,... runs some scenarios.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { PointReport } from "../src/replicator/agent/point-cutter.js";
import { LocalPipeline } from "../src/replicator/local-pipeline.js";
import { freePort } from "../src/local/ports.js";
import { clientCredentials } from "../src/replicator/tls.js";
import { cutsWhileLoaded } from "./points.js";
import { lagUnderLoad, percentile, type LagResult, type ScenarioResult } from "./replication.js";

const exec = promisify(execFile);
const mib = 1024 * 1024;
const strategies = ["tree-scan", "write-ranges"] as const;

type Row = ScenarioResult;

/** Writes per second of `count` 4 KiB pwrites at random 4 KiB offsets of a 64 MiB file, from another process. */
async function writeRate(file: string, count: number): Promise<number> {
  const program = `const fs = require("fs"); const fd = fs.openSync(process.argv[1], "r+"); const block = Buffer.alloc(4096, 9);
    const start = performance.now();
    for (let i = 0; i < ${count}; i++) fs.writeSync(fd, block, 0, 4096, 4096 * Math.floor(Math.random() * 16384));
    process.stdout.write(String(${count} / ((performance.now() - start) / 1000))); fs.closeSync(fd);`;
  const { stdout } = await exec(process.execPath, ["-e", program, file]);
  return Number(stdout);
}

async function withPipeline<T>(work: string, capture: string, source: string, body: () => Promise<T>): Promise<T> {
  const pipeline = await LocalPipeline.create({
    source,
    target: join(work, `target-${capture}`),
    work: join(work, `pipeline-${capture}`),
    once: false,
    logDir: work,
    agentArgs: ["--capture", capture, "--crash-point-interval", "1h"],
  });
  await pipeline.startAll();
  try {
    return await body();
  } finally {
    await pipeline.stopAll();
  }
}

async function writerCost(work: string): Promise<Row[]> {
  const source = join(work, "writer-source");
  await mkdir(source, { recursive: true });
  const file = join(source, "data");
  await writeFile(file, Buffer.alloc(64 * mib, 1));
  const count = 40_000;
  const rates: Record<string, number> = {};
  // The baseline before and after the runs with capture, averaged (the machine's load drifts).
  const before = await writeRate(file, count);
  for (const capture of strategies)
    rates[capture] = await withPipeline(work, capture, source, async () => {
      await waitForFile(join(work, `target-${capture}`, "data"), 64 * mib);
      return writeRate(file, count);
    });
  const after = await writeRate(file, count);
  const baseline = (before + after) / 2;
  return strategies.map((capture) => ({
    scenario: `writer cost (${capture})`,
    bytes: count * 4096,
    seconds: count / (rates[capture] ?? 1),
    baseline: "the same writes without an agent (mean of a run before and after)",
    baselineSeconds: count / baseline,
    ratio: (rates[capture] ?? 0) / baseline,
    writesPerSecond: rates[capture] ?? 0,
    baselineWritesPerSecond: baseline,
    baselineBefore: before,
    baselineAfter: after,
  }));
}

async function waitForFile(path: string, size: number): Promise<void> {
  for (;;) {
    const { stdout } = await exec("stat", ["-c", "%s", path]).catch(() => ({ stdout: "-1" }));
    if (Number(stdout) === size) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function lagRow(scenario: string, lag: LagResult, goal: number, loadBytesPerSecond: number): Row {
  return {
    scenario,
    bytes: lag.written,
    seconds: lag.p99,
    baseline: `goal: p99 <= ${goal} s`,
    baselineSeconds: goal,
    ratio: goal / lag.p99,
    p50Seconds: lag.p50,
    p99Seconds: lag.p99,
    samples: lag.samples,
    unseenSamples: lag.unseen,
    loadBytesPerSecond,
    replicatedBytesPerSecond: lag.bytesPerSecond,
  };
}

export async function run(args: string[]): Promise<void> {
  const seconds = Number(process.env.KSR_BENCH_LAG_SECONDS ?? "60");
  const onlyIndex = args.indexOf("--only");
  const only = onlyIndex >= 0 ? (args[onlyIndex + 1] ?? "").split(",") : undefined;
  const wanted = (name: string) => only === undefined || only.includes(name);
  const work = await mkdtemp(join(tmpdir(), "ksr-bench-capture-"));
  const rows: Row[] = [];
  const load = () =>
    loadavg()
      .map((value) => value.toFixed(1))
      .join(" ");
  const note = (row: Row) => {
    row.loadAverage = load();
    rows.push(row);
    process.stdout.write(`${JSON.stringify(row)}\n`);
  };
  try {
    if (wanted("writer")) for (const row of await writerCost(join(work, "writer"))) note(row);
    for (const capture of strategies) {
      if (wanted("lag-4mib"))
        note(
          lagRow(
            `lag 20 MB/s, 100 x 4 MiB (${capture})`,
            await lagUnderLoad(join(work, `lag-${capture}`), seconds, {
              pipeline: { agentArgs: ["--capture", capture, "--crash-point-interval", "1h"] },
            }),
            2,
            20e6,
          ),
        );
      if (wanted("lag-1gib"))
        note(
          lagRow(
            `lag 20 MB/s, 4 x 1 GiB (${capture})`,
            await lagUnderLoad(join(work, `big-${capture}`), seconds, {
              files: 4,
              fileSize: 1024 * mib,
              pipeline: { agentArgs: ["--capture", capture, "--crash-point-interval", "1h"] },
            }),
            2,
            20e6,
          ),
        );
      if (wanted("lag-54"))
        note(
          lagRow(
            `lag 54 MB/s, 100 x 4 MiB (${capture})`,
            await lagUnderLoad(join(work, `fast-${capture}`), seconds, {
              bytesPerSecond: 54e6,
              pipeline: { agentArgs: ["--capture", capture, "--crash-point-interval", "1h"] },
            }),
            2,
            54e6,
          ),
        );
    }
    if (wanted("hold")) {
      const points: PointReport[] = [];
      const barrierPort = await freePort();
      let refused = 0;
      const lag = await lagUnderLoad(join(work, "hold"), seconds, {
        pipeline: {
          agentArgs: [
            "--capture",
            "write-ranges",
            "--crash-point-interval",
            "1h",
            "--barrier-listen",
            `localhost:${barrierPort}`,
          ],
          onPoint: (point) => points.push(point),
        },
        whileLoaded: async (pipeline, loaded) => {
          refused = await cutsWhileLoaded(
            `localhost:${barrierPort}`,
            await clientCredentials(pipeline.identity("coordinator")),
            loaded,
          );
        },
      });
      const holds = points.flatMap((point) => (point.writeHoldMs === undefined ? [] : [point.writeHoldMs]));
      holds.sort((a, b) => a - b);
      const p99 = percentile(holds, 99);
      note({
        scenario: "crash-consistent cut hold time under 20 MB/s (write-ranges)",
        bytes: lag.written,
        seconds: p99 / 1000,
        baseline: "goal: hold p99 <= 50 ms",
        baselineSeconds: 0.05,
        ratio: 50 / p99,
        holdP50Ms: percentile(holds, 50),
        holdP99Ms: p99,
        holdMaxMs: holds.at(-1) ?? Number.NaN,
        cuts: points.length,
        crash: points.filter((point) => point.consistency === "crash").length,
        bestEffort: points.filter((point) => point.consistency === "best-effort").length,
        refused,
        lagP50Seconds: lag.p50,
        lagP99Seconds: lag.p99,
      });
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  await mkdir("bench/results", { recursive: true });
  await writeFile("bench/results/capture.json", `${JSON.stringify(rows, null, 2)}\n`);
}
