import { strict as assert } from "node:assert";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import type { JournalChange, JournalOp } from "../../src/replicator/journal/change.js";
import { hydrate, rollback } from "../../src/replicator/journal/materialise.js";
import {
  applyWorkload,
  assertPointsHydrate,
  makeSite,
  openJournal,
  removeSite,
  type JournalSite,
} from "../fixture/journal-harness.js";
import { interpretIntents, readTree, TreeModel, type Intent, type TreeState } from "../fixture/journal-model.js";
import { TestReplica } from "../fixture/journal-replica.js";
import { make, marker, write } from "../fixture/journal-ops.js";

/** Builds a workload from explicit ops, snapshotting the model at each marker. */
function scripted(ops: JournalOp[]): {
  changes: JournalChange[];
  expected: Map<string, TreeState>;
  finalState: TreeState;
} {
  const model = new TreeModel();
  const expected = new Map<string, TreeState>();
  const changes = ops.map((op, index) => {
    if (op.$case === "marker") expected.set(op.value.id, model.state());
    model.apply(op);
    return { seq: index + 1, op };
  });
  return { changes, expected, finalState: model.state() };
}

describe("journal: recovery points of a known history", () => {
  let site: JournalSite;
  beforeEach(async () => {
    site = await makeSite("journal-points");
  });
  afterEach(() => removeSite(site));

  const big = Buffer.alloc(300_000, 7);
  const history = scripted([
    make("docs", 2, 0o755),
    make("docs/a.txt", 1, 0o644),
    write("docs/a.txt", 0, "version 1"),
    make("db", 1, 0o600),
    write("db", 0, big),
    marker("v1", 1000),
    write("docs/a.txt", 0, "version 2, longer"),
    write("db", 70_000, "overwrite in the second block"),
    write("db", 70_000, "overwritten again, same interval"),
    { $case: "symlink", value: { path: "docs/link", target: "a.txt" } },
    { $case: "setMode", value: { path: "docs/a.txt", mode: 0o600 } },
    marker("v2", 2000, 2),
    { $case: "truncate", value: { path: "db", size: 100 } },
    { $case: "hardLink", value: { path: "docs/hard", existing: "docs/a.txt" } },
    { $case: "rename", value: { from: "docs/a.txt", to: "docs/b.txt" } },
    marker("v3", 3000),
    { $case: "rename", value: { from: "docs/b.txt", to: "docs/hard" } },
    { $case: "remove", value: { path: "docs" } },
    write("db", 1_000_000, "sparse tail"),
    { $case: "zero", value: { path: "db", offset: 0, length: 50 } },
    marker("v4", 4000, 3),
    make("docs", 2, 0o700),
    { $case: "symlink", value: { path: "db", target: "/elsewhere" } },
    marker("v5", 5000),
    make("late", 1, 0o644),
    marker("resync-30", 6000, 0), // a stream event of the agent, not a point
    marker("future-kind", 7000, 9), // a consistency this journal does not know
  ]);

  it("hydrates every point to exactly the tree it had, metadata included", async () => {
    const journal = await openJournal(site);
    try {
      await applyWorkload(site, history, journal);
      assert.deepEqual(await readTree(site.replicaRoot), history.finalState);
      assert.deepEqual(
        journal.points().map((point) => [point.id, point.consistency]),
        [
          ["v1", "crash"],
          ["v2", "app"],
          ["v3", "crash"],
          ["v4", "best-effort"],
          ["v5", "crash"],
          ["future-kind", "best-effort"],
        ],
      );
      assert.equal(await assertPointsHydrate(site, journal, history.expected), 6);
      assert.deepEqual(await readTree(site.replicaRoot), history.finalState, "hydration changed the replica");
    } finally {
      await journal.close();
    }
  });

  it("keeps the history when reopened and rolls the replica back in place", async () => {
    const first = await openJournal(site);
    await applyWorkload(site, history, first);
    await first.close();
    const journal = await openJournal(site);
    try {
      assert.equal(journal.points().length, 6);
      assert.equal(await rollback(journal, site.replicaRoot, journal.point("v2")), true);
      assert.deepEqual(await readTree(site.replicaRoot), history.expected.get("v2"));
      assert.deepEqual(
        journal.points().map((point) => point.id),
        ["v1", "v2"],
      );
      assert.equal(await assertPointsHydrate(site, journal, history.expected), 2);
    } finally {
      await journal.close();
    }
  });

  it("resumes an interrupted rollback and refuses changes until it finished", async () => {
    const journal = await openJournal(site);
    try {
      await applyWorkload(site, history, journal);
      assert.equal(await rollback(journal, site.replicaRoot, journal.point("v1"), { stopAfterGroups: 4 }), false);
      const replica = new TestReplica(site.replicaRoot, journal);
      await assert.rejects(replica.apply({ seq: 999, op: make("x", 1, 0o644) }), /being rolled back to point "v1"/);
      await assert.rejects(
        rollback(journal, site.replicaRoot, journal.point("v2")),
        /interrupted rollback to point "v1"/,
      );
      await assert.rejects(
        hydrate(journal, site.replicaRoot, journal.point("v1"), join(site.base, "during-rollback")),
        /being rolled back to point "v1"; hydrate after it/,
      );
      assert.equal(await rollback(journal, site.replicaRoot, journal.point("v1")), true);
      assert.deepEqual(await readTree(site.replicaRoot), history.expected.get("v1"));
    } finally {
      await journal.close();
    }
  });

  it("resumes an interrupted hydration", async () => {
    const journal = await openJournal(site);
    try {
      await applyWorkload(site, history, journal);
      const destination = join(site.base, "drill");
      const point = journal.point("v2");
      assert.equal(await hydrate(journal, site.replicaRoot, point, destination, { stopAfterGroups: 3 }), false);
      await assert.rejects(
        hydrate(journal, site.replicaRoot, journal.point("v3"), destination),
        /interrupted hydration of point "v2"/,
      );
      assert.equal(await hydrate(journal, site.replicaRoot, point, destination), true);
      assert.deepEqual(await readTree(destination), history.expected.get("v2"));
    } finally {
      await journal.close();
    }
  });

  it("moves removed and renamed-over entries into the journal instead of copying them", async () => {
    const journal = await openJournal(site);
    try {
      await applyWorkload(site, history, journal);
      const size = await journal.size();
      assert.ok(size.objectBytes > 0, "removed entries should be kept as moved objects");
      // Block 1 of db once in v1..v2 (the second overwrite is free), all 300000 bytes of db when it is
      // truncated in v2..v3, a few small pieces; removed entries cost no segment bytes at all.
      const contentBytes = 65_536 + 300_000;
      assert.ok(
        size.segmentBytes > contentBytes && size.segmentBytes < contentBytes + 8_000,
        `segments hold ${size.segmentBytes} bytes, expected just over ${contentBytes}`,
      );
    } finally {
      await journal.close();
    }
  });
});

describe("journal: a path that names another file later in the same interval", () => {
  let site: JournalSite;
  beforeEach(async () => {
    site = await makeSite("journal-identity");
  });
  afterEach(() => removeSite(site));

  const block = (fill: number): Buffer => Buffer.alloc(70_000, fill);
  const setup = [
    make("a", 1, 0o644),
    write("a", 0, block(1)),
    make("c", 1, 0o644),
    write("c", 0, block(3)),
    make("y", 1, 0o644),
    write("y", 0, block(5)),
    marker("p1", 1000),
    write("a", 0, block(2)), // block 0 of "a" is kept for this interval
  ];
  const cases: [string, JournalOp[]][] = [
    [
      "renamed in",
      [
        { $case: "rename", value: { from: "a", to: "b" } },
        { $case: "rename", value: { from: "c", to: "a" } },
      ],
    ],
    ["hard-linked in", [{ $case: "hardLink", value: { path: "a", existing: "y" } }]],
  ];
  for (const [name, identityChange] of cases) {
    it(`keeps the old content of a file ${name} after its path's blocks were kept`, async () => {
      const history = scripted([...setup, ...identityChange, write("a", 0, block(9)), marker("p2", 2000)]);
      const journal = await openJournal(site);
      try {
        await applyWorkload(site, history, journal);
        assert.equal(await assertPointsHydrate(site, journal, history.expected), 2);
      } finally {
        await journal.close();
      }
    });
  }
});

describe("journal: random histories (property)", () => {
  const intent = fc.record({
    kind: fc.nat(30),
    pick: fc.nat(1000),
    other: fc.nat(1000),
    offset: fc.nat(200_000),
    length: fc.nat(150_000),
    fill: fc.nat(255),
  });

  const runs = Number(process.env.KSR_JOURNAL_PROPERTY_RUNS ?? 40);

  it("every point of any history hydrates exactly, and rollback reaches any point", async function () {
    this.timeout(30_000 + runs * 2_000);
    await fc.assert(
      fc.asyncProperty(
        fc.array(intent, { minLength: 10, maxLength: 60 }),
        fc.nat(),
        async (intents: Intent[], rollbackPick) => {
          const workload = interpretIntents(intents);
          const site = await makeSite("journal-prop");
          const journal = await openJournal(site);
          try {
            await applyWorkload(site, workload, journal);
            assert.deepEqual(await readTree(site.replicaRoot), workload.finalState);
            await assertPointsHydrate(site, journal, workload.expected);
            const points = journal.points();
            const target = points[rollbackPick % Math.max(1, points.length)];
            if (target !== undefined) {
              assert.equal(await rollback(journal, site.replicaRoot, target), true);
              assert.deepEqual(await readTree(site.replicaRoot), workload.expected.get(target.id));
            }
          } finally {
            await journal.close();
            await removeSite(site);
          }
        },
      ),
      { numRuns: runs },
    );
  });
});

describe("journal: block replicas", () => {
  let site: JournalSite;
  beforeEach(async () => {
    site = await makeSite("journal-block");
  });
  afterEach(() => removeSite(site));

  it("hydrates and rolls back an image", async () => {
    const image = join(site.base, "disk.img");
    const journal = await openJournal(site);
    try {
      const replica = new TestReplica(image, journal, true);
      const versions: Buffer[] = [];
      let seq = 1;
      let current = Buffer.alloc(0);
      for (let round = 0; round < 6; round++) {
        versions.push(Buffer.from(current));
        await replica.apply({ seq: seq++, op: marker(`b${round}`, 1000 + round) });
        for (let block = 0; block < 5; block++) {
          const offset = ((round * 7 + block * 13) % 20) * 65536 + round;
          const data = Buffer.alloc(40_000, round * 10 + block);
          await replica.apply({ seq: seq++, op: { $case: "write", value: { path: "", offset, data } } });
          const end = Math.max(current.length, offset + data.length);
          current = Buffer.concat([current, Buffer.alloc(end - current.length)]);
          data.copy(current, offset);
        }
        if (round === 3) {
          await replica.apply({ seq: seq++, op: { $case: "truncate", value: { path: "", size: 100_000 } } });
          current = Buffer.from(current.subarray(0, 100_000));
        }
      }
      await replica.close();
      assert.deepEqual(await readFile(image), current);
      for (const [round, version] of versions.entries()) {
        const destination = join(site.base, `b${round}.img`);
        assert.equal(await hydrate(journal, image, journal.point(`b${round}`), destination), true);
        assert.ok((await readFile(destination)).equals(version), `image point b${round} differs`);
      }
      assert.equal(await rollback(journal, image, journal.point("b2")), true);
      assert.ok((await readFile(image)).equals(versions[2] ?? Buffer.alloc(0)));
    } finally {
      await journal.close();
    }
  });
});
