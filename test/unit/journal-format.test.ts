import { strict as assert } from "node:assert";
import { appendFile, open, readdir, readFile, rename, rm, stat, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { JournalCorruptError } from "../../src/replicator/journal/errors.js";
import { decodeRecord, encodeRecord, headerBytes, parseHeader } from "../../src/replicator/journal/record.js";
import {
  applyWorkload,
  assertPointsHydrate,
  makeSite,
  openJournal,
  removeSite,
  type JournalSite,
} from "../fixture/journal-harness.js";
import type { JournalOp } from "../../src/replicator/journal/change.js";
import { interpretIntents, readTree, seededIntents } from "../fixture/journal-model.js";
import { make, marker, write } from "../fixture/journal-ops.js";

async function segmentFiles(site: JournalSite): Promise<string[]> {
  const directory = join(site.journalDir, "segments");
  return (await readdir(directory)).sort().map((name) => join(directory, name));
}

describe("journal: on-disk format", () => {
  let site: JournalSite;
  const workload = interpretIntents(seededIntents(42, 120, 100_000));
  beforeEach(async () => {
    site = await makeSite("journal-format");
    const journal = await openJournal(site, { segmentBytes: 200_000 });
    await applyWorkload(site, workload, journal);
    await journal.close();
  });
  afterEach(() => removeSite(site));

  it("round-trips every record type and rejects paths that leave the root", () => {
    const records = [
      { type: "bytes", path: "a/b", offset: 65536, oldSize: 70000, data: Buffer.from("old") },
      { type: "bytes", path: "a/c", offset: 0, oldSize: 0, data: Buffer.alloc(0) },
      { type: "mode", path: "a", mode: 0o750 },
      { type: "absent", path: "x" },
      { type: "moved", path: "y", object: "12-0" },
      { type: "renamed", from: "p", to: "q/r" },
      { type: "point", point: { id: "p1", seq: 9, timeUnixMs: 5, consistency: "app", group: "g" } },
    ] as const;
    for (const record of records) {
      const bytes = encodeRecord(9, record, true);
      const header = parseHeader(bytes);
      assert.ok(header !== undefined);
      assert.deepEqual(decodeRecord(header.typeCode, bytes.subarray(headerBytes), "test"), record);
    }
    for (const path of ["../escape", "/abs", "a//b", "a/./b"]) {
      const bytes = encodeRecord(1, { type: "absent", path }, true);
      assert.throws(() => decodeRecord(3, bytes.subarray(headerBytes), "test"), JournalCorruptError);
    }
  });

  it("cuts a torn last group off and keeps every earlier point", async () => {
    const segments = await segmentFiles(site);
    assert.ok(segments.length > 1, "the workload should span several segments");
    const newest = segments.at(-1) ?? "";
    const before = await openJournal(site, { readOnly: true });
    const points = before.points();
    const lastSeq = before.lastRecordedSeq;
    await before.close();
    const { size } = await stat(newest);
    await truncate(newest, size - 5);
    const journal = await openJournal(site);
    try {
      assert.ok(journal.lastRecordedSeq < lastSeq, "the torn group must be gone");
      assert.ok(journal.points().length >= points.length - 1);
      assert.deepEqual(journal.points(), points.slice(0, journal.points().length));
    } finally {
      await journal.close();
    }
    assert.ok((await stat(newest)).size < size - 5, "the torn bytes are truncated away");
  });

  it("treats zeros after the last group as a torn write", async () => {
    const newest = (await segmentFiles(site)).at(-1) ?? "";
    await appendFile(newest, Buffer.alloc(4096));
    const journal = await openJournal(site);
    try {
      assert.equal(await assertPointsHydrate(site, journal, workload.expected), journal.points().length);
    } finally {
      await journal.close();
    }
  });

  it("reports a flipped bit inside a segment with the file and offset", async () => {
    const oldest = (await segmentFiles(site))[0] ?? "";
    const handle = await open(oldest, "r+");
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, 100);
    byte[0] = (byte[0] ?? 0) ^ 0x10;
    await handle.write(byte, 0, 1, 100);
    await handle.close();
    await assert.rejects(openJournal(site), (error: unknown) => {
      assert.ok(error instanceof JournalCorruptError);
      assert.match(error.message, /\d{20}\.seg offset \d+/);
      return true;
    });
    await assert.rejects(openJournal(site, { readOnly: true }), JournalCorruptError);
  });

  it("reports a damaged state file and releases its lock", async () => {
    await writeFile(join(site.journalDir, "state.json"), "{ not json");
    await assert.rejects(openJournal(site), /state\.json.*not JSON/);
    await assert.rejects(openJournal(site), /state\.json.*not JSON/); // the lock was released
  });

  it("opens read-only without touching a torn tail", async () => {
    const newest = (await segmentFiles(site)).at(-1) ?? "";
    await appendFile(newest, Buffer.from([1, 2, 3]));
    const content = await readFile(newest);
    const journal = await openJournal(site, { readOnly: true });
    await journal.close();
    assert.ok((await readFile(newest)).equals(content));
  });

  it("refuses a second writer while the first holds the journal", async () => {
    const journal = await openJournal(site);
    try {
      await assert.rejects(openJournal(site), /in use by process/);
    } finally {
      await journal.close();
    }
  });

  it("replays changes after an unacknowledged apply without losing any point", async () => {
    // The replica saw every change, but the applied seq says only half: the master target
    // replays the rest through the journal, which must recognise what it already holds.
    await writeFile(join(site.base, "applied"), String(Math.floor(workload.changes.length / 2)));
    const journal = await openJournal(site);
    try {
      await applyWorkload(site, workload, journal);
      assert.equal(await assertPointsHydrate(site, journal, workload.expected), journal.points().length);
    } finally {
      await journal.close();
    }
  });
});

describe("journal: a crash between a journal record and its move", () => {
  let site: JournalSite;
  beforeEach(async () => {
    site = await makeSite("journal-move-crash");
  });
  afterEach(() => removeSite(site));

  const point = (id: string): JournalOp => marker(id, 1);
  const file = (path: string, text: string): JournalOp[] => [make(path, 1, 0o644), write(path, 0, text)];

  for (const [name, destroying] of [
    ["remove", { $case: "remove", value: { path: "a" } }],
    ["rename over", { $case: "rename", value: { from: "b", to: "a" } }],
    ["symlink over", { $case: "symlink", value: { path: "a", target: "elsewhere" } }],
  ] as const) {
    it(`finishes the move on replay (${name})`, async () => {
      const workload = interpretIntents([], {
        initial: [...file("a", "precious"), ...file("b", "newer"), point("before"), destroying, point("after")],
      });
      const destroyingSeq = workload.changes.length - 1;
      const journal = await openJournal(site);
      await applyWorkload(site, workload, journal);
      await journal.close();
      // Undo the move by hand: the state a crash right after the record was fsynced leaves.
      await rm(join(site.replicaRoot, "a"), { force: true });
      if (name === "rename over")
        await rename(join(site.replicaRoot, "a"), join(site.replicaRoot, "b")).catch(() => undefined);
      await rename(join(site.journalDir, "objects", `${destroyingSeq}-0`), join(site.replicaRoot, "a"));
      if (name === "rename over") await writeFile(join(site.replicaRoot, "b"), "newer");
      await writeFile(join(site.base, "applied"), String(destroyingSeq - 1));
      const reopened = await openJournal(site);
      try {
        await applyWorkload(site, workload, reopened);
        assert.deepEqual(await readTree(site.replicaRoot), workload.finalState);
        assert.equal(await assertPointsHydrate(site, reopened, workload.expected), 2);
      } finally {
        await reopened.close();
      }
    });
  }
});
