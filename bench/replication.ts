// `npm run bench -- replication`: the data path against rsync on the same data in the same run.
// KSR_BENCH_SCALE (default 1) shrinks the data set; KSR_BENCH_LAG_SECONDS (default 60) the load test;
// --no-fidelity skips the metadata-heavy initial copy against rsync -aHAX --numeric-ids.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, rm, truncate, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import type { AgentProgress } from "../src/replicator/agent/agent.js";
import { LocalPipeline, type PipelineOptions } from "../src/replicator/local-pipeline.js";
import { fidelityScenario } from "./fidelity.js";

export interface ScenarioResult {
  scenario: string;
  bytes: number;
  seconds: number;
  baseline: string;
  baselineSeconds: number;
  ratio: number;
  [extra: string]: string | number;
}

const mib = 1024 * 1024;

/** The machine's 1-minute load average now (the machine is shared: every figure carries its load). */
function load(): number {
  return Math.round((loadavg()[0] ?? 0) * 100) / 100;
}
const blockBytes = 64 * 1024;

/** 60% compressible text, 40% random, like the issue's data set. */
function mixedContent(size: number): Buffer {
  const text = Buffer.from(
    "kube-site-recovery replicates volumes block by block; ".repeat(Math.ceil((size * 0.6) / 54) + 1),
  );
  return Buffer.concat([text.subarray(0, Math.floor(size * 0.6)), randomBytes(size - Math.floor(size * 0.6))]);
}

export async function makeTree(root: string, scale: number): Promise<{ bytes: number; small: string[] }> {
  await mkdir(join(root, "small"), { recursive: true });
  const bigSize = Math.floor(512 * mib * scale);
  const big = await open(join(root, "big.bin"), "w");
  for (let offset = 0; offset < bigSize; offset += 16 * mib) {
    const chunk = mixedContent(Math.min(16 * mib, bigSize - offset));
    await big.write(chunk, 0, chunk.length, offset);
  }
  await big.close();
  let bytes = bigSize;
  const small: string[] = [];
  const count = Math.max(10, Math.floor(1000 * scale));
  for (let i = 0; i < count; i++) {
    const size = 128 * 1024 + Math.floor(Math.random() * (896 * 1024));
    const name = `small/file-${String(i).padStart(4, "0")}.dat`;
    await writeFile(join(root, name), mixedContent(size));
    small.push(name);
    bytes += size;
  }
  return { bytes, small };
}

function timed<T>(work: () => T): { value: T; seconds: number } {
  const started = process.hrtime.bigint();
  const value = work();
  return { value, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

async function timedAsync<T>(work: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const started = process.hrtime.bigint();
  const value = await work();
  return { value, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

function rsync(args: string[]): void {
  execFileSync("rsync", args, { stdio: "inherit" });
  execFileSync("sync");
}

interface Region {
  file: string;
  offset: number;
  data: Buffer;
}

async function writeRegion(root: string, region: Region): Promise<void> {
  const handle = await open(join(root, region.file), "r+");
  await handle.write(region.data, 0, region.data.length, region.offset);
  await handle.close();
}

/** 1% of the big file's 64 KiB blocks and one 64 KiB region in 10 small files. */
async function changeBlocks(root: string, small: string[], bigSize: number): Promise<Region[]> {
  const blocks = Math.floor(bigSize / blockBytes);
  const chosen = new Set<number>();
  while (chosen.size < Math.max(1, Math.floor(blocks / 100))) chosen.add(Math.floor(Math.random() * blocks));
  const regions: Region[] = [
    ...[...chosen].map((block) => ({ file: "big.bin", offset: block * blockBytes, data: randomBytes(blockBytes) })),
    ...small.slice(0, 10).map((file) => ({ file, offset: 0, data: randomBytes(blockBytes) })),
  ];
  for (const region of regions) await writeRegion(root, region);
  return regions;
}

async function regionsReplicated(target: string, regions: readonly Region[]): Promise<boolean> {
  for (const region of regions) {
    const handle = await open(join(target, region.file), "r");
    const read = Buffer.alloc(region.data.length);
    await handle.read(read, 0, read.length, region.offset);
    await handle.close();
    if (!read.equals(region.data)) return false;
  }
  return true;
}

async function waitFor(condition: () => boolean | Promise<boolean>, pollMs: number): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, pollMs));
}

/**
 * With replication running and idle, changes the data and measures until every changed region is
 * in the replica and the master target has applied (and so made durable) all the process server holds.
 */
async function incremental(
  options: PipelineOptions,
  small: string[],
  bigSize: number,
): Promise<{ seconds: number; changed: number; wireBytes: number }> {
  let latest: AgentProgress | undefined;
  const pipeline = await LocalPipeline.create({
    ...options,
    once: false,
    onProgress: (progress) => (latest = progress),
  });
  await pipeline.startAll();
  try {
    await waitFor(
      () => latest !== undefined && latest.ackedSeq === latest.lastSeq && latest.appliedSeq >= latest.lastSeq,
      100,
    );
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const pushedBefore = latest?.bytesPushed ?? 0;
    const regions = await changeBlocks(options.source, small, bigSize);
    const { seconds } = await timedAsync(() =>
      waitFor(async () => {
        if (!(await regionsReplicated(options.target, regions))) return false;
        const reply = await pipeline.openAsAgent();
        return reply.appliedSeq >= reply.durableSeq;
      }, 20),
    );
    await new Promise((resolve) => setTimeout(resolve, 2500)); // the next progress report carries the bytes
    const changed = regions.reduce((sum, region) => sum + region.data.length, 0);
    return { seconds, changed, wireBytes: (latest?.bytesPushed ?? 0) - pushedBefore };
  } finally {
    await pipeline.stopAll();
  }
}

async function runOnce(options: PipelineOptions): Promise<{ seconds: number; bytesPushed: number }> {
  const pipeline = await LocalPipeline.create(options);
  try {
    const { value, seconds } = await timedAsync(async () => {
      await pipeline.startAll();
      return pipeline.agentExit();
    });
    return { seconds, bytesPushed: value.bytesPushed };
  } finally {
    await pipeline.stopAll();
  }
}

/** p-th percentile of sorted values. */
export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

export interface LagResult {
  p50: number;
  p99: number;
  samples: number;
  /** Samples still not seen at the replica when the drain gave up (30 s after the load). */
  unseen: number;
  written: number;
  /** Bytes written / (load seconds + seconds until the last sampled write was replicated). */
  bytesPerSecond: number;
}

export interface LagOptions {
  pipeline?: Partial<PipelineOptions>;
  /** Runs beside the load (for example on-demand recovery points) until the load ends. */
  whileLoaded?: (pipeline: LocalPipeline, loaded: () => boolean) => Promise<void>;
  /** The written files (default 100 of 4 MiB; larger ones are made sparse, then written into). */
  files?: number;
  fileSize?: number;
  /** The load (default 20 MB/s). */
  bytesPerSecond?: number;
}

/** Replication lag (source write → readable in the replica) under 20 MB/s (or as given) of 4–64 KiB random writes. */
export async function lagUnderLoad(work: string, seconds: number, options: LagOptions = {}): Promise<LagResult> {
  const source = join(work, "lag-source");
  const target = join(work, "lag-target");
  await mkdir(source, { recursive: true });
  const files = options.files ?? 100;
  const fileSize = options.fileSize ?? 4 * mib;
  for (let i = 0; i < files; i++) {
    if (fileSize <= 64 * mib) await writeFile(join(source, `f${i}`), Buffer.alloc(fileSize));
    else await writeFile(join(source, `f${i}`), "").then(() => truncate(join(source, `f${i}`), fileSize));
  }
  const pipeline = await LocalPipeline.create({
    source,
    target,
    work: join(work, "lag-work"),
    once: false,
    logDir: work,
    ...options.pipeline,
  });
  await pipeline.startAll();
  const lags: number[] = [];
  let loadSeconds = 0;
  let drainSeconds = 0;
  const pending: { file: string; offset: number; data: Buffer; at: number }[] = [];
  let written = 0;
  let unseen = 0;
  const polling = { on: true };
  try {
    // Wait for the initial copy.
    for (;;) {
      try {
        const probe = await open(join(target, `f${files - 1}`), "r");
        const size = (await probe.stat()).size;
        await probe.close();
        if (size === fileSize) break;
      } catch {
        // not there yet
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const start = Date.now();
    const end = start + seconds * 1000;
    const beside = options.whileLoaded?.(pipeline, () => Date.now() < end);
    const perTick = (options.bytesPerSecond ?? 20e6) / 20; // in 50 ms ticks
    let nextSample = 0;
    // One poll at a time: overlapping polls of many pending samples would load the machine the
    // pipeline runs on.
    const poller = (async () => {
      while (polling.on) {
        for (const sample of [...pending]) {
          const handle = await open(join(target, sample.file), "r").catch(() => undefined);
          if (handle === undefined) continue;
          const read = Buffer.alloc(sample.data.length);
          await handle.read(read, 0, read.length, sample.offset);
          await handle.close();
          if (read.equals(sample.data)) {
            lags.push((Date.now() - sample.at) / 1000);
            pending.splice(pending.indexOf(sample), 1);
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    // A write over a sample not seen at the replica yet would replace what the poller waits for:
    // that sample would never match, go uncounted, and hold the drain below to its time limit.
    const overlapsPending = (file: string, offset: number, size: number) =>
      pending.some(
        (sample) =>
          sample.file === file && offset < sample.offset + sample.data.length && sample.offset < offset + size,
      );
    while (Date.now() < end) {
      const tickStart = Date.now();
      let tickBytes = 0;
      while (tickBytes < perTick) {
        const size = 4096 + Math.floor(Math.random() * (60 * 1024));
        let file: string;
        let offset: number;
        do {
          file = `f${Math.floor(Math.random() * files)}`;
          offset = Math.floor(Math.random() * (fileSize - size));
        } while (overlapsPending(file, offset, size));
        const data = randomBytes(size);
        const handle = await open(join(source, file), "r+");
        await handle.write(data, 0, size, offset);
        await handle.close();
        if (Date.now() >= nextSample) {
          pending.push({ file, offset, data, at: Date.now() });
          nextSample = Date.now() + 100;
        }
        tickBytes += size;
        written += size;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 50 - (Date.now() - tickStart))));
    }
    loadSeconds = (Date.now() - start) / 1000;
    const drainStart = Date.now();
    const drainUntil = Date.now() + 30_000;
    while (pending.length > 0 && Date.now() < drainUntil) await new Promise((resolve) => setTimeout(resolve, 50));
    drainSeconds = (Date.now() - drainStart) / 1000;
    unseen = pending.length;
    polling.on = false;
    await poller;
    await beside;
  } finally {
    polling.on = false;
    await pipeline.stopAll();
  }
  lags.sort((a, b) => a - b);
  return {
    p50: percentile(lags, 50),
    p99: percentile(lags, 99),
    samples: lags.length,
    unseen,
    written,
    bytesPerSecond: written / (loadSeconds + drainSeconds),
  };
}

export async function run(args: string[]): Promise<void> {
  const scale = Number(process.env.KSR_BENCH_SCALE ?? "1");
  const lagSeconds = Number(process.env.KSR_BENCH_LAG_SECONDS ?? "60");
  const work = await mkdtemp(join(tmpdir(), "ksr-bench-replication-"));
  const results: ScenarioResult[] = [];
  try {
    const source = join(work, "source");
    const { bytes, small } = await makeTree(source, scale);
    execFileSync("sync");

    let loadBefore = load();
    const rsyncInitial = timed(() => {
      rsync(["-a", `${source}/`, join(work, "rsync-target")]);
    });
    const ours = await runOnce({
      source,
      target: join(work, "target"),
      work: join(work, "pipeline"),
      once: true,
      logDir: work,
    });
    results.push({
      scenario: "initial",
      bytes,
      seconds: ours.seconds,
      baseline: "rsync -a + sync",
      baselineSeconds: rsyncInitial.seconds,
      ratio: rsyncInitial.seconds / ours.seconds,
      bytesPushed: ours.bytesPushed,
      loadBefore,
      loadAfter: load(),
    });

    loadBefore = load();
    const oursIncremental = await incremental(
      { source, target: join(work, "target"), work: join(work, "pipeline"), once: false, logDir: work },
      small,
      Math.floor(512 * mib * scale),
    );
    const rsyncIncremental = timed(() => {
      rsync(["-a", "--no-whole-file", "--inplace", `${source}/`, join(work, "rsync-target")]);
    });
    results.push({
      scenario: "incremental",
      bytes: oursIncremental.changed,
      seconds: oursIncremental.seconds,
      baseline: "rsync -a --no-whole-file --inplace + sync",
      baselineSeconds: rsyncIncremental.seconds,
      ratio: rsyncIncremental.seconds / oursIncremental.seconds,
      wireBytes: oursIncremental.wireBytes,
      wireBytesPerChangedByte: oursIncremental.wireBytes / oursIncremental.changed,
      loadBefore,
      loadAfter: load(),
    });

    // Metadata fidelity against rsync -aHAX --numeric-ids (bench/fidelity.ts; needs root).
    if (process.getuid?.() === 0 && !args.includes("--no-fidelity")) {
      loadBefore = load();
      results.push({ ...(await fidelityScenario(work, scale)), loadBefore, loadAfter: load() });
    }

    if (lagSeconds > 0 && !args.includes("--no-lag")) {
      loadBefore = load();
      const lag = await lagUnderLoad(work, lagSeconds);
      results.push({
        scenario: "lag-under-load",
        bytes: lag.written,
        seconds: lag.p99,
        baseline: "none (p99 lag; goal <= 2 s)",
        baselineSeconds: 2,
        ratio: 2 / lag.p99,
        p50Seconds: lag.p50,
        p99Seconds: lag.p99,
        samples: lag.samples,
        unseenSamples: lag.unseen,
        loadBefore,
        loadAfter: load(),
      });
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  await mkdir("bench/results", { recursive: true });
  await writeFile("bench/results/replication.json", `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(
    "scenario         bytes          seconds  baseline                                   baseline s  ratio\n",
  );
  for (const r of results)
    process.stdout.write(
      `${r.scenario.padEnd(16)} ${String(r.bytes).padEnd(14)} ${r.seconds.toFixed(2).padStart(7)}  ${r.baseline.padEnd(42)} ${r.baselineSeconds.toFixed(2).padStart(10)}  ${r.ratio.toFixed(2)}\n`,
    );
  for (const r of results) {
    const extras = Object.entries(r).filter(
      ([key]) => !["scenario", "bytes", "seconds", "baseline", "baselineSeconds", "ratio"].includes(key),
    );
    if (extras.length > 0)
      process.stdout.write(
        `${r.scenario}: ${extras.map(([k, v]) => `${k}=${typeof v === "number" ? v.toFixed(3) : v}`).join(" ")}\n`,
      );
  }
}
