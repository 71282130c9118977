import { strict as assert } from "node:assert";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import {
  applyWorkload,
  assertPointsHydrate,
  makeSite,
  openJournal,
  removeSite,
  type JournalSite,
} from "../fixture/journal-harness.js";
import { interpretIntents, seededIntents } from "../fixture/journal-model.js";

describe("journal: retention", () => {
  let site: JournalSite;
  // One point per simulated minute.
  const workload = interpretIntents(seededIntents(7, 400, 100_000), { startTimeMs: 0, pointEveryMs: 60_000 });
  beforeEach(async () => {
    site = await makeSite("journal-retention");
  });
  afterEach(() => removeSite(site));

  it("prunes points and their journal together and keeps the oldest retained point whole", async () => {
    const journal = await openJournal(site, { segmentBytes: 64 * 1024 });
    try {
      await applyWorkload(site, workload, journal);
      const all = journal.points();
      assert.ok(all.length >= 10, `the workload has ${all.length} points`);
      const sizeBefore = await journal.size();
      const last = all.at(-1)?.timeUnixMs ?? 0;
      const windowMs = 5 * 60_000;
      const { removedPoints, floor } = await journal.prune(windowMs, last);
      const kept = journal.points();
      assert.deepEqual(
        kept.map((point) => point.id),
        all.filter((point) => point.timeUnixMs >= last - windowMs).map((point) => point.id),
      );
      assert.equal(floor?.id, kept[0]?.id);
      assert.equal(removedPoints.length + kept.length, all.length);
      const sizeAfter = await journal.size();
      assert.ok(
        sizeAfter.segmentBytes + sizeAfter.objectBytes < sizeBefore.segmentBytes + sizeBefore.objectBytes,
        `journal should shrink: ${JSON.stringify(sizeBefore)} → ${JSON.stringify(sizeAfter)}`,
      );
      const objects = await readdir(join(site.journalDir, "objects"));
      assert.ok(
        objects.every((name) => Number(name.split("-")[0]) > (floor?.seq ?? 0)),
        "no object older than the floor",
      );
      assert.equal(await assertPointsHydrate(site, journal, workload.expected), kept.length);
    } finally {
      await journal.close();
    }
    const reopened = await openJournal(site);
    try {
      assert.equal(reopened.points()[0]?.id, journal.points()[0]?.id, "the floor survives a restart");
      assert.equal(await assertPointsHydrate(site, reopened, workload.expected), reopened.points().length);
    } finally {
      await reopened.close();
    }
  });

  it("prunes continuously when opened with a retention window", async () => {
    const windowMs = 4 * 60_000;
    const journal = await openJournal(site, { segmentBytes: 64 * 1024, retentionMs: windowMs });
    try {
      await applyWorkload(site, workload, journal);
      const times = journal.points().map((point) => point.timeUnixMs);
      const newest = times.at(-1) ?? 0;
      assert.ok(times.length > 1 && times.every((time) => time >= newest - windowMs), `kept ${times.join(",")}`);
      assert.ok((await journal.size()).segments < 10, "old segments are deleted as points expire");
      assert.equal(await assertPointsHydrate(site, journal, workload.expected), times.length);
    } finally {
      await journal.close();
    }
    await assert.rejects(openJournal(site, { retentionMs: 0 }), /retentionMs must be a positive/);
  });

  it("always keeps the newest point and never prunes a point a hydration pinned", async () => {
    const journal = await openJournal(site);
    try {
      await applyWorkload(site, workload, journal);
      const all = journal.points();
      const pinned = all[2];
      assert.ok(pinned !== undefined);
      const unpin = journal.pin(pinned);
      await journal.prune(0, Number.MAX_SAFE_INTEGER);
      assert.equal(journal.points()[0]?.id, pinned.id);
      unpin();
      await journal.prune(0, Number.MAX_SAFE_INTEGER);
      assert.deepEqual(
        journal.points().map((point) => point.id),
        [all.at(-1)?.id],
      );
      assert.equal(await assertPointsHydrate(site, journal, workload.expected), 1);
      assert.throws(() => journal.point(pinned.id), /not in the journal/);
    } finally {
      await journal.close();
    }
  });
  it("releases every point and the whole journal of an ended epoch, refusing while a point is pinned", async () => {
    const journal = await openJournal(site, { segmentBytes: 64 * 1024 });
    try {
      await applyWorkload(site, workload, journal);
      const all = journal.points();
      assert.ok((await journal.size()).segmentBytes > 0);
      const unpin = journal.pin(all[1] ?? assert.fail("a second point"));
      await assert.rejects(journal.releaseAll(), /being read/);
      assert.equal(journal.points().length, all.length, "nothing is released while a point is read");
      unpin();
      const released = await journal.releaseAll();
      assert.deepEqual(
        released.map((point) => point.id),
        all.map((point) => point.id),
      );
      assert.deepEqual(journal.points(), []);
      assert.deepEqual(await journal.size(), { segmentBytes: 0, objectBytes: 0, segments: 0, points: 0 });
      assert.deepEqual(await readdir(join(site.journalDir, "objects")), []);
      assert.deepEqual(await journal.releaseAll(), [], "a repeat releases nothing more");
    } finally {
      await journal.close();
    }
    const reopened = await openJournal(site);
    try {
      assert.deepEqual(reopened.points(), [], "released points stay gone after a restart");
    } finally {
      await reopened.close();
    }
  });
});
