// The master target's apply path on real files: in-order idempotent apply, and hostile or
// malformed frames rejected without changing the replica.
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { join } from "node:path";
import {
  ChangeBatch,
  Codec,
  Consistency,
  EntryKind,
  type Attributes,
  type Change,
  type Frame,
  type Marker,
} from "../../src/gen/ksr/replication/v1/replication.js";
import { loadBlockHasher } from "../../src/replicator/block-hash.js";
import { DurableCounter } from "../../src/replicator/durable-counter.js";
import { sealFrame } from "../../src/replicator/frame-codec.js";
import { InlineFrameSealer } from "../../src/replicator/frame-sealer.js";
import { noJournal, type ChangeJournal } from "../../src/replicator/master-target/change-journal.js";
import { batchFormatVersion, MachineApplier } from "../../src/replicator/master-target/machine-applier.js";
import { BlockReplica, TreeReplica } from "../../src/replicator/master-target/replica.js";
import { describeTree } from "../fixture/tree-compare.js";

type Op = NonNullable<Change["op"]>;
const machineId = "m1";
const run = promisify(execFile);
const emptyDigest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const key = randomBytes(32);

function frame(
  firstSeq: number,
  ops: Op[],
  options: { machine?: string; sealKey?: Buffer; codec?: Codec } = {},
): Frame {
  const changes = ops.map((op, index) => ({ seq: firstSeq + index, op }));
  const batch = Buffer.from(
    ChangeBatch.encode({
      formatVersion: batchFormatVersion,
      machineId: options.machine ?? machineId,
      changes,
    }).finish(),
  );
  return sealFrame(
    options.sealKey ?? key,
    options.codec ?? Codec.CODEC_ZSTD,
    { machineId: options.machine ?? machineId, firstSeq, lastSeq: firstSeq + ops.length - 1 },
    batch,
  );
}

const file = (path: string, mode = 0o644): Op => ({
  $case: "make",
  value: { path, kind: EntryKind.ENTRY_KIND_FILE, mode, rdevMajor: 0, rdevMinor: 0 },
});
const makeOf = (path: string) => ({ path, kind: EntryKind.ENTRY_KIND_FILE, mode: 0o644, rdevMajor: 0, rdevMinor: 0 });
const attributes = (path: string, fields: Partial<Attributes>): Op => ({
  $case: "setAttributes",
  value: { path, mode: 0o644, attributes: { uid: 0, gid: 0, mtimeSec: 1, mtimeNsec: 0, xattrs: [], ...fields } },
});
const dir = (path: string): Op => ({
  $case: "make",
  value: { path, kind: EntryKind.ENTRY_KIND_DIRECTORY, mode: 0o755, rdevMajor: 0, rdevMinor: 0 },
});
const write = (path: string, offset: number, text: string): Op => ({
  $case: "write",
  value: { path, offset, data: Buffer.from(text) },
});

const marker = (fields: Partial<Marker>): Op => ({
  $case: "marker",
  value: { id: "p", consistency: Consistency.CONSISTENCY_CRASH, timeUnixMs: 1, consistencyGroup: "", ...fields },
});

describe("replicator master target apply", function () {
  let work: string;
  let replicaRoot: string;
  let applier: MachineApplier;

  async function openApplier(journal: ChangeJournal = noJournal): Promise<MachineApplier> {
    const counter = await DurableCounter.open(join(work, "applied"));
    return new MachineApplier(
      machineId,
      new TreeReplica(replicaRoot, journal),
      journal,
      counter,
      new InlineFrameSealer(key),
    );
  }

  before(loadBlockHasher);
  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), "ksr-mt-"));
    replicaRoot = join(work, "replica");
    await mkdir(replicaRoot);
    applier = await openApplier();
  });
  afterEach(async () => {
    await applier.close();
    await rm(work, { recursive: true, force: true });
  });

  it("applies in order, persists the applied seq, and treats a replayed frame as a no-op", async () => {
    const first = frame(1, [
      dir("d"),
      file("d/f", 0o600),
      write("d/f", 0, "hello"),
      { $case: "truncate", value: { path: "d/f", size: 8 } },
    ]);
    assert.equal(await applier.applyFrames([first]), 4);
    await writeFile(join(replicaRoot, "d/f"), "changed locally"); // a replay must not rewrite it
    assert.equal(await applier.applyFrames([first]), 4);
    assert.equal(await readFile(join(replicaRoot, "d/f"), "utf8"), "changed locally");
    await applier.close();
    applier = await openApplier();
    assert.equal(applier.appliedSeq, 4, "the applied seq survives a restart");
  });

  it("applies only the unapplied tail of a frame that overlaps the applied seq", async () => {
    await applier.applyFrames([frame(1, [file("f"), write("f", 0, "aaaa")])]);
    await applier.applyFrames([frame(2, [write("f", 0, "bbbb"), write("f", 1, "c")])]);
    // seq 2 was applied already (as "aaaa"), so only seq 3 of the second frame takes effect.
    assert.equal(await readFile(join(replicaRoot, "f"), "utf8"), "acaa");
    assert.equal(applier.appliedSeq, 3);
  });

  it("renames, hard links, symlinks, modes and removals", async () => {
    await applier.applyFrames([
      frame(1, [
        dir("a"),
        file("a/x"),
        write("a/x", 0, "x"),
        { $case: "rename", value: { from: "a", to: "b" } },
        { $case: "hardLink", value: { path: "b/y", existing: "b/x" } },
        { $case: "symlink", value: { path: "s", target: "b/x" } },
        { $case: "setMode", value: { path: "b/x", mode: 0o600 } },
        file("gone"),
        { $case: "remove", value: { path: "gone" } },
      ]),
    ]);
    const tree = await describeTree(replicaRoot);
    assert.deepEqual([...tree.keys()], ["b", "b/x", "b/y", "s"]);
    assert.match(tree.get("b/y") ?? "", /^file 600 1 .* link b\/x$/);
    assert.equal(tree.get("s"), "symlink -> b/x");
  });

  it("tells the journal about every change before it is applied", async () => {
    await applier.close();
    const seen: number[] = [];
    applier = await openApplier({
      beforeChange: (change) => {
        seen.push(change.seq);
        return Promise.resolve();
      },
      sync: () => Promise.resolve(),
    });
    await applier.applyFrames([
      frame(1, [
        file("f"),
        {
          $case: "marker",
          value: { id: "p1", consistency: Consistency.CONSISTENCY_CRASH, timeUnixMs: 1, consistencyGroup: "" },
        },
      ]),
    ]);
    assert.deepEqual(seen, [1, 2]);
  });

  const hostile: [string, () => Frame, RegExp][] = [
    ["path traversal", () => frame(1, [file("../escape")]), /'\.\.' components/],
    ["an absolute path", () => frame(1, [file("/tmp/escape")]), /absolute/],
    ["a NUL byte", () => frame(1, [file("a\0b")]), /NUL/],
    ["a huge offset", () => frame(1, [file("f"), write("f", 2 ** 52, "x")]), /beyond/],
    [
      "a huge zero range",
      () => frame(1, [file("f"), { $case: "zero", value: { path: "f", offset: 0, length: 2 ** 51 } }]),
      /beyond/,
    ],
    ["mode bits outside 0o7777", () => frame(1, [file("f", 0o170000)]), /mode/],
    ["an out-of-order sequence", () => frame(5, [file("f")]), /out of order/],
    ["the wrong machine id", () => frame(1, [file("f")], { machine: "other" }), /machine "other"/],
    ["the wrong key", () => frame(1, [file("f")], { sealKey: randomBytes(32) }), /authentication/],
    ["a tampered payload", () => tamper(frame(1, [file("f")])), /authentication/],
    ["a lying size", () => ({ ...frame(1, [file("f")]), uncompressedSize: 2 ** 31 }), /authentication|limit/],
    ["a lying sequence range", () => ({ ...frame(1, [file("f"), file("g")]), lastSeq: 5 }), /authentication/],
    ["an empty operation", () => frame(1, [undefined as unknown as Op]), /no operation/],
    ["a marker with an empty id", () => frame(1, [file("f"), marker({ id: "" })]), /marker: point id/],
    ["a marker with a negative time", () => frame(1, [file("f"), marker({ timeUnixMs: -1 })]), /marker: point time/],
    [
      "a marker with an oversized group",
      () => frame(1, [file("f"), marker({ consistencyGroup: "g".repeat(257) })]),
      /marker: consistency group/,
    ],
    [
      "a make of an unknown kind",
      () => frame(1, [{ $case: "make", value: { ...makeOf("f"), kind: 99 as unknown as EntryKind } }]),
      /kind 99/,
    ],
    [
      "device numbers on a FIFO",
      () => frame(1, [{ $case: "make", value: { ...makeOf("f"), kind: EntryKind.ENTRY_KIND_FIFO, rdevMajor: 1 } }]),
      /only device nodes/,
    ],
    ["attributes on a path outside the root", () => frame(1, [attributes("../x", {})]), /'\.\.' components/],
    [
      "setAttributes without attributes",
      () => frame(1, [{ $case: "setAttributes", value: { path: "keep", mode: 0o644, attributes: undefined } }]),
      /carries no attributes/,
    ],
    ["uid -1 (chown's leave-unchanged)", () => frame(1, [attributes("keep", { uid: 0xffffffff })]), /uid 4294967295/],
    ["nanoseconds of a whole second", () => frame(1, [attributes("keep", { mtimeNsec: 1e9 })]), /nanoseconds/],
    [
      "an unsafe mtime",
      () => frame(1, [attributes("keep", { mtimeSec: 2 ** 60 })]),
      /larger than Number.MAX_SAFE_INTEGER/,
    ],
    [
      "an xattr outside the replicated namespaces",
      () => frame(1, [attributes("keep", { xattrs: [{ name: "system.nfs4_acl", value: Buffer.from("x") }] })]),
      /not in a replicated namespace/,
    ],
    [
      "an oversized xattr value",
      () => frame(1, [attributes("keep", { xattrs: [{ name: "user.big", value: Buffer.alloc(65537) }] })]),
      /65537 bytes/,
    ],
    [
      "an xattr name of 256 bytes",
      () => frame(1, [attributes("keep", { xattrs: [{ name: `user.${"n".repeat(251)}`, value: Buffer.from("x") }] })]),
      /1-255 bytes/,
    ],
    [
      "unsorted xattrs",
      () =>
        frame(1, [
          attributes("keep", {
            xattrs: [
              { name: "user.b", value: Buffer.from("x") },
              { name: "user.a", value: Buffer.from("x") },
            ],
          }),
        ]),
      /sorted/,
    ],
  ];
  for (const [name, make, reason] of hostile) {
    it(`rejects a frame with ${name} and changes nothing`, async () => {
      await writeFile(join(replicaRoot, "keep"), "untouched");
      const before = await describeTree(replicaRoot, { metadata: true });
      await assert.rejects(applier.applyFrames([make()]), reason);
      assert.deepEqual(await describeTree(replicaRoot, { metadata: true }), before);
      assert.equal(applier.appliedSeq, 0);
    });
  }

  it("without CAP_MKNOD and CAP_SYS_ADMIN, reports per path what it cannot keep and applies the rest", async function () {
    const setpriv = await run("setpriv", ["--version"]).catch(() => undefined);
    if (setpriv === undefined || process.getuid?.() !== 0) this.skip(); // needs root and util-linux's setpriv
    const child = fileURLToPath(new URL("../fixture/apply-without-capabilities.js", import.meta.url));
    const { stdout } = await run("setpriv", [
      "--bounding-set=-mknod,-sys_admin",
      "--",
      process.execPath,
      child,
      replicaRoot,
    ]);
    assert.deepEqual(JSON.parse(stdout), [
      "null: ENTRY_KIND_CHAR_DEVICE (mknod: EPERM, the master target needs CAP_MKNOD)",
      "f: extended attribute trusted.t (EPERM)",
    ]);
    const kept = await describeTree(replicaRoot, { metadata: true });
    assert.equal(kept.get("f"), `file 640 0 ${emptyDigest} owner 999:999 mtime 1600000000000000005 xattrs user.u=dQ==`);
    assert.match(kept.get("fifo") ?? "", /^special 4 0:0 600 /, "FIFOs need no capability");
    assert.equal(kept.has("null"), false);
  });

  it("never writes into a FIFO or device node the stream made (its content would go to the device)", async () => {
    const device = { ...makeOf("null"), kind: EntryKind.ENTRY_KIND_CHAR_DEVICE, rdevMajor: 1, rdevMinor: 3 };
    const fifo = { ...makeOf("fifo"), kind: EntryKind.ENTRY_KIND_FIFO };
    for (const [make, path] of [
      [device, "null"],
      [fifo, "fifo"],
    ] as const) {
      await applier.close();
      await rm(join(work, "applied"), { force: true });
      applier = await openApplier();
      await assert.rejects(
        applier.applyFrames([frame(1, [{ $case: "make", value: make }, write(path, 0, "to the device")])]),
        /is a special file in the replica; refusing to open it/,
      );
    }
  });

  it("syncs a batch in which a changed directory was replaced by a file (regression: ENOTDIR)", async () => {
    await applier.applyFrames([
      frame(1, [
        dir("d"),
        dir("d/sub"),
        file("d/sub/x"),
        write("d/sub/x", 0, "old"),
        { $case: "remove", value: { path: "d" } },
        file("d"),
        write("d", 0, "now a file"),
      ]),
    ]);
    assert.equal(applier.appliedSeq, 7);
    assert.equal(await readFile(join(replicaRoot, "d"), "utf8"), "now a file");
  });

  it("never writes through a symlink planted in the replica", async () => {
    const outside = join(work, "outside");
    await mkdir(outside);
    await symlink(outside, join(replicaRoot, "link"));
    await symlink(join(outside, "file"), join(replicaRoot, "filelink"));
    await assert.rejects(applier.applyFrames([frame(1, [file("link/evil")])]), /symlink/);
    await assert.rejects(applier.applyFrames([frame(1, [write("filelink", 0, "evil")])]), /symlink/);
    await assert.rejects(
      applier.applyFrames([frame(1, [{ $case: "truncate", value: { path: "filelink", size: 0 } }])]),
      /symlink/,
    );
    assert.deepEqual([...(await describeTree(outside)).keys()], []);
  });

  it("block replicas take writes, zero ranges and size changes only", async () => {
    const image = join(work, "disk.img");
    const block = new BlockReplica(image, noJournal);
    const blockApplier = new MachineApplier(
      machineId,
      block,
      noJournal,
      await DurableCounter.open(join(work, "block.applied")),
      new InlineFrameSealer(key),
    );
    await blockApplier.applyFrames([
      frame(1, [
        { $case: "truncate", value: { path: "", size: 1024 } },
        { $case: "write", value: { path: "", offset: 10, data: Buffer.from("abc") } },
      ]),
    ]);
    const content = await readFile(image);
    assert.equal(content.length, 1024);
    assert.equal(content.subarray(10, 13).toString(), "abc");
    await assert.rejects(blockApplier.applyFrames([frame(3, [file("f")])]), /block replicas take no paths/);
    await blockApplier.close();
  });
});

function tamper(sealed: Frame): Frame {
  const bytes = Buffer.from(sealed.sealed);
  bytes[20] = (bytes[20] ?? 0) ^ 0xff;
  return { ...sealed, sealed: bytes };
}
