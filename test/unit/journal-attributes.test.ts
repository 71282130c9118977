// The undo journal keeps what rsync -aHAX --numeric-ids keeps: a point taken before a chown, a
// touch, a setfattr or an ACL change hydrates and rolls back to the old owner, mtime (to the
// nanosecond) and xattrs, directories and the replica root included, FIFOs and devices too.
import { strict as assert } from "node:assert";
import { lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { EntryKind, type Attributes } from "../../src/gen/ksr/replication/v1/replication.js";
import type { JournalChange, JournalOp } from "../../src/replicator/journal/change.js";
import { hydrate, rollback } from "../../src/replicator/journal/materialise.js";
import type { UndoJournal } from "../../src/replicator/journal/undo-journal.js";
import { capabilityValue, sampleAcl } from "../fixture/fidelity-tree.js";
import { makeSite, openJournal, removeSite, type JournalSite } from "../fixture/journal-harness.js";
import { make, marker, write } from "../fixture/journal-ops.js";
import { TestReplica } from "../fixture/journal-replica.js";
import { describeTree, treeDifference } from "../fixture/tree-compare.js";
import { propertyRuns } from "../fixture/property-runs.js";

const setAttributes = (path: string, mode: number, attributes: Partial<Attributes>): JournalOp => ({
  $case: "setAttributes",
  value: {
    path,
    mode,
    attributes: { uid: 0, gid: 0, mtimeSec: 1_500_000_000, mtimeNsec: 0, xattrs: [], ...attributes },
  },
});
const special = (path: string, kind: EntryKind, rdevMajor = 0, rdevMinor = 0): JournalOp => ({
  $case: "make",
  value: { path, kind, mode: 0o640, rdevMajor, rdevMinor },
});

/** Applies ops one by one (each committed), snapshotting the replica at every marker. */
class History {
  readonly snapshots = new Map<string, Map<string, string>>();
  private seq = 0;
  private readonly replica: TestReplica;

  constructor(
    private readonly site: JournalSite,
    journal: UndoJournal,
  ) {
    this.replica = new TestReplica(site.replicaRoot, journal);
  }

  async apply(op: JournalOp): Promise<void> {
    if (op.$case === "marker")
      this.snapshots.set(op.value.id, await describeTree(this.site.replicaRoot, { metadata: true }));
    const change: JournalChange = { seq: ++this.seq, op };
    await this.replica.apply(change);
    await this.site.applied.commit(this.replica, this.seq);
  }

  close(): Promise<void> {
    return this.replica.close();
  }
}

async function assertPointsMaterialise(site: JournalSite, journal: UndoJournal, history: History): Promise<void> {
  for (const point of journal.points()) {
    const destination = join(site.base, `hydrate-${point.seq}`);
    assert.equal(await hydrate(journal, site.replicaRoot, point, destination), true);
    const difference = treeDifference(
      history.snapshots.get(point.id)!,
      await describeTree(destination, { metadata: true }),
    );
    assert.equal(difference, "", `point ${point.id} hydrated wrong`);
    await rm(destination, { recursive: true, force: true });
  }
  const oldest = journal.points()[0]!;
  assert.equal(await rollback(journal, site.replicaRoot, oldest), true);
  const difference = treeDifference(
    history.snapshots.get(oldest.id)!,
    await describeTree(site.replicaRoot, { metadata: true }),
  );
  assert.equal(difference, "", `rollback to ${oldest.id} went wrong`);
}

describe("journal: attributes at recovery points", function () {
  let site: JournalSite;
  let journal: UndoJournal;
  beforeEach(async () => {
    site = await makeSite("journal-attributes");
    journal = await openJournal(site);
  });
  afterEach(async () => {
    await journal.close();
    await removeSite(site);
  });

  it("a point taken before a chown, touch, setfattr and ACL change restores the old ones", async () => {
    const history = new History(site, journal);
    const pg = { uid: 999, gid: 999, mtimeSec: 1_600_000_000, mtimeNsec: 123_456_789 };
    for (const op of [
      make("pgdata", EntryKind.ENTRY_KIND_DIRECTORY, 0o700),
      make("pgdata/PG_VERSION", EntryKind.ENTRY_KIND_FILE, 0o600),
      write("pgdata/PG_VERSION", 0, "15\n"),
      special("pgdata/fifo", EntryKind.ENTRY_KIND_FIFO),
      special("null", EntryKind.ENTRY_KIND_CHAR_DEVICE, 1, 3),
      setAttributes("pgdata/PG_VERSION", 0o600, {
        ...pg,
        xattrs: [{ name: "user.note", value: Buffer.from("v1") }],
      }),
      setAttributes("pgdata/fifo", 0o620, { ...pg, mtimeNsec: 1 }),
      setAttributes("pgdata", 0o700, { ...pg, mtimeNsec: 999_999_999 }),
      setAttributes("", 0o750, { ...pg, mtimeNsec: 5 }),
      marker("before", 1000),
      setAttributes("pgdata/PG_VERSION", 0o4755, {
        uid: 0,
        gid: 0,
        mtimeSec: 1_700_000_000,
        xattrs: [
          { name: "security.capability", value: capabilityValue() },
          { name: "system.posix_acl_access", value: sampleAcl(5, 6) },
        ],
      }),
      write("pgdata/PG_VERSION", 0, "16\n"),
      make("pgdata/new", EntryKind.ENTRY_KIND_FILE, 0o644),
      { $case: "remove", value: { path: "pgdata/fifo" } },
      { $case: "remove", value: { path: "null" } },
      setAttributes("", 0o755, { uid: 1, gid: 1 }),
      marker("after", 2000),
    ] satisfies JournalOp[])
      await history.apply(op);
    await history.close();

    const version = join(site.replicaRoot, "pgdata/PG_VERSION");
    assert.equal((await lstat(version)).uid, 0, "the replica follows the chown");
    await assertPointsMaterialise(site, journal, history);
    const restored = await lstat(version, { bigint: true });
    assert.deepEqual([restored.uid, restored.gid, restored.mtimeNs], [999n, 999n, 1_600_000_000_123_456_789n]);
    assert.ok((await lstat(join(site.replicaRoot, "pgdata/fifo"))).isFIFO());
    assert.deepEqual((await readdir(join(site.replicaRoot, "pgdata"))).sort(), ["PG_VERSION", "fifo"]);
  });

  it("property: random metadata and namespace changes hydrate and roll back to every point exactly", async () => {
    const names = ["a", "b", "d", "d/x", "d/y"];
    const targets = ["", ...names];
    const xattrPool = [
      // Sorted by name, as the wire requires.
      { name: "system.posix_acl_access", value: sampleAcl(7, 8) },
      { name: "trusted.t", value: Buffer.from("t") },
      { name: "user.a", value: Buffer.from("1") },
      { name: "user.b", value: Buffer.alloc(300, 2) },
    ];
    const intent = fc.oneof(
      fc.record({
        kind: fc.constant("attributes" as const),
        path: fc.constantFrom(...targets),
        mode: fc.constantFrom(0o755, 0o700, 0o4755, 0o640, 0o1777),
        uid: fc.constantFrom(0, 999, 65534),
        gid: fc.constantFrom(0, 999, 100),
        mtimeSec: fc.integer({ min: -1000, max: 2_000_000_000 }),
        mtimeNsec: fc.nat(999_999_999),
        xattrs: fc.subarray(xattrPool),
      }),
      fc.record({
        kind: fc.constant("make" as const),
        path: fc.constantFrom(...names),
        type: fc.constantFrom(EntryKind.ENTRY_KIND_FILE, EntryKind.ENTRY_KIND_DIRECTORY, EntryKind.ENTRY_KIND_FIFO),
      }),
      fc.record({ kind: fc.constant("write" as const), path: fc.constantFrom(...names), offset: fc.nat(200_000) }),
      fc.record({ kind: fc.constant("remove" as const), path: fc.constantFrom(...names) }),
      fc.record({
        kind: fc.constant("rename" as const),
        from: fc.constantFrom(...names),
        to: fc.constantFrom(...names),
      }),
      fc.record({ kind: fc.constant("symlink" as const), path: fc.constantFrom(...names) }),
      fc.constant({ kind: "marker" as const }),
    );
    type Intent = typeof intent extends fc.Arbitrary<infer T> ? T : never;
    const at = (path: string) => join(site.replicaRoot, path);
    const kindAt = async (path: string) => {
      const stats = await lstat(at(path)).catch(() => undefined);
      if (stats === undefined) return "missing";
      return stats.isDirectory() ? "dir" : stats.isFile() ? "file" : "other";
    };
    const parentExists = async (path: string) =>
      !path.includes("/") || (await kindAt(path.slice(0, path.lastIndexOf("/")))) === "dir";
    /** The intent as a change the replica accepts in its current state, or undefined. */
    const toOp = async (value: Intent, points: number): Promise<JournalOp | undefined> => {
      switch (value.kind) {
        case "attributes": {
          // Symlinks and FIFOs refuse user.* xattrs: the replica reports that and keeps the rest.
          if ((await kindAt(value.path)) === "missing") return undefined;
          return setAttributes(value.path, value.mode, value);
        }
        case "make":
          if ((await kindAt(value.path)) !== "missing" || !(await parentExists(value.path))) return undefined;
          return value.type === EntryKind.ENTRY_KIND_FIFO
            ? special(value.path, value.type)
            : make(value.path, value.type, 0o644);
        case "write":
          if ((await kindAt(value.path)) !== "file") return undefined;
          return write(value.path, value.offset, `data at ${value.offset}`);
        case "remove":
          if (!(await parentExists(value.path))) return undefined;
          return { $case: "remove", value: { path: value.path } };
        case "rename": {
          const from = await kindAt(value.from);
          const to = await kindAt(value.to);
          if (from === "missing" || value.to === value.from || value.to.startsWith(`${value.from}/`)) return undefined;
          if (!(await parentExists(value.to)) || to === "dir") return undefined;
          return { $case: "rename", value: { from: value.from, to: value.to } };
        }
        case "symlink":
          if ((await kindAt(value.path)) === "dir" || !(await parentExists(value.path))) return undefined;
          return { $case: "symlink", value: { path: value.path, target: "../elsewhere" } };
        case "marker":
          return marker(`p${points}`, 1000 + points);
      }
    };
    await fc.assert(
      fc.asyncProperty(fc.array(intent, { minLength: 1, maxLength: 25 }), async (intents) => {
        await journal.close();
        await removeSite(site);
        site = await makeSite("journal-attributes");
        journal = await openJournal(site);
        const history = new History(site, journal);
        let points = 0;
        try {
          await history.apply(make("d", EntryKind.ENTRY_KIND_DIRECTORY, 0o755));
          await history.apply(marker("p0", 1000));
          points = 1;
          for (const value of intents) {
            const op = await toOp(value, points);
            if (op === undefined) continue;
            if (op.$case === "marker") points++;
            await history.apply(op);
          }
        } finally {
          await history.close();
        }
        await assertPointsMaterialise(site, journal, history);
      }),
      propertyRuns(25),
    );
  });
});
