// `npm run bench -- codec`: where compression and AES-256-GCM should run. Seals (and opens) the
// same 4 MiB batches (the agent's batch target; half random pages, half repetitive) on the event
// loop and through the worker pool, with the process server's depth of 8 batches per stream in
// flight, and reports throughput and how long the event loop was blocked meanwhile (p99 and max
// of a 10 ms timer's lateness). The inline rows are the baseline of the same run.
// KSR_BENCH_CODEC_MIB (default 256) is the data sealed per row.
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { Codec, type Frame } from "../src/gen/ksr/replication/v1/replication.js";
import { compressionNames, codecFor } from "../src/replicator/frame-codec.js";
import { createFrameSealer, defaultCodecWorkers, type FrameSealer } from "../src/replicator/frame-sealer.js";

const mib = 1024 * 1024;
const batchBytes = 4 * mib;
const depth = 8;

function batch(): Buffer {
  const bytes = Buffer.allocUnsafe(batchBytes);
  for (let page = 0; page < batchBytes; page += 4096) {
    if ((page / 4096) % 2 === 0) randomBytes(4096).copy(bytes, page);
    else bytes.fill(`row ${page} of a table, padded; `, page, page + 4096);
  }
  return bytes;
}

/** Runs `count` jobs with `depth` in flight, in order, as one push stream does. */
async function pipeline<T>(count: number, start: (index: number) => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  const inFlight: Promise<T>[] = [];
  for (let index = 0; index < count; index++) {
    inFlight.push(start(index));
    if (inFlight.length >= depth) results.push(await (inFlight.shift() as Promise<T>));
  }
  for (const job of inFlight) results.push(await job);
  return results;
}

/** How late a 10 ms timer fired, tick by tick (the last gap runs to stop()): the loop's stalls. */
class LoopStalls {
  private readonly late: number[] = [];
  private last = performance.now();
  private readonly timer = setInterval(() => {
    this.tick();
  }, 10);

  private tick(): void {
    const now = performance.now();
    this.late.push(Math.max(0, now - this.last - 10));
    this.last = now;
  }

  stop(): { p99: number; max: number } {
    clearInterval(this.timer);
    this.tick();
    const sorted = [...this.late].sort((a, b) => a - b);
    return { p99: sorted[Math.floor((sorted.length - 1) * 0.99)] ?? 0, max: sorted.at(-1) ?? 0 };
  }
}

interface Row {
  where: string;
  workers: number;
  codec: string;
  sealMBps: number;
  openMBps: number;
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  load1: number;
}

async function measure(
  sealer: FrameSealer,
  codec: Codec,
  count: number,
): Promise<Omit<Row, "where" | "workers" | "codec">> {
  const source = batch();
  // Warm up first: a worker loads zstd and lz4 on its first job.
  await pipeline(depth, (index) =>
    sealer.seal(codec, { machineId: "bench", firstSeq: index + 1, lastSeq: index + 1 }, Buffer.from(source)),
  );
  const stalls = new LoopStalls();
  const sealStart = performance.now();
  const frames: Frame[] = await pipeline(count, (index) =>
    sealer.seal(codec, { machineId: "bench", firstSeq: index + 1, lastSeq: index + 1 }, Buffer.from(source)),
  );
  const sealSeconds = (performance.now() - sealStart) / 1000;
  const openStart = performance.now();
  const opened = await pipeline(count, (index) => sealer.open(frames[index] as Frame));
  const openSeconds = (performance.now() - openStart) / 1000;
  const { p99, max } = stalls.stop();
  if (opened.some((bytes) => !bytes.equals(source))) throw new Error("a frame did not open to its batch");
  return {
    sealMBps: Math.round((count * batchBytes) / 1e6 / sealSeconds),
    openMBps: Math.round((count * batchBytes) / 1e6 / openSeconds),
    loopDelayP99Ms: Math.round(p99),
    loopDelayMaxMs: Math.round(max),
    load1: Math.round((loadavg()[0] ?? 0) * 10) / 10,
  };
}

export async function run(): Promise<void> {
  const count = Math.max(depth, Math.round(Number(process.env.KSR_BENCH_CODEC_MIB ?? 256) / 4));
  const key = randomBytes(32);
  const rows: Row[] = [];
  for (const name of compressionNames) {
    for (const workers of [0, defaultCodecWorkers(), 2]) {
      if (workers === 2 && defaultCodecWorkers() === 2) continue;
      const sealer = createFrameSealer(key, workers);
      try {
        const row = {
          where: workers === 0 ? "event loop" : "workers",
          workers,
          codec: name,
          ...(await measure(sealer, codecFor(name), count)),
        };
        rows.push(row);
        process.stdout.write(`${JSON.stringify(row)}\n`);
      } finally {
        await sealer.close();
      }
    }
  }
  await mkdir("bench/results", { recursive: true });
  await writeFile("bench/results/codec.json", `${JSON.stringify(rows, null, 2)}\n`);
}
