// `npm run bench -- profile LABEL`: CPU profiles (node --cpu-prof) of the agent, process server
// and master target during the replication benchmark's initial copy and its lag scenario, and
// each program's top-10 functions by self time, written to bench/results/profile-LABEL.txt (a
// label such as "before" or "after" keeps the tables of two builds side by side).
// KSR_BENCH_SCALE (default 0.25) sizes the initial copy's tree; KSR_BENCH_LAG_SECONDS (default 20) the load.
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalPipeline } from "../src/replicator/local-pipeline.js";
import { lagUnderLoad, makeTree } from "./replication.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** The top functions of one profile by self time (ms and share of the sampled time). */
export function topSelfTime(profile: CpuProfile, count: number): { name: string; ms: number; share: number }[] {
  const byNode = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, index) => {
    const node = byNode.get(id);
    const delta = profile.timeDeltas[index] ?? 0;
    if (node === undefined) return;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url === "" ? "" : ` ${url.replace(/^.*?\/(dist|node_modules)\//, "$1/")}:${lineNumber + 1}`;
    const name = `${functionName === "" ? "(anonymous)" : functionName}${where}`;
    self.set(name, (self.get(name) ?? 0) + delta);
    total += delta;
  });
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([name, micros]) => ({ name, ms: micros / 1000, share: total === 0 ? 0 : micros / total }));
}

async function tables(dir: string, scenario: string, pids: ReadonlyMap<number, string>): Promise<string> {
  const lines: string[] = [];
  for (const file of (await readdir(dir)).filter((name) => name.endsWith(".cpuprofile")).sort()) {
    const profile = JSON.parse(await readFile(join(dir, file), "utf8")) as CpuProfile;
    const role = roleOf(file, pids);
    const seconds = (profile.endTime - profile.startTime) / 1e6;
    lines.push(`## ${scenario}: ${role} (${seconds.toFixed(1)} s profiled)`, "self ms    share  function");
    for (const row of topSelfTime(profile, 10))
      lines.push(`${row.ms.toFixed(0).padStart(8)}  ${(row.share * 100).toFixed(1).padStart(5)}%  ${row.name}`);
    lines.push("");
  }
  return lines.join("\n");
}

/** Which program wrote a profile: node names it CPU.<date>.<time>.<pid>.<thread>.<n>.cpuprofile. */
function roleOf(file: string, pids: ReadonlyMap<number, string>): string {
  return pids.get(Number(file.split(".")[3])) ?? "other";
}

/** The pids of a pipeline's programs, by role. */
function pidsOf(pipeline: LocalPipeline, into: Map<number, string>): void {
  for (const [role, child] of pipeline.processes) if (child.pid !== undefined) into.set(child.pid, role);
}

export async function run(args: string[]): Promise<void> {
  const label = args[0] ?? "current";
  const scale = Number(process.env.KSR_BENCH_SCALE ?? "0.25");
  const lagSeconds = Number(process.env.KSR_BENCH_LAG_SECONDS ?? "20");
  const work = await mkdtemp(join(tmpdir(), "ksr-bench-profile-"));
  const sections: string[] = [`# CPU profiles (${label}); scale ${scale}, lag ${lagSeconds} s`, ""];
  try {
    const initialDir = join(work, "profiles-initial");
    const source = join(work, "source");
    const { bytes } = await makeTree(source, scale);
    const pipeline = await LocalPipeline.create({
      source,
      target: join(work, "target"),
      work: join(work, "pipeline"),
      once: true,
      logDir: work,
      nodeArgs: ["--cpu-prof", "--cpu-prof-dir", initialDir],
    });
    const started = Date.now();
    const initialPids = new Map<number, string>();
    try {
      await pipeline.startAll();
      pidsOf(pipeline, initialPids);
      await pipeline.agentExit();
    } finally {
      await pipeline.stopAll();
    }
    const initialSeconds = (Date.now() - started) / 1000;
    sections.push(
      `initial copy: ${bytes} bytes in ${initialSeconds.toFixed(1)} s`,
      "",
      await tables(initialDir, "initial copy", initialPids),
    );

    const lagDir = join(work, "profiles-lag");
    const lagPids = new Map<number, string>();
    const lag = await lagUnderLoad(join(work, "lag"), lagSeconds, {
      pipeline: { nodeArgs: ["--cpu-prof", "--cpu-prof-dir", lagDir] },
      whileLoaded: (pipeline) => {
        pidsOf(pipeline, lagPids);
        return Promise.resolve();
      },
    });
    sections.push(
      `lag under 20 MB/s: p50 ${lag.p50} s, p99 ${lag.p99} s, replicated ${(lag.bytesPerSecond / 1e6).toFixed(1)} MB/s`,
      "",
      await tables(lagDir, "lag under 20 MB/s", lagPids),
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  await mkdir("bench/results", { recursive: true });
  const text = sections.join("\n");
  await writeFile(join("bench/results", `profile-${label}.txt`), text);
  process.stdout.write(text);
}
