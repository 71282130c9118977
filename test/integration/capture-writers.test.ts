// Write-range capture never holds a writer for long: not when the agent is stopped (SIGSTOP),
// not when a cut holds writes and the agent then stops, not when the fanotify helper itself
// stops (the agent's watchdog kills it), and not when the agent is killed (kill -9) while it
// holds writes; after that kill the agent resumes from its manifest, without a resync. Agent,
// process server and master target run as separate processes (LocalPipeline).
import { strict as assert } from "node:assert";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  BarrierClient,
  ControlClient,
  Consistency,
  type ControlStatus,
  type HoldReply,
  type HoldRequest,
  type MarkReply,
  type MarkRequest,
  type ReleaseReply,
  type ReleaseRequest,
} from "../../src/gen/ksr/replication/v1/replication.js";
import type { AgentProgress } from "../../src/replicator/agent/agent.js";
import { callWithin } from "../../src/replicator/grpc-util.js";
import { LocalPipeline } from "../../src/replicator/local-pipeline.js";
import { clientCredentials, grpcOptions } from "../../src/replicator/tls.js";
import { freePort } from "../../src/local/ports.js";
import { eventually } from "../fixture/eventually.js";
import { fanotifyUnavailable } from "../fixture/fanotify.js";
import { converge } from "../fixture/replication.js";
import { treesDiffer } from "../fixture/tree-compare.js";

const run = promisify(execFile);
const mib = 1024 * 1024;
const holdLimitMs = 300;
const watchdogMs = 1000;
/** The most a writer may wait: the hold limit or the watchdog, plus a generous margin for a loaded machine. */
const writerBoundMs = watchdogMs + 4000;

/** Another process writes `count` 4 KiB blocks into file; resolves with the slowest write's milliseconds. */
async function writeFromChild(file: string, count: number): Promise<number> {
  const program = `const fs = require("fs"); const fd = fs.openSync(process.argv[1], "r+"); let slowest = 0;
    for (let i = 0; i < ${count}; i++) { const start = performance.now();
      fs.writeSync(fd, Buffer.alloc(4096, i % 251), 0, 4096, 4096 * ((i * 7) % 256));
      slowest = Math.max(slowest, performance.now() - start); }
    fs.closeSync(fd); process.stdout.write(String(slowest));`;
  const { stdout } = await run(process.execPath, ["-e", program, file]);
  return Number(stdout);
}

describe("write-range capture: writers are never held for long", function () {
  this.timeout(120_000);
  let work: string;
  let pipeline: LocalPipeline;
  let barrierPort: number;
  let progress: AgentProgress | undefined;
  let unavailable: string | undefined;

  const source = () => join(work, "source");
  /** Read through a function: the progress callback sets it while the test awaits. */
  const latestProgress = () => progress;
  const agentLog = () => readFile(join(work, "agent.log"), "utf8");

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "ksr-writers-"));
    await mkdir(source());
    unavailable = await fanotifyUnavailable(source());
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  beforeEach(async function () {
    if (unavailable !== undefined) {
      this.currentTest!.title += ` (skipped: ${unavailable})`;
      this.skip();
    }
    await rm(join(work, "target"), { recursive: true, force: true });
    await rm(join(work, "pipeline"), { recursive: true, force: true });
    await rm(join(work, "agent.log"), { force: true });
    for (let i = 0; i < 8; i++) await writeFile(join(source(), `f${i}`), Buffer.alloc(4 * mib, i));
    barrierPort = await freePort();
    progress = undefined;
    pipeline = await LocalPipeline.create({
      source: source(),
      target: join(work, "target"),
      work: join(work, "pipeline"),
      once: false,
      logDir: work,
      onProgress: (latest) => (progress = latest),
      agentArgs: [
        "--capture",
        "write-ranges",
        "--write-hold-limit-ms",
        String(holdLimitMs),
        "--capture-watchdog-ms",
        String(watchdogMs),
        "--barrier-listen",
        `localhost:${barrierPort}`,
      ],
    });
    await pipeline.startAll();
    await waitConverged("the initial copy");
  });
  afterEach(async () => {
    const agent = pipeline.processes.get("agent");
    if (agent?.pid !== undefined && agent.exitCode === null) process.kill(agent.pid, "SIGCONT");
    await pipeline.stopAll();
  });

  async function waitConverged(what: string): Promise<void> {
    assert.equal(await converge(() => treesDiffer(source(), join(work, "target")), 60_000), "", what);
  }

  function agentPid(): number {
    const pid = pipeline.processes.get("agent")?.pid;
    assert.ok(pid !== undefined, "the agent runs");
    return pid;
  }

  async function barrier(): Promise<BarrierClient> {
    return new BarrierClient(
      `localhost:${barrierPort}`,
      await clientCredentials(pipeline.identity("coordinator")),
      grpcOptions,
    );
  }

  async function hold(client: BarrierClient, cutId: string): Promise<HoldReply> {
    return eventually("the agent's Barrier service held", () =>
      callWithin<HoldRequest, HoldReply>(
        client.hold.bind(client),
        { cutId, requested: Consistency.CONSISTENCY_CRASH, holdTimeoutMs: 30_000, quiescedByCaller: false },
        5000,
      ).catch(() => undefined),
    );
  }

  it("a stopped agent does not stop its writers (the helper answers)", async () => {
    process.kill(agentPid(), "SIGSTOP");
    const slowest = await writeFromChild(join(source(), "f1"), 2000);
    process.kill(agentPid(), "SIGCONT");
    assert.ok(slowest < writerBoundMs, `the slowest write took ${slowest.toFixed(0)} ms`);
    await waitConverged("after the agent continued");
  });

  it("a cut holding writes lets them go at the hold limit when the agent stops, and says the hold lapsed", async () => {
    const client = await barrier();
    try {
      const held = await hold(client, "lapsing");
      assert.equal(held.consistency, Consistency.CONSISTENCY_CRASH, "the member's writes are held: a crash barrier");
      process.kill(agentPid(), "SIGSTOP");
      const slowest = await writeFromChild(join(source(), "f2"), 10);
      process.kill(agentPid(), "SIGCONT");
      assert.ok(slowest < writerBoundMs, `the held write took ${slowest.toFixed(0)} ms`);
      const marker = {
        id: "lapsing",
        consistency: Consistency.CONSISTENCY_CRASH,
        timeUnixMs: Date.now(),
        consistencyGroup: "g",
      };
      const marked = await callWithin<MarkRequest, MarkReply>(
        client.mark.bind(client),
        { cutId: "lapsing", marker },
        30_000,
      );
      assert.equal(marked.consistency, Consistency.CONSISTENCY_BEST_EFFORT, "a lapsed hold is no group barrier");
      await callWithin<ReleaseRequest, ReleaseReply>(client.release.bind(client), { cutId: "lapsing" }, 30_000);
    } finally {
      client.close();
    }
    await waitConverged("after the cut");
  });

  async function helperPid(): Promise<number> {
    const { stdout } = await run("pgrep", ["-P", String(agentPid()), "-f", "ksr-fanotify-helper"]);
    const helper = Number(stdout.trim().split("\n")[0]);
    assert.ok(helper > 0, "the agent runs its fanotify helper");
    return helper;
  }

  it("a stopped helper is killed by the watchdog: writers go on, and the agent says it fell back to tree scan", async () => {
    const helper = await helperPid();
    process.kill(helper, "SIGSTOP");
    const slowest = await writeFromChild(join(source(), "f3"), 50);
    assert.ok(slowest < writerBoundMs, `the slowest write took ${slowest.toFixed(0)} ms`);
    await eventually("the agent reports tree scan", () =>
      Promise.resolve(latestProgress()?.capture?.strategy === "tree-scan" ? true : undefined),
    );
    assert.match(latestProgress()?.capture?.reason ?? "", /answered no heartbeat for 1000 ms and was killed/);
    assert.match(await agentLog(), /capture: tree-scan from now on \(write ranges stopped: /);
    // The operator sees it in the process server's Control.Status.
    const control = new ControlClient(
      pipeline.processServerAddress,
      await clientCredentials(pipeline.identity("operator")),
      grpcOptions,
    );
    try {
      const status = await eventually("Control.Status shows tree scan", async () => {
        const reply = await callWithin<{ machineId: string }, ControlStatus>(
          control.status.bind(control),
          { machineId: "local" },
          5000,
        );
        return reply.capture?.strategy === "tree-scan" ? reply : undefined;
      });
      assert.match(status.capture?.reason ?? "", /write ranges stopped/);
    } finally {
      control.close();
    }
    await writeFromChild(join(source(), "f4"), 20);
    await waitConverged("under tree scan");
  });

  it("kill -9 of the agent lets a held writer go; the restarted agent resumes without a resync", async () => {
    const client = await barrier();
    const helper = await helperPid();
    try {
      await hold(client, "dying");
      const writing = writeFromChild(join(source(), "f5"), 10);
      await pipeline.kill("agent");
      const slowest = await writing;
      assert.ok(slowest < writerBoundMs, `the held write took ${slowest.toFixed(0)} ms`);
    } finally {
      client.close();
    }
    await eventually("the helper died with its agent", () =>
      readFile(`/proc/${helper}/status`, "utf8").then(
        (status) => (/^State:\s+Z/m.test(status) ? true : undefined),
        () => true,
      ),
    );
    await writeFromChild(join(source(), "f6"), 20); // written while no agent runs
    const logBefore = (await agentLog()).length;
    progress = undefined;
    await pipeline.start("agent");
    await waitConverged("after the restart");
    const reported = await eventually("a progress report", () => Promise.resolve(latestProgress()));
    const restartLog = (await agentLog()).slice(logBefore);
    assert.doesNotMatch(restartLog, /resynchroniz/);
    assert.match(restartLog, /capture: write-ranges/);
    assert.ok(
      reported.bytesPushed < 4 * mib,
      `the restart sent ${reported.bytesPushed} bytes of a 32 MiB tree: only the changed files' blocks`,
    );
  });
});
