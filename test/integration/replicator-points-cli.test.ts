// Recovery points as a user runs them: the three programs as processes, the agent serving its
// Barrier service (--barrier-listen), and `ksr replicator group-cut` as the coordinator.
import { strict as assert } from "node:assert";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { GroupPoint } from "../../src/replicator/journal/consistency-group.js";
import { GroupPointLog } from "../../src/replicator/journal/consistency-group.js";
import type { AgentProgress } from "../../src/replicator/agent/agent.js";
import { LocalPipeline } from "../../src/replicator/local-pipeline.js";
import type { RecoveryPoint } from "../../src/replicator/journal/point.js";
import { freePort } from "../../src/local/ports.js";
import { eventually } from "../fixture/eventually.js";
import { ksrReplicator } from "../fixture/ksr-cli.js";

describe("recovery points: ksr replicator agent --barrier-listen and group-cut (processes)", function () {
  this.timeout(60_000);
  let work: string;
  let pipeline: LocalPipeline;
  let barrierPort: number;
  let progress: AgentProgress | undefined;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "ksr-points-cli-"));
    const source = join(work, "source");
    await mkdir(source);
    await writeFile(join(source, "data"), "replicated");
    barrierPort = await freePort();
    pipeline = await LocalPipeline.create({
      source,
      target: join(work, "target"),
      work: join(work, "pipeline"),
      machineId: "web",
      once: false,
      logDir: work,
      onProgress: (latest) => (progress = latest),
      agentArgs: ["--barrier-listen", `localhost:${barrierPort}`, "--crash-point-interval", "1h"],
    });
    await pipeline.startAll();
    await eventually("the initial replication", async () =>
      (await stat(join(work, "target", "data")).catch(() => undefined)) === undefined ? undefined : true,
    );
  });
  after(async () => {
    await pipeline.stopAll();
    await rm(work, { recursive: true, force: true });
  });

  function tlsArgs(identity: "coordinator" | "operator" = "coordinator"): string[] {
    const files = pipeline.identity(identity);
    return ["--ca", files.ca, "--cert", files.cert, "--key", files.key];
  }

  /** `group-cut` of the group "frontend": this pipeline's agent as member web, plus `others`. */
  function groupCut(log: string, others: string[], flags: string[]) {
    const members = [`web=localhost:${barrierPort}`, ...others].flatMap((member) => ["--member", member]);
    return ksrReplicator(["group-cut", ...tlsArgs(), "--group", "frontend", ...members, "--log", log, ...flags]);
  }

  function atMasterTarget(): string[] {
    return ["--master-target", pipeline.masterTargetAddress, "--machine", "web", ...tlsArgs("operator")];
  }

  it("cuts a group point through the agent and records it in the group point log", async () => {
    const log = join(work, "group-points");
    const cut = await groupCut(log, [], ["--consistency", "crash", "--timeout", "20s"]);
    assert.equal(cut.code, 0, cut.stderr);
    const { point } = JSON.parse(cut.stdout) as { point: GroupPoint };
    assert.equal(point.group, "frontend");
    assert.ok((point.members.web ?? 0) > 0, "the member's marker seq is recorded");
    // Without hooks, a group cut is crash only when the agent can hold the application's writes
    // (write ranges, where this machine offers them); tree scan cannot stop them.
    const strategy = progress?.capture?.strategy;
    assert.ok(strategy !== undefined, "the agent reported its capture");
    assert.equal(point.consistency, strategy === "write-ranges" ? "crash" : "best-effort", `with ${strategy}`);
    assert.deepEqual(await new GroupPointLog(log).list(), [point]);
    const open = await pipeline.openAsAgent();
    assert.ok(open.appliedSeq >= (point.members.web ?? Infinity), "the marker was applied when group-cut answered");
    // The member's own point at the master target: same id, labelled with the group, crash for
    // this machine alone (nothing was writing).
    const listed = await ksrReplicator(["points", ...atMasterTarget(), "--json"]);
    assert.equal(listed.code, 0, listed.stderr);
    const { points } = JSON.parse(listed.stdout) as { points: RecoveryPoint[] };
    assert.deepEqual(
      points.map(({ id, seq, consistency, group }) => ({ id, seq, consistency, group })),
      [{ id: point.id, seq: point.members.web, consistency: "crash", group: "frontend" }],
    );
    await writeFile(join(work, "source", "data"), "changed after the point");
    const dest = join(work, "hydrated");
    const hydrated = await ksrReplicator(["hydrate", ...atMasterTarget(), "--point", point.id, "--dest", dest]);
    assert.equal(hydrated.code, 0, hydrated.stderr);
    assert.equal(await readFile(join(dest, "data"), "utf8"), "replicated");
  });

  it("exits 1 without a group point when a member is unreachable", async () => {
    const log = join(work, "group-points-unreachable");
    const cut = await groupCut(log, [`api=localhost:${await freePort()}`], ["--timeout", "3s"]);
    assert.equal(cut.code, 1);
    const { failed } = JSON.parse(cut.stdout) as { failed: { reason: string } };
    assert.match(failed.reason, /hold failed: api at localhost:\d+: hold: .*UNAVAILABLE/);
    assert.deepEqual(await new GroupPointLog(log).list(), []);
  });

  it("refuses a point cadence out of range before it starts", async () => {
    const agentArgs = pipeline.args("agent").slice(1);
    const fast = await ksrReplicator([...agentArgs, "--crash-point-interval", "10s"]);
    assert.notEqual(fast.code, 0);
    assert.match(fast.stderr, /--crash-point-interval "10s": must be between 30s and 60m/);
  });
});
