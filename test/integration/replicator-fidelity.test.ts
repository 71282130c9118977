// Metadata fidelity of the whole data path (agent, process server, master target over gRPC and
// mTLS): the replica equals what `rsync -aHAX --numeric-ids` makes of the same tree, field by
// field, in the initial copy, under continuous replication (a chown, chmod, touch, setfattr or
// ACL change alone replicates) and after a resync. Needs root and rsync.
import { strict as assert } from "node:assert";
import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { chmod, lchown, mkdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import fc from "fast-check";
import { Consistency, EntryKind } from "../../src/gen/ksr/replication/v1/replication.js";
import {
  pointsOf,
  connectRecoveryPoints,
  hydrateRemote,
  listPoints,
  rollbackTo,
} from "../../src/replicator/recovery-points-client.js";
import { operatorCommonName } from "../../src/replicator/tls.js";
import { nativeAddon } from "../../src/native/addon.js";
import { makeSpecial } from "../../src/replicator/file-attributes.js";
import { capabilityValue, makeFidelityTree, sampleAcl, stampTimes } from "../fixture/fidelity-tree.js";
import { cutNow, createPointsSite, type PointsSite } from "../fixture/points-site.js";
import { converge, removeTestPipeline, startTestPipeline, type TestPipeline } from "../fixture/replication.js";
import { describeTree, treeDifference, treesDiffer } from "../fixture/tree-compare.js";
import { propertyRuns } from "../fixture/property-runs.js";

const run = promisify(execFile);
const metadata = { metadata: true };

describe("replicator metadata fidelity (against rsync -aHAX --numeric-ids)", function () {
  let pipeline: TestPipeline;
  const addon = nativeAddon();

  before(async function () {
    if (process.getuid?.() !== 0) this.skip(); // owners and device nodes need root, as they do for rsync
    await run("rsync", ["--version"]).catch(() => {
      throw new Error("rsync is not installed (apt-get install rsync; .ci/run installs it)");
    });
  });
  beforeEach(async () => {
    pipeline = await startTestPipeline();
  });
  afterEach(() => removeTestPipeline(pipeline));

  it("the initial copy equals rsync's copy of the same tree, field by field", async () => {
    await makeFidelityTree(pipeline.source);
    const viaRsync = join(pipeline.work, "rsync");
    await run("rsync", ["-aHAX", "--numeric-ids", `${pipeline.source}/`, `${viaRsync}/`]);
    await (await pipeline.agent()).run();
    assert.equal(await treesDiffer(viaRsync, pipeline.target, metadata), "", "replica vs rsync");
    assert.equal(await treesDiffer(pipeline.source, pipeline.target, metadata), "", "replica vs source");
  });

  it("continuous replication: each metadata change alone replicates, special files appear", async () => {
    await makeFidelityTree(pipeline.source);
    const agent = await pipeline.agent({ once: false });
    const running = agent.run();
    const s = (path: string) => join(pipeline.source, path);
    const changes: [string, () => Promise<void> | void][] = [
      ["chown of the data directory", () => lchown(s("pgdata"), 70, 70)],
      ["chown of a symlink itself", () => lchown(s("version-link"), 1, 2)],
      ["chmod adding setgid", () => chmod(s("pgdata/PG_VERSION"), 0o2640)],
      [
        "touch of a file",
        () => {
          addon.setMtime(s("pgdata/PG_VERSION"), 1_000_000_000, 1);
        },
      ],
      [
        "touch of a directory",
        () => {
          addon.setMtime(s("shared"), 1_000_000_001, 2);
        },
      ],
      [
        "touch of the root",
        () => {
          addon.setMtime(pipeline.source, 1_000_000_002, 3);
        },
      ],
      ["chown of the root", () => lchown(pipeline.source, 5, 5)],
      [
        "setfattr",
        () => {
          addon.setXattr(s("linked-a"), "user.new", Buffer.from("value"));
        },
      ],
      [
        "setfattr -x",
        () => {
          addon.removeXattr(s("shared/tagged"), "user.mime_type");
        },
      ],
      [
        "setfacl",
        () => {
          addon.setXattr(s("locked"), "system.posix_acl_access", sampleAcl(3, 4));
        },
      ],
      [
        "setcap",
        () => {
          addon.setXattr(s("bin/setuid"), "security.capability", capabilityValue(12));
        },
      ],
      [
        "mkfifo",
        () => {
          makeSpecial(s("pgdata/new-fifo"), EntryKind.ENTRY_KIND_FIFO, 0o600, noDevice);
        },
      ],
      [
        "mknod",
        () => {
          makeSpecial(s("dev/zero"), EntryKind.ENTRY_KIND_CHAR_DEVICE, 0o666, zeroDevice);
        },
      ],
      ["a file written, then its mtime put back", () => rewriteKeepingMtime(s("pgdata/base/1/1259"))],
      ["a new directory tree", () => newTree(s("new"))],
    ];
    try {
      assert.equal(await converge(() => treesDiffer(pipeline.source, pipeline.target, metadata)), "", "initial");
      for (const [name, change] of changes) {
        await change();
        assert.equal(await converge(() => treesDiffer(pipeline.source, pipeline.target, metadata)), "", name);
      }
    } finally {
      agent.stop();
      await running;
    }
  });

  it("a resync finds attributes changed while the agent was away", async () => {
    await makeFidelityTree(pipeline.source);
    await (await pipeline.agent()).run();
    await rm(join(pipeline.work, "agent-state"), { recursive: true, force: true }); // no manifest: resync
    await lchown(join(pipeline.source, "pgdata"), 1, 1);
    await chmod(join(pipeline.source, "bin/setgid"), 0o755);
    addon.setXattr(join(pipeline.source, "dev/null"), "trusted.moved", Buffer.from("x"));
    await stampTimes(pipeline.source, 1_300_000_000);
    const summary = await (await pipeline.agent()).run();
    assert.equal(await treesDiffer(pipeline.source, pipeline.target, metadata), "");
    assert.ok(summary.bytesPushed < 200_000, `only metadata travels (${summary.bytesPushed} bytes)`);
  });

  it("property: random metadata operations on a live tree converge to rsync's fidelity", async () => {
    const names = ["a", "b", "d", "d/x", "d/fifo"];
    const operation = fc.oneof(
      fc.record({
        kind: fc.constant("chown" as const),
        name: fc.constantFrom("", ...names),
        uid: fc.constantFrom(0, 999, 65534),
        gid: fc.constantFrom(0, 999, 100),
      }),
      fc.record({
        kind: fc.constant("chmod" as const),
        name: fc.constantFrom("", ...names),
        mode: fc.constantFrom(0o700, 0o755, 0o4755, 0o2750, 0o1777, 0o640),
      }),
      fc.record({
        kind: fc.constant("touch" as const),
        name: fc.constantFrom("", ...names),
        seconds: fc.integer({ min: 0, max: 2_000_000_000 }),
        nanoseconds: fc.nat(999_999_999),
      }),
      fc.record({
        kind: fc.constant("setfattr" as const),
        name: fc.constantFrom("", ...names),
        attribute: fc.constantFrom("user.x", "trusted.y", "system.posix_acl_access", "security.capability"),
        remove: fc.boolean(),
      }),
      fc.record({ kind: fc.constant("write" as const), name: fc.constantFrom("a", "b", "d/x"), text: fc.string() }),
      fc.record({ kind: fc.constant("remove" as const), name: fc.constantFrom(...names) }),
      fc.record({ kind: fc.constant("mkfifo" as const), name: fc.constantFrom(...names) }),
    );
    type Operation = typeof operation extends fc.Arbitrary<infer T> ? T : never;
    const path = (name: string) => (name === "" ? pipeline.source : join(pipeline.source, name));
    const values: Record<string, Buffer> = {
      "user.x": Buffer.from("x"),
      "trusted.y": Buffer.from("y"),
      "system.posix_acl_access": sampleAcl(1, 2),
      "security.capability": capabilityValue(),
    };
    const apply = async (op: Operation): Promise<void> => {
      await mkdir(path("d"), { recursive: true });
      switch (op.kind) {
        case "chown":
          return lchown(path(op.name), op.uid, op.gid);
        case "chmod":
          return chmod(path(op.name), op.mode);
        case "touch":
          addon.setMtime(path(op.name), op.seconds, op.nanoseconds);
          return;
        case "setfattr":
          if (op.remove) addon.removeXattr(path(op.name), op.attribute);
          else addon.setXattr(path(op.name), op.attribute, values[op.attribute]!);
          return;
        case "write":
          // Non-blocking: writing a FIFO without a reader would hang a thread of the shared pool.
          return writeFile(path(op.name), op.text, {
            flag: constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NONBLOCK,
          });
        case "remove":
          return rm(path(op.name), { recursive: true, force: true });
        case "mkfifo":
          makeSpecial(path(op.name), EntryKind.ENTRY_KIND_FIFO, 0o644, noDevice);
          return;
      }
    };
    const agentLog: string[] = [];
    const agent = await pipeline.agent({
      once: false,
      log: { info: (m) => agentLog.push(m), warn: (m) => agentLog.push(m) },
    });
    const running = agent.run();
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(operation, { minLength: 1, maxLength: 10 }), async (operations) => {
          // Operations the kernel refuses (a capability on a directory, a FIFO over a file) are part of the fuzz.
          for (const op of operations) await apply(op).catch(() => undefined);
          const difference = await converge(() => treesDiffer(pipeline.source, pipeline.target, metadata));
          assert.equal(
            difference,
            "",
            `${difference}\nagent log:\n${agentLog.join("\n")}\n${pipeline.warnings.join("\n")}`,
          );
        }),
        propertyRuns(10),
      );
    } finally {
      agent.stop();
      await running;
    }
  });
});

describe("recovery points keep metadata (remote hydrate and rollback over gRPC)", function () {
  let site: PointsSite;
  before(function () {
    if (process.getuid?.() !== 0) this.skip();
  });
  beforeEach(async () => {
    site = await createPointsSite(["m1"]);
  });
  afterEach(() => site.close());

  it("hydrates and rolls back to a point taken before chown, touch, setfattr, mkfifo and rm of a device", async () => {
    const addon = nativeAddon();
    const source = site.source("m1");
    const replicaMatches = () => converge(() => treesDiffer(source, site.replica("m1"), metadata));
    await makeFidelityTree(source);
    const agent = await site.startAgent("m1");
    const barrier = await site.barrierClient(agent.address);
    assert.equal(await replicaMatches(), "");
    const before = await describeTree(source, metadata);
    const first = await cutNow(barrier, { requested: Consistency.CONSISTENCY_CRASH });

    await lchown(join(source, "pgdata"), 0, 0);
    await chmod(join(source, "bin/setuid"), 0o755);
    addon.setXattr(join(source, "pgdata/PG_VERSION"), "user.after", Buffer.from("later"));
    addon.removeXattr(join(source, "shared"), "system.posix_acl_default");
    makeSpecial(join(source, "pgdata/fifo"), EntryKind.ENTRY_KIND_FIFO, 0o600, noDevice);
    await rm(join(source, "dev/null"));
    await writeFile(join(source, "pgdata/base/1/1259"), "rewritten");
    await stampTimes(source, 1_700_000_000);
    assert.equal(await replicaMatches(), "");
    const after = await describeTree(source, metadata);
    const second = await cutNow(barrier, { requested: Consistency.CONSISTENCY_CRASH });
    await agent.stop();

    const client = await connectRecoveryPoints(site.masterTargetAddress, site.identity(operatorCommonName));
    try {
      const points = pointsOf((await listPoints(client, "m1")).points);
      const point = (id: string) => points.find((candidate) => candidate.id === id)!;
      for (const [cut, expected] of [
        [first, before],
        [second, after],
      ] as const) {
        const remote = join(site.work, `remote-${cut.pointId}`);
        assert.equal(await hydrateRemote(client, "m1", point(cut.pointId), remote), true);
        assert.equal(treeDifference(expected, await describeTree(remote, metadata)), "", `remote ${cut.pointId}`);
        const local = await site.hydrateAt("m1", cut.pointId);
        assert.equal(treeDifference(expected, await describeTree(local, metadata)), "", `local ${cut.pointId}`);
      }
      await rollbackTo(client, "m1", point(first.pointId));
      assert.equal(treeDifference(before, await describeTree(site.replica("m1"), metadata)), "", "rollback");
    } finally {
      client.close();
    }
  });
});

const noDevice = { rdevMajor: 0, rdevMinor: 0 };
const zeroDevice = { rdevMajor: 1, rdevMinor: 5 };

/** Changes a file's content and sets its mtime back, as `cp -p` over it or a restore tool would. */
async function rewriteKeepingMtime(path: string): Promise<void> {
  const before = await stat(path, { bigint: true });
  await writeFile(path, Buffer.alloc(Number(before.size), 9));
  nativeAddon().setMtime(path, Number(before.mtimeNs / 1_000_000_000n), Number(before.mtimeNs % 1_000_000_000n));
}

async function newTree(root: string): Promise<void> {
  await mkdir(join(root, "inner"), { recursive: true });
  await writeFile(join(root, "inner/file"), "content");
  await lchown(join(root, "inner/file"), 999, 999);
  await lchown(join(root, "inner"), 999, 999);
  await chmod(join(root, "inner"), 0o700);
  await stampTimes(root, 1_100_000_000);
}
