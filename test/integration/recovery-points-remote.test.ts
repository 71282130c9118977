// Recovery points of a running master target (a real child process) over gRPC with mutual TLS:
// a writer makes known versions of a tree, the agent replicates each through the process server,
// a marker follows each version, and every retained point must hydrate byte for byte (modes,
// symlinks, hard links) through the RecoveryPoints service, across an interrupted hydration, a
// kill -9 during apply, a remote rollback (after which replication continues) and timer pruning.
import { strict as assert } from "node:assert";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import {
  chmod,
  link,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  symlink,
  truncate,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import {
  ChangeBatch,
  Consistency,
  IngestClient,
  type OpenReply,
  type PushAck,
  type RecoveryPointsClient,
} from "../../src/gen/ksr/replication/v1/replication.js";
import { unaryCall } from "../../src/replicator/grpc-util.js";
import { rollback } from "../../src/replicator/journal/materialise.js";
import type { RecoveryPoint } from "../../src/replicator/journal/point.js";
import { UndoJournal } from "../../src/replicator/journal/undo-journal.js";
import { batchFormatVersion } from "../../src/replicator/master-target/machine-applier.js";
import {
  connectRecoveryPoints,
  hydrateRemote,
  listPoints,
  pointsOf,
  prunePoints,
  releasePoints,
  rollbackTo,
  streamProgressPath,
} from "../../src/replicator/recovery-points-client.js";
import {
  agentCommonName,
  commonNameOf,
  clientCredentials,
  grpcOptions,
  masterTargetCommonName,
  operatorCommonName,
  type TlsFiles,
} from "../../src/replicator/tls.js";
import { eventually } from "../fixture/eventually.js";
import { blockMachineId, createTestPipeline, machineId, type TestPipeline } from "../fixture/replication.js";
import { describeTree, treeDifference } from "../fixture/tree-compare.js";

const ksr = fileURLToPath(new URL("../../../bin/ksr.js", import.meta.url));
const runKsr = (args: string[]) => promisify(execFile)(process.execPath, [ksr, "replicator", ...args]);
const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");
const minute = 60_000;

describe("recovery points over gRPC from a master target process", function () {
  this.timeout(180_000);
  let pipeline: TestPipeline;
  let masterTarget: ChildProcess | undefined;
  let client: RecoveryPointsClient;
  let openClient: RecoveryPointsClient | undefined;
  let hydrations = 0;
  const versions = new Map<string, Map<string, string>>();
  const agentLines: string[] = [];
  const agentLog = {
    info: (message: string) => agentLines.push(`${new Date().toISOString()} ${message}`),
    warn: (message: string) => agentLines.push(`${new Date().toISOString()} warn: ${message}`),
  };
  // Set when the suite starts, not when mocha loads the file: a long run before this suite
  // would age the points past the retention windows the tests expect.
  let epoch: number;

  const identity = (name: string): TlsFiles => {
    const files = pipeline.tls.get(name);
    if (files === undefined) throw new Error(`no identity ${name}`);
    return files;
  };
  const tlsArgs = (files: TlsFiles) => ["--ca", files.ca, "--cert", files.cert, "--key", files.key];
  const masterTargetAddress = () => `localhost:${pipeline.masterTargetPort}`;

  async function startMasterTarget(extra: string[] = []): Promise<void> {
    const child = spawn(
      process.execPath,
      [
        ksr,
        "replicator",
        "master-target",
        ...tlsArgs(identity(masterTargetCommonName)),
        "--listen",
        masterTargetAddress(),
        "--encryption-key",
        join(pipeline.work, "key"),
        "--state",
        join(pipeline.work, "mt-state"),
        "--replica",
        `${machineId}=${pipeline.target}`,
        "--block-replica",
        `${blockMachineId}=${join(pipeline.work, "target.img")}`,
        ...extra,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stderr.pipe(createWriteStream(join(pipeline.work, "master-target.log"), { flags: "a" }));
    masterTarget = child;
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout }).on("line", (line) => {
        if ((JSON.parse(line) as { listening?: number }).listening !== undefined) resolve();
      });
      child.once("exit", (code, signal) => {
        reject(new Error(`master target exited (${signal ?? String(code)}) before it listened`));
      });
    });
    // A channel that saw the old process die backs off and fails calls fast: start a fresh one.
    openClient?.close();
    client = openClient = await connectRecoveryPoints(masterTargetAddress(), identity(operatorCommonName));
  }

  async function stopMasterTarget(signal: NodeJS.Signals): Promise<void> {
    const child = masterTarget;
    masterTarget = undefined;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    await exited;
  }

  async function ingest<T>(work: (client: IngestClient) => Promise<T>, machine = machineId): Promise<T> {
    const agentIdentity = await clientCredentials(identity(agentCommonName(machine)));
    const ingestClient = new IngestClient(`localhost:${pipeline.processServerPort}`, agentIdentity, grpcOptions);
    try {
      return await work(ingestClient);
    } finally {
      ingestClient.close();
    }
  }

  const openMachine = (ingestClient: IngestClient, machine = machineId) =>
    unaryCall<{ machineId: string; capture: undefined }, OpenReply>(
      (request, callback) => ingestClient.open(request, new Metadata(), callback),
      { machineId: machine, capture: undefined },
    );

  /** Places a marker in the stream as the agent would; returns its seq once the process server has it durable. */
  function placeMarker(id: string, timeUnixMs: number, machine = machineId): Promise<number> {
    return ingest(async (ingestClient) => {
      const seq = (await openMachine(ingestClient, machine)).durableSeq + 1;
      const marker = { id, consistency: Consistency.CONSISTENCY_CRASH, timeUnixMs, consistencyGroup: "" };
      const batch = ChangeBatch.encode({
        formatVersion: batchFormatVersion,
        machineId: machine,
        changes: [{ seq, op: { $case: "marker", value: marker } }],
      }).finish();
      const call = ingestClient.push();
      const acked = new Promise<void>((resolve, reject) => {
        call.on("data", (ack: PushAck) => {
          if (ack.durableSeq >= seq) resolve();
        });
        call.on("error", reject);
      });
      call.write({ machineId: machine, firstSeq: seq, lastSeq: seq, batch: Buffer.from(batch), resync: false });
      await acked;
      call.end();
      return seq;
    }, machine);
  }

  /** Places a marker and waits until the master target applied it. */
  async function mark(id: string, timeUnixMs: number, machine = machineId): Promise<void> {
    const seq = await placeMarker(id, timeUnixMs, machine);
    await ingest(
      (ingestClient) =>
        eventually(`marker ${id} applied`, async () =>
          (await openMachine(ingestClient, machine)).appliedSeq >= seq ? true : undefined,
        ),
      machine,
    );
  }

  /** Writes a version into the source and replicates it; returns the source's description. */
  async function replicate(write: () => Promise<void>): Promise<Map<string, string>> {
    await write();
    const agent = await pipeline.agent({ log: agentLog });
    await agent.run();
    return describeTree(pipeline.source);
  }

  async function version(id: string, timeUnixMs: number, write: () => Promise<void>): Promise<void> {
    versions.set(id, await replicate(write));
    await mark(id, timeUnixMs);
  }

  function expectedVersion(id: string): Map<string, string> {
    const expected = versions.get(id);
    if (expected === undefined) throw new Error(`no version recorded for ${id}`);
    return expected;
  }

  async function retained(): Promise<RecoveryPoint[]> {
    return pointsOf((await listPoints(client, machineId)).points);
  }

  async function assertHydrates(point: RecoveryPoint): Promise<void> {
    const destination = join(pipeline.work, "hydrated", `${point.id}-${hydrations++}`);
    assert.equal(await hydrateRemote(client, machineId, point, destination), true);
    assert.equal(treeDifference(expectedVersion(point.id), await describeTree(destination)), "", `point ${point.id}`);
  }

  async function assertEveryPointHydrates(): Promise<void> {
    for (const point of await retained()) await assertHydrates(point);
  }

  const file = (path: string) => join(pipeline.source, path);
  async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
    const handle = await open(file(path), "r+");
    try {
      await handle.write(data, 0, data.length, offset);
    } finally {
      await handle.close();
    }
  }

  before(async () => {
    epoch = Date.now();
    pipeline = await createTestPipeline();
    await writeFile(join(pipeline.work, "key"), pipeline.key.toString("hex"), { mode: 0o600 });
    await startMasterTarget();
    await pipeline.startProcessServer();
  });

  afterEach(async function () {
    if (this.currentTest?.state !== "failed") return;
    const log = await readFile(join(pipeline.work, "master-target.log"), "utf8").catch(() => "");
    process.stderr.write(
      `master target log (tail):\n${log.split("\n").slice(-30).join("\n")}\nprocess server warnings:\n${pipeline.warnings.slice(-20).join("\n")}\nagent:\n${agentLines.slice(-20).join("\n")}\n`,
    );
  });

  after(async () => {
    openClient?.close();
    await pipeline.close();
    await stopMasterTarget("SIGTERM");
    await rm(pipeline.work, { recursive: true, force: true });
  });

  it("hydrates every retained point byte for byte, metadata included", async () => {
    await version("v1", epoch - 110 * minute, async () => {
      await mkdir(file("a/b"), { recursive: true });
      await writeFile(file("big.bin"), randomBytes(6 * 1024 * 1024));
      await writeFile(file("a/f1"), randomBytes(200_000));
      await writeFile(file("a/b/notes.txt"), "first version\n".repeat(500));
      await writeFile(file("a/f2"), "private");
      await symlink("a/f1", file("link"));
    });
    await version("v2", epoch - 100 * minute, async () => {
      await writeAt("big.bin", 3 * 65536, randomBytes(65536));
      await link(file("a/f1"), file("a/f1-again"));
      await chmod(file("a/f2"), 0o600);
      await rename(file("a/b"), file("c"));
      await writeFile(file("sparse"), "");
      await truncate(file("sparse"), 5 * 1024 * 1024);
    });
    await version("v3", epoch - 50 * minute, async () => {
      await truncate(file("big.bin"), 3 * 1024 * 1024);
      await rm(file("c"), { recursive: true });
      await writeFile(file("c"), "a directory became a file");
      await rm(file("link"));
      await symlink("../elsewhere", file("link"));
      await mkdir(file("locked"), { mode: 0o500 });
      await chmod(file("locked"), 0o500);
    });
    assert.deepEqual(
      (await retained()).map((point) => point.id),
      ["v1", "v2", "v3"],
    );
    await assertEveryPointHydrates();
    const staged = await readdir(join(pipeline.work, "mt-state", "hydrations", machineId));
    assert.deepEqual(staged, [], "a completed hydration leaves no staged copy behind");
  });

  it("resumes an interrupted hydration to the same result", async () => {
    const [point] = (await retained()).filter((candidate) => candidate.id === "v2");
    assert.ok(point !== undefined);
    const destination = join(pipeline.work, "hydrated", "interrupted");
    assert.equal(
      await hydrateRemote(client, machineId, point, destination, { stopAfterBytes: 2 * 1024 * 1024 }),
      false,
    );
    assert.ok(
      (await readdir(join(pipeline.work, "hydrated"))).includes("interrupted.ksr-hydrate-stream.json"),
      "the interrupted run left its cursor",
    );
    assert.equal(await hydrateRemote(client, machineId, point, destination), true);
    assert.equal(treeDifference(expectedVersion("v2"), await describeTree(destination)), "");
    await assert.rejects(readdir(streamProgressPath(destination)), { code: "ENOENT" });
  });

  it("refuses bad requests with clear statuses and changes nothing", async () => {
    const before = { points: await retained(), replica: await describeTree(pipeline.target) };
    const [point] = before.points;
    assert.ok(point !== undefined);
    const hydrateCall = (request: Parameters<RecoveryPointsClient["hydrate"]>[0]) =>
      new Promise<void>((resolve, reject) => {
        const call = client.hydrate(request);
        call.on("data", () => undefined);
        call.on("error", reject);
        call.on("end", resolve);
      });
    const cases: [string, () => Promise<unknown>, status, RegExp][] = [
      ["an unknown machine", () => listPoints(client, "nobody"), status.NOT_FOUND, /no replica for machine "nobody"/],
      ["a malformed machine id", () => listPoints(client, "../m1"), status.INVALID_ARGUMENT, /machine id/],
      [
        "an unknown point",
        () => rollbackTo(client, machineId, { ...point, id: "nope", seq: 0 }),
        status.NOT_FOUND,
        /no recovery point "nope"/,
      ],
      [
        "an empty point id",
        () => hydrateCall({ machineId, pointId: "", pointSeq: 0, resume: undefined }),
        status.INVALID_ARGUMENT,
        /point id/,
      ],
      [
        "a cursor escaping the root",
        () => hydrateCall({ machineId, pointId: point.id, pointSeq: 0, resume: { path: "../../etc", offset: 0 } }),
        status.INVALID_ARGUMENT,
        /'\.\.' components/,
      ],
      [
        "an absolute cursor",
        () => hydrateCall({ machineId, pointId: point.id, pointSeq: 0, resume: { path: "/etc/passwd", offset: 0 } }),
        status.INVALID_ARGUMENT,
        /absolute/,
      ],
      [
        "a cursor naming no entry",
        () => hydrateCall({ machineId, pointId: point.id, pointSeq: 0, resume: { path: "no/such", offset: 0 } }),
        status.NOT_FOUND,
        /not in this point/,
      ],
      [
        "a retention below 1h",
        () => prunePoints(client, machineId, 30 * minute),
        status.INVALID_ARGUMENT,
        /1h and 720h/,
      ],
    ];
    for (const [name, call, code, message] of cases) {
      await assert.rejects(call(), (error: ServiceError) => {
        assert.equal(error.code, code, `${name}: ${error.message}`);
        assert.match(error.details, message, name);
        return true;
      });
    }
    const agentClient = await connectRecoveryPoints(masterTargetAddress(), identity(agentCommonName(machineId)));
    try {
      await assert.rejects(listPoints(agentClient, machineId), { code: status.PERMISSION_DENIED });
    } finally {
      agentClient.close();
    }
    // A drill's hydrator reads its own machine's points and nothing else, and changes nothing.
    const hydrator = await connectRecoveryPoints(
      masterTargetAddress(),
      identity(commonNameOf({ role: "hydrator", machineId })),
    );
    const otherHydrator = await connectRecoveryPoints(
      masterTargetAddress(),
      identity(commonNameOf({ role: "hydrator", machineId: "other" })),
    );
    try {
      assert.deepEqual(pointsOf((await listPoints(hydrator, machineId)).points), before.points);
      const denied: [string, () => Promise<unknown>][] = [
        ["rollback", () => rollbackTo(hydrator, machineId, before.points[0] as RecoveryPoint)],
        ["prune", () => prunePoints(hydrator, machineId, 2 * 3_600_000)],
        ["another machine's points", () => listPoints(otherHydrator, machineId)],
      ];
      for (const [name, call] of denied)
        await assert.rejects(call(), (error: ServiceError) => {
          assert.equal(error.code, status.PERMISSION_DENIED, `${name}: ${error.message}`);
          return true;
        });
    } finally {
      hydrator.close();
      otherHydrator.close();
    }
    assert.deepEqual(await retained(), before.points);
    assert.equal(treeDifference(before.replica, await describeTree(pipeline.target)), "");
  });

  it("keeps every retained point after a kill -9 of the master target during apply", async () => {
    const appliedBefore = await ingest(async (ingestClient) => (await openMachine(ingestClient)).appliedSeq);
    await writeFile(file("bulk.bin"), randomBytes(48 * 1024 * 1024));
    await writeAt("big.bin", 0, randomBytes(1024 * 1024));
    await writeFile(file("a/f2"), "changed after v3");
    const agent = await pipeline.agent();
    const running = agent.run();
    const appliedAtKill = await eventually(
      "the master target applying the new version",
      () =>
        ingest(async (ingestClient) => {
          const { appliedSeq } = await openMachine(ingestClient);
          return appliedSeq > appliedBefore ? appliedSeq : undefined;
        }),
      20_000,
      { intervalMs: 20 },
    );
    await stopMasterTarget("SIGKILL");
    await startMasterTarget();
    await running;
    const appliedAfter = await ingest(async (ingestClient) => (await openMachine(ingestClient)).appliedSeq);
    assert.ok(
      appliedAtKill < appliedAfter,
      `killed at seq ${appliedAtKill}, before the version ended (${appliedAfter})`,
    );
    versions.set("v4", await describeTree(pipeline.source));
    await mark("v4", epoch - minute);
    assert.equal(treeDifference(expectedVersion("v4"), await describeTree(pipeline.target)), "");
    assert.deepEqual(
      (await retained()).map((point) => point.id),
      ["v1", "v2", "v3", "v4"],
    );
    await assertEveryPointHydrates();
  });

  it("rolls the replica back to a point over gRPC (CLI), after which replication continues from there", async () => {
    const operator = identity(operatorCommonName);
    const { stderr } = await runKsr([
      "rollback",
      "--master-target",
      masterTargetAddress(),
      "--machine",
      machineId,
      ...tlsArgs(operator),
      "--point",
      "v2",
      "--yes",
    ]);
    assert.match(stderr, /rolled back to point v2; 2 newer points discarded/);
    assert.equal(treeDifference(expectedVersion("v2"), await describeTree(pipeline.target)), "");
    assert.deepEqual(
      (await retained()).map((point) => point.id),
      ["v1", "v2"],
    );
    await version("v5", epoch, async () => {
      await writeFile(file("after-rollback"), "replication continues");
      await writeAt("bulk.bin", 65536, randomBytes(4096));
    });
    assert.equal(treeDifference(expectedVersion("v5"), await describeTree(pipeline.target)), "");
    assert.ok(
      pipeline.warnings.some((warning) => /rolled back to a recovery point.*ordering a resync/.test(warning)),
      `the process server was told to resync: ${pipeline.warnings.join("; ")}`,
    );
    await assertEveryPointHydrates();
  });

  it("prunes on the timer and keeps the oldest retained point whole", async () => {
    await stopMasterTarget("SIGTERM");
    await startMasterTarget(["--retention", "105m", "--prune-interval", "1s"]);
    await eventually("v1 (110 minutes old) pruned", async () =>
      (await retained()).some((point) => point.id === "v1") ? undefined : true,
    );
    assert.deepEqual(
      (await retained()).map((point) => point.id),
      ["v2", "v5"],
    );
    await assertEveryPointHydrates();
  });

  it("hydrates a block replica's points into new image files (CLI, remote mode)", async () => {
    const image = join(pipeline.work, "source.img");
    await writeFile(image, randomBytes(8 * 1024 * 1024));
    const digests = new Map<string, string>();
    for (const [index, id] of ["b1", "b2"].entries()) {
      if (index > 0) {
        const handle = await open(image, "r+");
        await handle.write(randomBytes(1024 * 1024), 0, 1024 * 1024, 2 * 1024 * 1024);
        await handle.close();
      }
      const agent = await pipeline.agent({
        machineId: blockMachineId,
        mode: "block",
        source: image,
        stateDir: join(pipeline.work, "agent-blk"),
      });
      await agent.run();
      digests.set(id, sha256(await readFile(image)));
      await mark(id, Date.now(), blockMachineId);
    }
    const remote = [
      "--master-target",
      masterTargetAddress(),
      "--machine",
      blockMachineId,
      ...tlsArgs(identity(operatorCommonName)),
    ];
    const listed = await runKsr(["points", ...remote, "--json"]);
    const points = (JSON.parse(listed.stdout) as { points: RecoveryPoint[] }).points;
    assert.deepEqual(
      points.map((point) => point.id),
      ["b1", "b2"],
    );
    for (const id of ["b1", "b2"]) {
      const destination = join(pipeline.work, "hydrated", `${id}.img`);
      const { stderr } = await runKsr(["hydrate", ...remote, "--point", id, "--dest", destination]);
      assert.match(stderr, new RegExp(`point ${id} hydrated into`));
      assert.equal(sha256(await readFile(destination)), digests.get(id), `image at ${id}`);
    }
  });

  it("finishes an interrupted rollback over gRPC; frames and hydrations wait for it", async () => {
    await version("v6", Date.now(), async () => {
      await writeFile(file("v6.txt"), "six");
    });
    await replicate(async () => {
      for (let index = 0; index < 4; index++) await writeFile(file(`after-v6-${index}`), randomBytes(70_000));
      await rm(file("v6.txt"));
    });
    const [v6] = (await retained()).filter((point) => point.id === "v6");
    assert.ok(v6 !== undefined);
    // A rollback cut short after one undone change, as a crash there would leave it.
    await stopMasterTarget("SIGTERM");
    const journal = await UndoJournal.open(join(pipeline.work, "mt-state", "journals", machineId));
    try {
      assert.equal(await rollback(journal, pipeline.target, v6, { stopAfterGroups: 1 }), false);
    } finally {
      await journal.close();
    }
    await startMasterTarget();
    assert.equal((await listPoints(client, machineId)).pendingRollback, "v6");
    const appliedBefore = await ingest(async (ingestClient) => (await openMachine(ingestClient)).appliedSeq);
    await placeMarker("refused-meanwhile", Date.now());
    await eventually("the process server told that frames are refused", () =>
      Promise.resolve(
        pipeline.warnings.some((warning) => /being rolled back to recovery point "v6"/.test(warning))
          ? true
          : undefined,
      ),
    );
    assert.equal(await ingest(async (ingestClient) => (await openMachine(ingestClient)).appliedSeq), appliedBefore);
    await assert.rejects(
      hydrateRemote(client, machineId, v6, join(pipeline.work, "hydrated", "during-rollback")),
      /rolled back/,
    );
    await rollbackTo(client, machineId, v6);
    assert.equal(treeDifference(expectedVersion("v6"), await describeTree(pipeline.target)), "");
    assert.equal((await listPoints(client, machineId)).pendingRollback, "");
    // The marker placed meanwhile is dropped with the process server's cache when the resync is ordered.
    versions.set("v7", await replicate(() => Promise.resolve()));
    assert.equal(treeDifference(expectedVersion("v7"), await describeTree(pipeline.target)), "");
  });
  it("releases every point and the journal of a stream whose epoch ended, for the operator only, leaving the replica", async () => {
    const points = await retained();
    assert.ok(points.length > 0);
    const replica = await describeTree(pipeline.target);
    const hydrator = await connectRecoveryPoints(
      masterTargetAddress(),
      identity(commonNameOf({ role: "hydrator", machineId })),
    );
    try {
      await assert.rejects(releasePoints(hydrator, machineId), { code: status.PERMISSION_DENIED });
    } finally {
      hydrator.close();
    }
    assert.deepEqual(await retained(), points);
    const reply = await releasePoints(client, machineId);
    assert.deepEqual(
      pointsOf(reply.removed).map((point) => point.id),
      points.map((point) => point.id),
    );
    assert.deepEqual(reply.usage, { segmentBytes: 0, objectBytes: 0, segments: 0 });
    assert.deepEqual((await listPoints(client, machineId)).points, []);
    assert.deepEqual((await releasePoints(client, machineId)).removed, [], "a repeat releases nothing more");
    assert.equal(treeDifference(replica, await describeTree(pipeline.target)), "");
  });
});
