// `npm run bench -- fidelity`: an initial copy of a metadata-heavy tree (owners, nanosecond
// mtimes, user xattrs, ACLs, FIFOs) by the data path against `rsync -aHAX --numeric-ids` + sync
// on the same tree in the same run, and how many entries of our replica differ from rsync's copy
// (owner, mode, mtime ns, xattrs, special kind and numbers, hard links: the goal is 0).
// KSR_BENCH_SCALE (default 1) shrinks the tree. Needs root (owners, device nodes).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, lchown, link, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EntryKind } from "../src/gen/ksr/replication/v1/replication.js";
import { nativeAddon } from "../src/native/addon.js";
import { makeSpecial } from "../src/replicator/file-attributes.js";
import { LocalPipeline } from "../src/replicator/local-pipeline.js";
import { makeFidelityTree, sampleAcl, stampTimes } from "../test/fixture/fidelity-tree.js";
import { describeTree, treeDifference } from "../test/fixture/tree-compare.js";
import type { ScenarioResult } from "./replication.js";

/** Directories of small files, every one with its own owner, an xattr, some with ACLs, FIFOs between. */
async function makeMetadataTree(root: string, scale: number): Promise<{ bytes: number; entries: number }> {
  const addon = nativeAddon();
  await makeFidelityTree(root);
  const directories = Math.max(2, Math.round(200 * scale));
  let bytes = 0;
  let entries = 0;
  for (let d = 0; d < directories; d++) {
    const directory = join(root, "bulk", `d${d}`);
    await mkdir(directory, { recursive: true });
    for (let f = 0; f < 10; f++) {
      const file = join(directory, `f${f}`);
      const content = randomBytes(4096);
      await writeFile(file, content);
      await lchown(file, 1000 + f, 2000 + d);
      await chmod(file, f % 3 === 0 ? 0o640 : 0o644);
      addon.setXattr(file, "user.checksum", content.subarray(0, 16));
      if (f === 0) addon.setXattr(file, "system.posix_acl_access", sampleAcl(3000 + d, 4000));
      bytes += content.length;
      entries++;
    }
    if (d % 5 === 0) makeSpecial(join(directory, "fifo"), EntryKind.ENTRY_KIND_FIFO, 0o600, noDevice);
    if (d % 7 === 0) await link(join(directory, "f1"), join(directory, "f1-link"));
    await lchown(directory, 999, 999);
    entries++;
  }
  await stampTimes(root);
  return { bytes, entries };
}

const noDevice = { rdevMajor: 0, rdevMinor: 0 };

function timed(work: () => void): number {
  const start = process.hrtime.bigint();
  work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** The scenario, in a work directory of the caller's (replication.ts runs it too). */
export async function fidelityScenario(work: string, scale: number): Promise<ScenarioResult> {
  const source = join(work, "fidelity-source");
  const { bytes, entries } = await makeMetadataTree(source, scale);
  execFileSync("sync");
  const viaRsync = join(work, "fidelity-rsync");
  const rsyncSeconds = timed(() => {
    execFileSync("rsync", ["-aHAX", "--numeric-ids", `${source}/`, `${viaRsync}/`], { stdio: "inherit" });
    execFileSync("sync");
  });
  const target = join(work, "fidelity-target");
  const pipeline = await LocalPipeline.create({
    source,
    target,
    work: join(work, "fidelity-pipeline"),
    once: true,
    logDir: work,
  });
  const start = process.hrtime.bigint();
  try {
    await pipeline.startAll();
    await pipeline.agentExit();
  } finally {
    await pipeline.stopAll();
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const difference = treeDifference(
    await describeTree(viaRsync, { metadata: true }),
    await describeTree(target, { metadata: true }),
  );
  if (difference !== "") process.stderr.write(`replica differs from rsync's copy:\n${difference}\n`);
  return {
    scenario: "initial-metadata",
    bytes,
    seconds,
    baseline: "rsync -aHAX --numeric-ids + sync",
    baselineSeconds: rsyncSeconds,
    ratio: rsyncSeconds / seconds,
    entries,
    entriesDifferingFromRsync: difference === "" ? 0 : difference.split("\n").length,
  };
}

export async function run(): Promise<void> {
  const scale = Number(process.env.KSR_BENCH_SCALE ?? "1");
  const work = await mkdtemp(join(tmpdir(), "ksr-bench-fidelity-"));
  let result: ScenarioResult;
  try {
    result = await fidelityScenario(work, scale);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  await mkdir("bench/results", { recursive: true });
  await writeFile("bench/results/fidelity.json", `${JSON.stringify([result], null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
