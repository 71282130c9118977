// `npm run bench -- pgbench`: a real PostgreSQL whose data directory is the replicated source.
// pgbench's TPS with the agent (each capture strategy) against the same run without it (the mean
// of a run before and after), and the replication lag during the run: a probe file in the data
// directory is rewritten every 100 ms and each version is timed until the replica shows it.
// Needs root (PostgreSQL runs as the postgres user) and Debian's postgresql package.
// KSR_BENCH_PGBENCH_SECONDS (default 30) sets each run; KSR_BENCH_PGBENCH_SCALE (default 10) the data.
import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { chmod, chown, mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { AgentProgress } from "../src/replicator/agent/agent.js";
import { freePort } from "../src/local/ports.js";
import { LocalPipeline } from "../src/replicator/local-pipeline.js";
import { percentile, type ScenarioResult } from "./replication.js";

const exec = promisify(execFile);
const strategies = ["tree-scan", "write-ranges"] as const;

function postgresBin(): string {
  const root = "/usr/lib/postgresql";
  const version = existsSync(root) ? readdirSync(root).sort().at(-1) : undefined;
  if (version === undefined) throw new Error("PostgreSQL is not installed: apt-get install -y postgresql");
  return join(root, version, "bin");
}

interface Database {
  dataDir: string;
  socketDir: string;
  port: number;
  bin: string;
}

/** Runs a PostgreSQL program as the postgres user. */
function asPostgres(db: Database, program: string, args: string[]) {
  return exec("runuser", ["-u", "postgres", "--", join(db.bin, program), ...args], { maxBuffer: 16 * 1024 * 1024 });
}

const pgCtl = (db: Database, action: "start" | "stop") =>
  asPostgres(db, "pg_ctl", [
    action,
    "-D",
    db.dataDir,
    "-w",
    "-l",
    join(db.socketDir, "postgres.log"), // a directory the postgres user owns
    ...(action === "start" ? ["-o", `-p ${db.port} -k ${db.socketDir} -c listen_addresses=''`] : ["-m", "fast"]),
  ]);

const connection = (db: Database) => ["-h", db.socketDir, "-p", String(db.port), "postgres"];

/** The TPS pgbench reports for a run of `seconds` (TPC-B-like, 4 clients). */
async function pgbench(db: Database, seconds: number): Promise<number> {
  const { stdout } = await asPostgres(db, "pgbench", [
    "-n",
    "-c",
    "4",
    "-j",
    "2",
    "-T",
    String(seconds),
    ...connection(db),
  ]);
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1];
  if (tps === undefined) throw new Error(`pgbench printed no TPS:\n${stdout}`);
  return Number(tps);
}

/** Rewrites a probe file in the source every 100 ms; each version's lag ends when the replica shows it (or a later one). */
async function probeLag(source: string, target: string, until: () => boolean): Promise<number[]> {
  const probe = await open(join(source, "ksr-lag-probe"), "w");
  const sent: { version: number; at: number }[] = [];
  const lags: number[] = [];
  let version = 0;
  const poll = async () => {
    const text = await readFile(join(target, "ksr-lag-probe"), "utf8").catch(() => "");
    const seen = Number.parseInt(text, 10);
    while (sent.length > 0 && Number.isFinite(seen) && (sent[0]?.version ?? Infinity) <= seen)
      lags.push((Date.now() - (sent.shift()?.at ?? 0)) / 1000);
  };
  try {
    while (until()) {
      version++;
      await probe.write(`${String(version).padStart(12, "0")}\n`, 0);
      sent.push({ version, at: Date.now() });
      for (let tick = 0; tick < 5; tick++) {
        await poll();
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    const drainUntil = Date.now() + 60_000;
    while (sent.length > 0 && Date.now() < drainUntil) {
      await poll();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    await probe.close();
  }
  return lags.sort((a, b) => a - b);
}

async function caughtUp(progress: () => AgentProgress | undefined): Promise<void> {
  for (;;) {
    const latest = progress();
    if (
      latest !== undefined &&
      latest.lastSeq > 0 &&
      latest.ackedSeq === latest.lastSeq &&
      latest.appliedSeq >= latest.lastSeq
    )
      return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

export async function run(): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error("the pgbench benchmark runs PostgreSQL as the postgres user: run it as root");
  const seconds = Number(process.env.KSR_BENCH_PGBENCH_SECONDS ?? "30");
  const scale = Number(process.env.KSR_BENCH_PGBENCH_SCALE ?? "10");
  const work = await mkdtemp(join(tmpdir(), "ksr-bench-pgbench-"));
  await chmod(work, 0o755); // the postgres user reaches its directories through it
  const db: Database = {
    dataDir: join(work, "pgdata"),
    socketDir: join(work, "sock"),
    port: await freePort(),
    bin: postgresBin(),
  };
  const { stdout: uid } = await exec("id", ["-u", "postgres"]);
  const { stdout: gid } = await exec("id", ["-g", "postgres"]);
  for (const dir of [db.dataDir, db.socketDir]) {
    await mkdir(dir, { mode: 0o700 });
    await chown(dir, Number(uid), Number(gid));
  }
  const rows: ScenarioResult[] = [];
  let running = false;
  try {
    await asPostgres(db, "initdb", ["-D", db.dataDir, "--no-sync", "-A", "trust", "-U", "postgres"]);
    await pgCtl(db, "start");
    running = true;
    await asPostgres(db, "pgbench", ["-i", "-q", "-s", String(scale), ...connection(db)]);
    await asPostgres(db, "psql", [...connection(db), "-c", "CHECKPOINT"]);
    const { stdout: size } = await exec("du", ["-sb", db.dataDir]);
    const bytes = Number(size.split("\t")[0]);
    // The database restarts before every run, so with the agent it opens its files after the
    // directories were marked (write ranges see writes only on files opened after the mark).
    const restart = async () => {
      await pgCtl(db, "stop");
      running = false;
      await pgCtl(db, "start");
      running = true;
    };
    await restart();
    const before = await pgbench(db, seconds);
    const withAgent: Record<string, { tps: number; lags: number[] }> = {};
    for (const capture of strategies) {
      await pgCtl(db, "stop");
      running = false;
      let latest: AgentProgress | undefined;
      const pipeline = await LocalPipeline.create({
        source: db.dataDir,
        target: join(work, `replica-${capture}`),
        work: join(work, `pipeline-${capture}`),
        once: false,
        logDir: work,
        onProgress: (progress) => (latest = progress),
        agentArgs: ["--capture", capture, "--crash-point-interval", "1h"],
      });
      await pipeline.startAll();
      try {
        await caughtUp(() => latest);
        if (latest?.capture?.strategy !== capture)
          throw new Error(
            `the agent runs ${latest?.capture?.strategy ?? "no capture"}, not ${capture}: ${latest?.capture?.reason ?? ""}`,
          );
        await pgCtl(db, "start");
        running = true;
        let loaded = true;
        const lagging = probeLag(db.dataDir, join(work, `replica-${capture}`), () => loaded);
        const tps = await pgbench(db, seconds);
        loaded = false;
        withAgent[capture] = { tps, lags: await lagging };
      } finally {
        await pipeline.stopAll();
      }
      await rm(join(work, `replica-${capture}`), { recursive: true, force: true });
    }
    await restart();
    const after = await pgbench(db, seconds);
    const baseline = (before + after) / 2;
    for (const capture of strategies) {
      const { tps, lags } = withAgent[capture] ?? { tps: Number.NaN, lags: [] };
      rows.push({
        scenario: `pgbench -c 4 -j 2, scale ${scale} (${capture})`,
        bytes,
        seconds,
        baseline: "the same pgbench without an agent (mean of a run before and after)",
        baselineSeconds: seconds,
        ratio: tps / baseline,
        tps,
        baselineTps: baseline,
        baselineBefore: before,
        baselineAfter: after,
        lagP50Seconds: percentile(lags, 50),
        lagP99Seconds: percentile(lags, 99),
        lagSamples: lags.length,
        loadAverage: loadavg()
          .map((value) => value.toFixed(1))
          .join(" "),
      });
      process.stdout.write(`${JSON.stringify(rows.at(-1))}\n`);
    }
  } finally {
    if (running) await pgCtl(db, "stop").catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
  await mkdir("bench/results", { recursive: true });
  await writeFile("bench/results/pgbench.json", `${JSON.stringify(rows, null, 2)}\n`);
}
