// The master target journals each run of content-only changes (writes, zero ranges, truncates)
// with one fdatasync before the run touches the replica (UndoJournal.prepare). Every point must
// still hydrate to the tree the source had at it: for random content-heavy workloads cut into
// frames of any size and replayed, and when the process stops after a run was journaled and
// before it was applied.
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import fc from "fast-check";
import { ChangeBatch, Codec, type Change, type Frame } from "../../src/gen/ksr/replication/v1/replication.js";
import { DurableCounter } from "../../src/replicator/durable-counter.js";
import { sealFrame } from "../../src/replicator/frame-codec.js";
import { InlineFrameSealer } from "../../src/replicator/frame-sealer.js";
import { changesContentOnly } from "../../src/replicator/journal/change.js";
import type { UndoJournal } from "../../src/replicator/journal/undo-journal.js";
import { batchFormatVersion, MachineApplier } from "../../src/replicator/master-target/machine-applier.js";
import { TreeReplica } from "../../src/replicator/master-target/replica.js";
import {
  assertPointsHydrate,
  makeSite,
  openJournal,
  removeSite,
  type JournalSite,
} from "../fixture/journal-harness.js";
import { interpretIntents, readTree, type Intent } from "../fixture/journal-model.js";

const machineId = "m1";
const key = randomBytes(32);

/** Mostly writes, truncates and zero ranges (kinds 0-3), some makes (4), hard links (9) and points (10). */
const intent: fc.Arbitrary<Intent> = fc.record({
  kind: fc.constantFrom(0, 0, 1, 1, 2, 3, 3, 0, 1, 4, 9, 10, 10),
  pick: fc.nat(999),
  other: fc.nat(999),
  offset: fc.nat(300_000),
  length: fc.nat(200_000),
  fill: fc.nat(255),
});

function seal(changes: readonly Change[]): Frame {
  const encoded = Buffer.from(
    ChangeBatch.encode({ formatVersion: batchFormatVersion, machineId, changes: [...changes] }).finish(),
  );
  const range = { machineId, firstSeq: changes[0]?.seq ?? 0, lastSeq: changes.at(-1)?.seq ?? 0 };
  return sealFrame(key, Codec.CODEC_LZ4, range, encoded);
}

function cut(changes: readonly Change[], sizes: readonly number[]): Change[][] {
  const frames: Change[][] = [];
  for (let start = 0, index = 0; start < changes.length; index++) {
    const size = sizes[index % sizes.length] ?? 1;
    frames.push(changes.slice(start, start + size));
    start += size;
  }
  return frames;
}

async function openApplier(site: JournalSite, journal: UndoJournal): Promise<MachineApplier> {
  return new MachineApplier(
    machineId,
    new TreeReplica(site.replicaRoot, journal),
    journal,
    await DurableCounter.open(join(site.base, "applied")),
    new InlineFrameSealer(key),
  );
}

describe("journal: runs of content changes journaled at once", function () {
  this.timeout(300_000);

  it("property: every point hydrates exactly, whatever the frame sizes, with replays", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(intent, { minLength: 20, maxLength: 80 }),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 6 }),
        async (intents, sizes) => {
          const workload = interpretIntents(intents);
          const site = await makeSite("journal-runs");
          const journal = await openJournal(site);
          const applier = await openApplier(site, journal);
          try {
            const frames = cut(workload.changes as Change[], sizes).map(seal);
            for (const [index, frame] of frames.entries()) {
              await applier.applyFrames([frame]);
              if (index % 3 === 2) await applier.applyFrames(frames.slice(index - 1, index + 1)); // lost acks
            }
            assert.deepEqual(await readTree(site.replicaRoot), workload.finalState);
            await assertPointsHydrate(site, journal, workload.expected);
          } finally {
            await applier.close();
            await journal.close();
            await removeSite(site);
          }
        },
      ),
      { numRuns: 12 },
    );
  });

  it("a run journaled but never applied (the process stopped) is applied after a restart, points intact", async () => {
    const site = await makeSite("journal-runs");
    try {
      const intents: Intent[] = [
        { kind: 4, pick: 0, other: 0, offset: 0, length: 0, fill: 1 }, // make a file
        { kind: 0, pick: 0, other: 0, offset: 0, length: 200_000, fill: 7 },
        { kind: 10, pick: 0, other: 0, offset: 0, length: 0, fill: 0 }, // point
        ...Array.from({ length: 12 }, (_, index) => ({
          kind: index % 4,
          pick: 0,
          other: 0,
          offset: (index * 37_000) % 250_000,
          length: 20_000 + index * 3000,
          fill: 20 + index,
        })),
        { kind: 10, pick: 0, other: 0, offset: 0, length: 0, fill: 1 },
      ];
      const workload = interpretIntents(intents);
      const changes = workload.changes as Change[];
      const run = changes.filter((change, index) => index > 2 && changesContentOnly(change.op));
      assert.ok(run.length >= 10, "the workload has a long run of content changes after its first point");

      let journal = await openJournal(site);
      let applier = await openApplier(site, journal);
      await applier.applyFrames([seal(changes.slice(0, 3))]);
      await journal.prepare(run, site.replicaRoot); // journaled, then the process stops before applying
      await applier.close();
      await journal.close();

      journal = await openJournal(site);
      applier = await openApplier(site, journal);
      try {
        await applier.applyFrames([seal(changes.slice(3))]);
        assert.deepEqual(await readTree(site.replicaRoot), workload.finalState);
        assert.equal(await assertPointsHydrate(site, journal, workload.expected), 2);
      } finally {
        await applier.close();
        await journal.close();
      }
    } finally {
      await removeSite(site);
    }
  });
});
