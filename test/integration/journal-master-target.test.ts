import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { ChangeBatch, Codec, type Change, type Frame } from "../../src/gen/ksr/replication/v1/replication.js";
import { DurableCounter } from "../../src/replicator/durable-counter.js";
import { sealFrame } from "../../src/replicator/frame-codec.js";
import { InlineFrameSealer } from "../../src/replicator/frame-sealer.js";
import { batchFormatVersion, MachineApplier } from "../../src/replicator/master-target/machine-applier.js";
import { TreeReplica } from "../../src/replicator/master-target/replica.js";
import {
  assertPointsHydrate,
  makeSite,
  openJournal,
  removeSite,
  type JournalSite,
} from "../fixture/journal-harness.js";
import { interpretIntents, readTree, seededIntents } from "../fixture/journal-model.js";

const machineId = "m1";

/** Cuts the changes into sealed frames of 1-16 changes, as a process server forwards them. */
function frames(changes: readonly Change[], key: Buffer, seed: number): Frame[] {
  const result: Frame[] = [];
  let size = (seed % 16) + 1;
  for (let start = 0; start < changes.length; start += size) {
    size = ((size * 7 + seed) % 16) + 1;
    const batch = changes.slice(start, start + size);
    const encoded = Buffer.from(
      ChangeBatch.encode({ formatVersion: batchFormatVersion, machineId, changes: batch }).finish(),
    );
    const range = { machineId, firstSeq: batch[0]?.seq ?? 0, lastSeq: batch.at(-1)?.seq ?? 0 };
    result.push(sealFrame(key, Codec.CODEC_ZSTD, range, encoded));
  }
  return result;
}

describe("journal: behind the master target's MachineApplier", function () {
  this.timeout(120_000);
  let site: JournalSite;
  beforeEach(async () => {
    site = await makeSite("journal-mt");
  });
  afterEach(() => removeSite(site));

  it("keeps every point while the applier applies sealed frames, including replayed ones", async () => {
    for (const seed of [21, 22, 23]) {
      const workload = interpretIntents(seededIntents(seed, 150, 80_000));
      const key = randomBytes(32);
      const all = frames(workload.changes as Change[], key, seed);
      const journal = await openJournal(site);
      const applier = new MachineApplier(
        machineId,
        new TreeReplica(site.replicaRoot, journal),
        journal,
        await DurableCounter.open(join(site.base, "applied")),
        new InlineFrameSealer(key),
      );
      try {
        for (const [index, frame] of all.entries()) {
          await applier.applyFrames([frame]);
          // A process server that lost an ack sends frames again; they must change nothing.
          if (index % 4 === 0) await applier.applyFrames(all.slice(Math.max(0, index - 2), index + 1));
        }
        assert.equal(applier.appliedSeq, workload.changes.at(-1)?.seq);
        assert.deepEqual(await readTree(site.replicaRoot), workload.finalState);
        assert.ok(journal.points().length > 3);
        await assertPointsHydrate(site, journal, workload.expected);
      } finally {
        await applier.close();
        await journal.close();
      }
      await removeSite(site);
      site = await makeSite("journal-mt");
    }
  });
});
