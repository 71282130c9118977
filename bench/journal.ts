// `npm run bench -- journal`: recovery points of the undo journal, against cp -a on the same data
// in the same run. KSR_BENCH_SCALE (default 1) scales the 1 GiB volume; KSR_BENCH_LOAD_SECONDS
// (default 20) the point-cost-under-load phase.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Consistency, type Change } from "../src/gen/ksr/replication/v1/replication.js";
import { hydrate, rollback } from "../src/replicator/journal/materialise.js";
import { UndoJournal } from "../src/replicator/journal/undo-journal.js";
import { noJournal, type ChangeJournal } from "../src/replicator/master-target/change-journal.js";
import { TreeReplica } from "../src/replicator/master-target/replica.js";

export const mib = 1024 * 1024;
export const blockBytes = 64 * 1024;
export const fileBytes = 16 * mib;

export async function timed<T>(work: () => Promise<T> | T): Promise<{ value: T; seconds: number }> {
  const started = process.hrtime.bigint();
  const value = await work();
  return { value, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** A volume of 16 MiB files, half compressible text and half random, written outside the journal. */
export async function populate(root: string, files: number): Promise<void> {
  await mkdir(root, { recursive: true });
  const text = Buffer.from("kube-site-recovery keeps recovery points in an undo journal; ".repeat(fileBytes / 128));
  for (let index = 0; index < files; index++) {
    const handle = await open(join(root, `f${String(index).padStart(3, "0")}`), "w", 0o644);
    for (let offset = 0; offset < fileBytes; offset += 4 * mib) {
      const chunk = offset % (8 * mib) === 0 ? text.subarray(0, 4 * mib) : randomBytes(4 * mib);
      await handle.write(chunk, 0, chunk.length, offset);
    }
    await handle.close();
  }
}

class Stream {
  private seq = 0;
  constructor(
    readonly replica: TreeReplica,
    private readonly journal: ChangeJournal,
  ) {}

  async apply(op: NonNullable<Change["op"]>): Promise<void> {
    const change: Change = { seq: ++this.seq, op };
    this.replica.validate(change);
    await this.replica.apply(change);
  }

  async point(id: string): Promise<number> {
    const { seconds } = await timed(async () => {
      await this.apply({
        $case: "marker",
        value: { id, consistency: Consistency.CONSISTENCY_CRASH, timeUnixMs: Date.now(), consistencyGroup: "" },
      });
      await this.commit();
    });
    return seconds;
  }

  async commit(): Promise<void> {
    await this.replica.sync();
    await this.journal.sync();
  }
}

/** Overwrites random 64 KiB blocks until `bytes` changed; returns the bytes written. */
async function changeBlocks(stream: Stream, files: number, bytes: number): Promise<number> {
  let changed = 0;
  while (changed < bytes) {
    const path = `f${String(Math.floor(Math.random() * files)).padStart(3, "0")}`;
    const offset = Math.floor(Math.random() * (fileBytes / blockBytes)) * blockBytes;
    await stream.apply({ $case: "write", value: { path, offset, data: randomBytes(blockBytes) } });
    changed += blockBytes;
  }
  await stream.commit();
  return changed;
}

/** Applies 20 MB/s of 64 KiB block writes and takes a point every second; returns point latencies. */
async function pointsUnderLoad(
  stream: Stream,
  files: number,
  seconds: number,
): Promise<{ latencies: number[]; rate: number }> {
  const latencies: number[] = [];
  const perTick = (20 * 1e6) / 20;
  const end = Date.now() + seconds * 1000;
  let nextPoint = Date.now() + 1000;
  let written = 0;
  const started = Date.now();
  while (Date.now() < end) {
    const tickStart = Date.now();
    for (let tickBytes = 0; tickBytes < perTick;) {
      const size = blockBytes; // the data path applies whole changed 64 KiB blocks
      const path = `f${String(Math.floor(Math.random() * files)).padStart(3, "0")}`;
      const offset = Math.floor(Math.random() * (fileBytes / blockBytes)) * blockBytes;
      await stream.apply({ $case: "write", value: { path, offset, data: randomBytes(size) } });
      tickBytes += size;
      written += size;
    }
    await stream.commit();
    if (Date.now() >= nextPoint) {
      latencies.push(await stream.point(`load-${latencies.length}`));
      nextPoint += 1000;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 50 - (Date.now() - tickStart))));
  }
  return { latencies: latencies.sort((a, b) => a - b), rate: written / ((Date.now() - started) / 1000) };
}

export function treeDigest(root: string): string {
  return execFileSync("sh", ["-c", `cd "${root}" && find . -type f | sort | xargs sha256sum | sha256sum`])
    .toString()
    .trim();
}

export async function run(): Promise<void> {
  const scale = Number(process.env.KSR_BENCH_SCALE ?? "1");
  const loadSeconds = Number(process.env.KSR_BENCH_LOAD_SECONDS ?? "20");
  const files = Math.max(1, Math.round(64 * scale));
  const volumeBytes = files * fileBytes;
  const work = await mkdtemp(join(tmpdir(), "ksr-bench-journal-"));
  const replicaRoot = join(work, "replica");
  const results: Record<string, number | string>[] = [];
  try {
    await populate(replicaRoot, files);
    execFileSync("sync");
    const journal = await UndoJournal.open(join(work, "journal"));
    const stream = new Stream(new TreeReplica(replicaRoot, journal), journal);
    await stream.point("before");
    const changed = await changeBlocks(stream, files, volumeBytes / 100);
    await stream.point("after");
    const size = await journal.size();
    results.push({
      scenario: "journal bytes per changed byte (1% of the volume in 64 KiB blocks)",
      changedBytes: changed,
      journalBytes: size.segmentBytes + size.objectBytes,
      ratio: (size.segmentBytes + size.objectBytes) / changed,
    });

    // Alternate the two, twice, and keep each one's best time: the disk's write cache favours
    // whichever runs first.
    const copySeconds: number[] = [];
    const hydrateSeconds: number[] = [];
    for (let attempt = 0; attempt < 2; attempt++) {
      const copyTarget = join(work, "cp");
      copySeconds.push(
        (await timed(() => execFileSync("sh", ["-c", `cp -a "${replicaRoot}" "${copyTarget}" && sync`]))).seconds,
      );
      await rm(copyTarget, { recursive: true });
      execFileSync("sync");
      await rm(join(work, "hydrated"), { recursive: true, force: true });
      const hydrated = await timed(async () => {
        await hydrate(journal, replicaRoot, journal.point("before"), join(work, "hydrated"));
        execFileSync("sync");
      });
      hydrateSeconds.push(hydrated.seconds);
    }
    const copy = { seconds: Math.min(...copySeconds) };
    const hydration = { seconds: Math.min(...hydrateSeconds) };
    results.push({
      scenario: `hydrate a ${(volumeBytes / mib).toFixed(0)} MiB point (1% changed since)`,
      seconds: hydration.seconds,
      mibPerSecond: volumeBytes / mib / hydration.seconds,
      baseline: "cp -a + sync of the replica",
      baselineSeconds: copy.seconds,
      ratio: copy.seconds / hydration.seconds,
    });

    const rolled = await timed(async () => {
      await rollback(journal, replicaRoot, journal.point("before"));
      execFileSync("sync");
    });
    const identical = treeDigest(replicaRoot) === treeDigest(join(work, "hydrated"));
    results.push({
      scenario: "rollback in place to the point (1% changed since)",
      seconds: rolled.seconds,
      baseline: "cp -a + sync of the whole volume",
      baselineSeconds: copy.seconds,
      ratio: copy.seconds / rolled.seconds,
      matchesHydratedCopy: String(identical),
    });
    await rm(join(work, "hydrated"), { recursive: true });

    if (loadSeconds > 0) {
      const load = await pointsUnderLoad(stream, files, loadSeconds);
      // The same load on the same replica without a journal: what the journal costs the applier.
      const bare = new Stream(new TreeReplica(replicaRoot, noJournal), noJournal);
      const bareLoad = await pointsUnderLoad(bare, files, loadSeconds);
      await bare.replica.close();
      const p50 = percentile(load.latencies, 50);
      results.push({
        scenario: "point every second under 20 MB/s of 64 KiB block writes offered (in process, no gRPC)",
        points: load.latencies.length,
        appliedMBps: load.rate / 1e6,
        baseline: "same load, no journal",
        baselineAppliedMBps: bareLoad.rate / 1e6,
        ratio: load.rate / bareLoad.rate,
        pointP50Ms: p50 * 1000,
        pointP99Ms: percentile(load.latencies, 99) * 1000,
        shareOf30sCadence: p50 / 30,
      });
    }
    await stream.replica.close();
    await journal.close();
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  for (const result of results) process.stdout.write(`${JSON.stringify(result)}\n`);
}
