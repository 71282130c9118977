import { strict as assert } from "node:assert";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { applyWorkload, makeSite, openJournal, removeSite, type JournalSite } from "../fixture/journal-harness.js";
import { interpretIntents, readTree, seededIntents } from "../fixture/journal-model.js";
import { ksrReplicator } from "../fixture/ksr-cli.js";

describe("journal: ksr replicator points|hydrate|rollback", function () {
  this.timeout(60_000);
  let site: JournalSite;
  const workload = interpretIntents(seededIntents(5, 150, 50_000), {
    startTimeMs: Date.UTC(2026, 0, 1),
    pointEveryMs: 60_000,
  });

  before(async () => {
    site = await makeSite("journal-cli");
    const journal = await openJournal(site);
    await applyWorkload(site, workload, journal);
    await journal.close();
  });
  after(() => removeSite(site));

  /** Runs a local-mode subcommand on the suite's journal and replica. */
  const onSite = (command: string, ...args: string[]) =>
    ksrReplicator([command, "--journal", site.journalDir, "--replica", site.replicaRoot, ...args]);

  it("lists points, hydrates a chosen one and rolls the replica back", async () => {
    const listed = await ksrReplicator(["points", "--journal", site.journalDir, "--json"]);
    assert.equal(listed.code, 0, listed.stderr);
    const { points, size } = JSON.parse(listed.stdout) as {
      points: { id: string; timeUnixMs: number }[];
      size: { segmentBytes: number };
    };
    assert.deepEqual(
      points.map((point) => point.id),
      [...workload.expected.keys()],
    );
    assert.ok(size.segmentBytes > 0);
    const text = await ksrReplicator(["points", "--journal", site.journalDir]);
    assert.match(text.stdout, new RegExp(`${points.length} points; journal \\d+ bytes`));

    const middle = points[Math.floor(points.length / 2)];
    assert.ok(middle !== undefined);
    const byTime = new Date(middle.timeUnixMs + 30_000).toISOString();
    const destination = join(site.base, "drill");
    const hydrated = await onSite("hydrate", "--point", byTime, "--dest", destination);
    assert.equal(hydrated.code, 0, hydrated.stderr);
    assert.deepEqual(await readTree(destination), workload.expected.get(middle.id));

    const unconfirmed = await onSite("rollback", "--point", middle.id);
    assert.equal(unconfirmed.code, 1);
    assert.match(unconfirmed.stderr, /discards \d+ newer points; add --yes/);
    assert.deepEqual(await readTree(site.replicaRoot), workload.finalState, "nothing changes without --yes");

    const rolled = await onSite("rollback", "--point", middle.id, "--yes");
    assert.equal(rolled.code, 0, rolled.stderr);
    assert.deepEqual(await readTree(site.replicaRoot), workload.expected.get(middle.id));

    // The workload's points are from 2026-01-01, so a 1-day window keeps only the newest.
    const pruned = await ksrReplicator(["prune", "--journal", site.journalDir, "--retention", "1d"]);
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.match(pruned.stdout, new RegExp(`removed \\d+ points; oldest kept ${middle.id} `));
  });

  it("explains bad input and a journal in use", async () => {
    const unknown = await onSite("hydrate", "--point", "nope", "--dest", join(site.base, "x"));
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /recovery point "nope" is not in the journal/);
    const missing = await ksrReplicator(["points", "--journal", join(site.base, "missing")]);
    assert.equal(missing.code, 0, "a journal that does not exist yet has no points");
    const other = join(site.base, "other-volume");
    await mkdir(other);
    const wrongReplica = await ksrReplicator([
      "rollback",
      "--journal",
      site.journalDir,
      "--replica",
      other,
      "--point",
      "latest",
      "--yes",
    ]);
    assert.equal(wrongReplica.code, 1);
    assert.match(
      wrongReplica.stderr,
      /this journal belongs to the replica at .*replica; .*other-volume is a different/,
    );
    const inside = await onSite("hydrate", "--point", "latest", "--dest", join(site.replicaRoot, "drill"));
    assert.equal(inside.code, 1);
    assert.match(inside.stderr, /overlaps .*replica, which hydration only reads/);
    const badRetention = await ksrReplicator(["prune", "--journal", site.journalDir, "--retention", "forever"]);
    assert.equal(badRetention.code, 1);
    assert.match(badRetention.stderr, /expected a positive duration like 30s/);
    const journal = await openJournal(site);
    try {
      const busy = await onSite("rollback", "--point", "latest", "--yes");
      assert.equal(busy.code, 1);
      assert.match(busy.stderr, /in use by process \d+/);
    } finally {
      await journal.close();
    }
  });
});
