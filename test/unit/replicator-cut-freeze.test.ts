// A cut with write ranges reads its content into memory (CutFreeze) once while writes run and
// once under the hold, and ships it after the writes were let go. Property: whatever the writes
// and truncates before, between and after those reads, the replica after the frozen content is
// the file as it was at the second read (the cut), never a later write; and the writes after
// the cut, sent by the next round, bring it to the file as it is. Real files, a real TreeSource
// and TreeReplica; the range records are what the fanotify helper reports (page-aligned).
import { strict as assert } from "node:assert";
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import type { Change } from "../../src/gen/ksr/replication/v1/replication.js";
import { loadBlockHasher } from "../../src/replicator/block-hash.js";
import { CutFreeze, mergeDirty } from "../../src/replicator/agent/cut-freeze.js";
import { Manifest } from "../../src/replicator/agent/manifest.js";
import { TreeSource } from "../../src/replicator/agent/tree-source.js";
import { DirtyRanges } from "../../src/replicator/agent/write-ranges.js";
import { noJournal } from "../../src/replicator/master-target/change-journal.js";
import { TreeReplica } from "../../src/replicator/master-target/replica.js";
import { propertyRuns } from "../fixture/property-runs.js";

type Operation = NonNullable<Change["op"]>;
type FileOp = { kind: "write"; offset: number; length: number; fill: number } | { kind: "truncate"; size: number };

const page = 4096;
const maxSize = 10 * 64 * 1024 + 5000;

const fileOp: fc.Arbitrary<FileOp> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("write" as const),
      offset: fc.nat(maxSize),
      length: fc.integer({ min: 1, max: 150_000 }),
      fill: fc.integer({ min: 1, max: 255 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("truncate" as const), size: fc.nat(maxSize) }) },
);

describe("cut freeze: the content a cut read under its hold, shipped after it", () => {
  let work: string;
  before(() => loadBlockHasher());
  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), "ksr-cut-freeze-"));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("ships the file as it was at the cut, whatever was written before, between and after the reads", async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.nat(maxSize),
        fc.array(fileOp, { maxLength: 6 }),
        fc.array(fileOp, { maxLength: 6 }),
        fc.array(fileOp, { maxLength: 6 }),
        fc.constantFrom(0, 64 * 1024, 1 << 30),
        async (initialSize, beforeFirst, beforeCut, afterCut, limitBytes) => {
          const dir = join(work, String(++run));
          const source = join(dir, "source");
          const replicaRoot = join(dir, "replica");
          await mkdir(source, { recursive: true });
          await mkdir(replicaRoot);
          const file = join(source, "f");
          await writeFile(file, Buffer.alloc(initialSize, 7));
          const replica = new TreeReplica(replicaRoot, noJournal);
          const manifest = new Manifest("m");
          let seq = 0;
          const sender = {
            emit: async (op: Operation) => {
              const change: Change = { seq: ++seq, op };
              replica.validate(change);
              await replica.apply(change);
            },
          };
          const tree = () => new TreeSource(source, manifest, sender);
          await tree().fullScan();
          const ino = manifest.get("f")?.ino ?? "";
          const handle = await open(file, "r+");
          // What the helper would have reported for each write and truncate.
          const apply = async (ops: readonly FileOp[], records: DirtyRanges) => {
            for (const op of ops) {
              if (op.kind === "write") {
                await handle.write(Buffer.alloc(op.length, op.fill), 0, op.length, op.offset);
                const first = Math.floor(op.offset / page) * page;
                records.add(ino, first, Math.ceil((op.offset + op.length) / page) * page - first);
              } else {
                await handle.truncate(op.size);
                records.truncated(ino, Math.floor(op.size / page) * page);
              }
            }
          };
          // As WriteRangeCapture.round does with a freeze: read, or past the limit ship what is frozen and the rest live.
          const freeze = new CutFreeze(source, limitBytes);
          const round = async (records: DirtyRanges) => {
            const dirty = records.take();
            if (await freeze.add(tree(), dirty)) return;
            await freeze.send(tree());
            for (const [changed, pending] of dirty) await tree().syncRanges(changed, pending);
          };
          try {
            const records = new DirtyRanges();
            await apply(beforeFirst, records);
            await round(records); // before the hold: writes still run
            await apply(beforeCut, records);
            await round(records); // under the hold: the cut
            const atCut = await readFile(file);
            await apply(afterCut, records); // let go: the cut's content is still to be shipped
            await freeze.send(tree());
            await replica.sync();
            assert.deepEqual(await readFile(join(replicaRoot, "f")), atCut, "the replica is the file at the cut");
            for (const [changed, pending] of records.take()) await tree().syncRanges(changed, pending);
            await replica.sync();
            assert.deepEqual(await readFile(join(replicaRoot, "f")), await readFile(file), "the next round catches up");
          } finally {
            await handle.close();
          }
        },
      ),
      propertyRuns(60),
    );
  });

  it("stays within its limit: past it, nothing is read and the caller ships live", async () => {
    const source = join(work, "source");
    await mkdir(source);
    await writeFile(join(source, "f"), Buffer.alloc(300 * 1024, 1));
    const manifest = new Manifest("m");
    const sent: Operation[] = [];
    const tree = new TreeSource(source, manifest, { emit: (op) => Promise.resolve(void sent.push(op)) });
    await tree.fullScan();
    const ino = manifest.get("f")?.ino ?? "";
    const freeze = new CutFreeze(source, 128 * 1024);
    assert.equal(await freeze.add(tree, new Map([[ino, { blocks: new Set([0]), whole: false }]])), true);
    assert.equal(freeze.bytes, 64 * 1024);
    assert.equal(await freeze.add(tree, new Map([[ino, { blocks: new Set([1, 2]), whole: false }]])), false);
    assert.equal(freeze.bytes, 64 * 1024, "nothing more was read");
    assert.equal(await freeze.add(tree, new Map([[ino, { blocks: new Set([0, 1]), whole: false }]])), true);
    assert.equal(freeze.bytes, 128 * 1024, "block 0 is read again, not counted twice");
  });

  const merges: {
    name: string;
    earlier?: Parameters<typeof mergeDirty>[0];
    later: Parameters<typeof mergeDirty>[1];
    merged: ReturnType<typeof mergeDirty>;
  }[] = [
    {
      name: "nothing before",
      later: { blocks: new Set([1]), whole: false },
      merged: { blocks: new Set([1]), whole: false },
    },
    {
      name: "blocks add up",
      earlier: { blocks: new Set([1, 2]), whole: false },
      later: { blocks: new Set([2, 3]), whole: false },
      merged: { blocks: new Set([1, 2, 3]), whole: false },
    },
    {
      name: "whole stays whole",
      earlier: { blocks: new Set(), whole: true },
      later: { blocks: new Set([3]), whole: false },
      merged: { blocks: new Set([3]), whole: true },
    },
    {
      name: "the lower truncate counts",
      earlier: { blocks: new Set(), whole: false, truncatedFrom: 8192 },
      later: { blocks: new Set(), whole: false, truncatedFrom: 4096 },
      merged: { blocks: new Set(), whole: false, truncatedFrom: 4096 },
    },
    {
      name: "a truncate before is kept",
      earlier: { blocks: new Set(), whole: false, truncatedFrom: 8192 },
      later: { blocks: new Set([0]), whole: false },
      merged: { blocks: new Set([0]), whole: false, truncatedFrom: 8192 },
    },
  ];
  for (const { name, earlier, later, merged } of merges)
    it(`merges pending changes: ${name}`, () => {
      assert.deepEqual(mergeDirty(earlier, later), merged);
    });
});
