// The tree source against a live tree: entries that vanish or are replaced between the lstat that
// found them and the reads that follow (readlink, open, xattrs, readdir), and steps that fail
// midway and are retried. The changes go to a real TreeReplica, applied in order as the master
// target would; the race is made deterministic by changing the source when a given change is sent.
import { strict as assert } from "node:assert";
import { lstat, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EntryKind, type Change } from "../../src/gen/ksr/replication/v1/replication.js";
import { loadBlockHasher } from "../../src/replicator/block-hash.js";
import { makeSpecial } from "../../src/replicator/file-attributes.js";
import { Manifest } from "../../src/replicator/agent/manifest.js";
import { TreeSource } from "../../src/replicator/agent/tree-source.js";
import { noJournal } from "../../src/replicator/master-target/change-journal.js";
import { TreeReplica } from "../../src/replicator/master-target/replica.js";
import { treesDiffer } from "../fixture/tree-compare.js";

type Operation = NonNullable<Change["op"]>;
/** Runs when a change is sent (after it is queued, as ChangeSender queues before it can fail). */
type OnSend = (op: Operation) => Promise<void>;
const sendNothing: OnSend = () => Promise.resolve();

const pathOf = (op: Operation): string =>
  op.$case === "rename" ? op.value.to : op.$case === "marker" ? "" : op.value.path;

describe("tree source: entries vanishing mid-scan and failed steps", () => {
  let work: string;
  let source: string;
  let replicaRoot: string;
  let replica: TreeReplica;
  let manifest: Manifest;
  let seq: number;
  let onSend: OnSend;

  const sender = {
    emit: async (op: Operation): Promise<void> => {
      const change: Change = { seq: ++seq, op };
      replica.validate(change);
      await replica.apply(change);
      await onSend(op);
    },
  };
  const s = (path: string) => join(source, path);
  /** Once, when the change of that case for that path is sent. */
  const when = (kind: Operation["$case"], path: string, action: () => Promise<void>): OnSend => {
    let done = false;
    return async (op) => {
      if (done || op.$case !== kind || pathOf(op) !== path) return;
      done = true;
      await action();
    };
  };
  const scan = async (how: "full" | string[]): Promise<void> => {
    const tree = new TreeSource(source, manifest, sender);
    await (how === "full" ? tree.fullScan() : tree.syncPaths(how));
    await replica.sync();
  };
  const converged = async (): Promise<void> => {
    onSend = sendNothing;
    assert.equal(await treesDiffer(source, replicaRoot), "", "replica vs source");
    for (const path of manifest.entries.keys())
      assert.ok(
        await lstat(s(path)).then(
          () => true,
          () => false,
        ),
        `the manifest still holds ${path}`,
      );
  };

  before(() => loadBlockHasher());
  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), "ksr-scan-race-"));
    source = join(work, "source");
    replicaRoot = join(work, "replica");
    await mkdir(join(source, "d"), { recursive: true });
    await mkdir(replicaRoot);
    replica = new TreeReplica(replicaRoot, noJournal);
    manifest = new Manifest("m");
    seq = 0;
    onSend = sendNothing;
    await writeFile(s("a"), "kept");
    await scan("full");
  });
  afterEach(async () => {
    await replica.release();
    await rm(work, { recursive: true, force: true });
  });

  const vanishing: [string, Operation["$case"], string, () => Promise<void>][] = [
    // The CI failure: d/e's content was sent, then llistxattr found it gone.
    ["a new file removed after its content was sent", "write", "d/e", () => rm(s("d/e"))],
    ["a new file removed once it was made", "make", "d/e", () => rm(s("d/e"))],
    [
      "a new file replaced by a FIFO",
      "make",
      "d/e",
      async () => {
        await rm(s("d/e"));
        makeSpecial(s("d/e"), EntryKind.ENTRY_KIND_FIFO, 0o644, { rdevMajor: 0, rdevMinor: 0 });
      },
    ],
    [
      "a new file replaced by a symlink",
      "truncate",
      "d/e",
      async () => {
        await rm(s("d/e"));
        await symlink("a", s("d/e"));
      },
    ],
    ["its directory removed", "write", "d/e", () => rm(s("d"), { recursive: true })],
    [
      "its directory replaced by a file",
      "write",
      "d/e",
      async () => {
        await rm(s("d"), { recursive: true });
        await writeFile(s("d"), "now a file");
      },
    ],
  ];
  for (const [what, kind, path, action] of vanishing) {
    for (const how of ["full", "notified"] as const) {
      it(`${what} (${how === "full" ? "full scan" : "notified path"}): counts as removed or rescanned`, async () => {
        await writeFile(s("d/e"), Buffer.alloc(200_000, 7));
        onSend = when(kind, path, action);
        await scan(how === "full" ? "full" : ["d/e"]);
        if (how === "notified") await scan(["d/e", "d"]); // the notifications the change itself raises
        await converged();
      });
    }
  }

  it("a new directory removed before it is listed: counts as removed, in a full scan too", async () => {
    await mkdir(s("n/m"), { recursive: true });
    await writeFile(s("n/m/f"), "x");
    onSend = when("make", "n", () => rm(s("n"), { recursive: true }));
    await scan("full");
    await converged();
  });

  it("a known directory replaced by another before it is listed: the new one is scanned whole", async () => {
    await mkdir(s("n"));
    await writeFile(s("n/old"), "old");
    await scan("full");
    await writeFile(s("b"), "changed first");
    await mkdir(s("other"));
    await writeFile(s("other/new"), "new");
    // The scan lists b before n: n is swapped when b's change is sent, before n's readdir.
    onSend = when("write", "b", async () => {
      await rm(s("n"), { recursive: true });
      await mkdir(s("n"));
      await writeFile(s("n/new"), "new");
    });
    await scan("full");
    await converged();
  });

  it("a symlink replaced by a file between lstat and readlink is reconciled as the file", async () => {
    await symlink("a", s("l"));
    await writeFile(s("b"), "b");
    onSend = when("make", "b", async () => {
      await rm(s("l"));
      await writeFile(s("l"), "a file now");
    });
    await scan("full");
    await converged();
  });

  it("an entry made and removed between two rounds: its directory's mtime still follows", async () => {
    await writeFile(s("d/t"), "brief");
    await rm(s("d/t"));
    await scan(["d/t"]); // nothing to send for d/t itself
    assert.equal(await treesDiffer(source, replicaRoot, { metadata: true }), "");
  });

  it("a deletion survives a step that failed after sending part of a file and was retried", async () => {
    await writeFile(s("d/e"), Buffer.alloc(200_000, 7));
    // The process server goes away after d/e's blocks were queued: the step fails there.
    onSend = when("write", "d/e", () => Promise.reject(new Error("the process server is unreachable")));
    await assert.rejects(scan("full"), /unreachable/);
    await rm(s("d/e"));
    await scan("full"); // the agent's retry: a verifying scan against the same manifest
    await converged();
  });

  it("a change survives a step that failed midway through a file it already had", async () => {
    // Over 1 MiB: the failure comes when the first write is sent, with the next block already read.
    await writeFile(s("d/e"), Buffer.alloc(1_500_000, 7));
    await scan("full");
    await writeFile(s("d/e"), Buffer.alloc(1_500_000, 9));
    onSend = when("write", "d/e", () => Promise.reject(new Error("the process server is unreachable")));
    await assert.rejects(scan("full"), /unreachable/);
    await scan("full");
    await converged();
  });
});
