import { strict as assert } from "node:assert";
import { join } from "node:path";
import type { JournalOp } from "../../src/replicator/journal/change.js";
import { hydrate } from "../../src/replicator/journal/materialise.js";
import {
  applyWorkload,
  assertPointsHydrate,
  makeSite,
  openJournal,
  removeSite,
  type JournalSite,
} from "../fixture/journal-harness.js";
import { interpretIntents, readTree, seededIntents } from "../fixture/journal-model.js";
import { TestReplica } from "../fixture/journal-replica.js";
import { make, marker, write } from "../fixture/journal-ops.js";

function populated(files: number, bytes: number): JournalOp[] {
  const ops: JournalOp[] = [make("data", 2, 0o755)];
  for (let index = 0; index < files; index++) {
    const path = `data/f${index}`;
    ops.push(make(path, 1, 0o644), write(path, 0, Buffer.alloc(bytes, index + 1)));
  }
  ops.push(marker("base", 1));
  return ops;
}

describe("journal: hydration while the replica keeps changing", () => {
  let site: JournalSite;
  beforeEach(async () => {
    site = await makeSite("journal-live");
  });
  afterEach(() => removeSite(site));

  it("hydrates a point exactly while changes of every kind are applied", async function () {
    this.timeout(60_000);
    for (const seed of [11, 12, 13]) {
      const workload = interpretIntents(seededIntents(seed, 200, 150_000), { initial: populated(40, 256 * 1024) });
      const baseEnd = workload.changes.findIndex((change) => change.op?.$case === "marker") + 1;
      const journal = await openJournal(site);
      try {
        await applyWorkload(site, { ...workload, changes: workload.changes.slice(0, baseEnd) }, journal);
        const replica = new TestReplica(site.replicaRoot, journal);
        let appliedDuringCopy = 0;
        const hydration = { running: true };
        const applying = (async () => {
          for (const change of workload.changes.slice(baseEnd)) {
            await replica.apply(change);
            await replica.sync();
            if (hydration.running) appliedDuringCopy++;
          }
        })();
        const destination = join(site.base, `live-${seed}`);
        await hydrate(journal, site.replicaRoot, journal.point("base"), destination);
        hydration.running = false;
        await applying;
        await replica.close();
        assert.ok(appliedDuringCopy > 0, "changes must have been applied while hydrating");
        assert.deepEqual(await readTree(destination), workload.expected.get("base"));
        assert.deepEqual(await readTree(site.replicaRoot), workload.finalState);
        await assertPointsHydrate(site, journal, workload.expected);
      } finally {
        await journal.close();
      }
      await removeSite(site);
      site = await makeSite("journal-live");
    }
  });

  it("holds namespace changes while a hydration copies, and lets block writes through", async () => {
    const workload = interpretIntents([], { initial: populated(2, 1000) });
    const journal = await openJournal(site);
    try {
      await applyWorkload(site, workload, journal);
      const release = await journal.holdNamespace();
      const writing = journal.beforeChange({ seq: 100, op: write("data/f0", 0, "x") }, site.replicaRoot);
      assert.equal(await Promise.race([writing.then(() => "done"), delay(200)]), "done");
      let renamed = false;
      const rename = journal
        .beforeChange({ seq: 101, op: { $case: "rename", value: { from: "data/f0", to: "data/g" } } }, site.replicaRoot)
        .then(() => (renamed = true));
      await delay(200);
      assert.equal(renamed, false, "a rename must wait for the copy");
      release();
      await rename;
      assert.equal(renamed, true);
    } finally {
      await journal.close();
    }
  });
});

function delay(ms: number): Promise<"timeout"> {
  return new Promise((resolve) =>
    setTimeout(() => {
      resolve("timeout");
    }, ms),
  );
}
