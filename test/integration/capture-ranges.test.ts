// The fanotify helper against the real kernel: each kind of write another process makes arrives
// with its exact (page-aligned) range, and where write ranges cannot run the agent falls back to
// tree scan and says why. Marks are put only on directories this test made.
import { strict as assert } from "node:assert";
import { execFile } from "node:child_process";
import { statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startCapture } from "../../src/replicator/agent/capture.js";
import { FanotifyListener, type RangeRecord } from "../../src/replicator/agent/fanotify-listener.js";
import { Manifest } from "../../src/replicator/agent/manifest.js";
import { TreeSource, type ContentTracking } from "../../src/replicator/agent/tree-source.js";
import { WriteRangeCapture } from "../../src/replicator/agent/write-ranges.js";
import type { Change } from "../../src/gen/ksr/replication/v1/replication.js";
import { loadBlockHasher } from "../../src/replicator/block-hash.js";
import { eventually } from "../fixture/eventually.js";
import { fanotifyUnavailable } from "../fixture/fanotify.js";

const run = promisify(execFile);
type Operation = NonNullable<Change["op"]>;
const page = 4096;
const mib = 1024 * 1024;

/** Runs one file operation in another process (the helper ignores its own parent's accesses). */
async function inChild(language: "node" | "python3", script: string, file: string): Promise<void> {
  await run(language === "node" ? process.execPath : "python3", [language === "node" ? "-e" : "-c", script, file]);
}

const node = (body: string) =>
  `const fs = require("node:fs"); const fd = fs.openSync(process.argv[1], "r+"); ${body}; fs.closeSync(fd);`;

type Expected =
  | { kind: "write"; offset: number; count: number }
  | { kind: "truncate"; offset: number }
  | { kind: "access"; offset: number; count: number };

interface RangeCase {
  what: string;
  operation: () => Promise<void>;
  /** Exactly the records expected for the file, in order. */
  expected: Expected[];
}

/** A record without what varies between runs (inode, process). */
function comparable(record: RangeRecord): Expected | { kind: "whole" } {
  if (record.kind === "access") return { kind: "access", offset: record.offset, count: record.count };
  if (record.kind === "write") return { kind: "write", offset: record.offset, count: record.count };
  if (record.kind === "truncate") return { kind: "truncate", offset: record.offset };
  return { kind: "whole" };
}

/** A write record as the kernel reports it: the range widened to whole pages. */
function aligned(offset: number, length: number): Expected {
  const start = Math.floor(offset / page) * page;
  return { kind: "write", offset: start, count: Math.ceil((offset + length) / page) * page - start };
}

describe("write-range capture: ranges from the kernel", function () {
  let dir: string;
  let listener: FanotifyListener | undefined;
  const records: RangeRecord[] = [];
  let unavailable: string | undefined;

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), "ksr-ranges-"));
    unavailable = await fanotifyUnavailable(dir);
    if (unavailable !== undefined) return;
    listener = await FanotifyListener.start(
      { record: (record) => records.push(record), lost: () => undefined, failed: () => undefined },
      5000,
    );
    assert.equal(await listener.mark(dir), 0);
  });
  after(async () => {
    listener?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const file = () => join(dir, "data");
  const cases: RangeCase[] = [
    {
      what: "write() at the file position",
      operation: () => inChild("node", node(`fs.writeSync(fd, Buffer.alloc(5000, 1))`), file()),
      expected: [aligned(0, 5000)],
    },
    {
      what: "pwrite() of 5000 bytes at 1 MiB + 100",
      operation: () => inChild("node", node(`fs.writeSync(fd, Buffer.alloc(5000, 2), 0, 5000, ${mib + 100})`), file()),
      expected: [{ kind: "write", offset: mib, count: 8192 }],
    },
    {
      what: "writev() of two buffers at 4106",
      operation: () =>
        inChild("node", node(`fs.writevSync(fd, [Buffer.alloc(3000, 3), Buffer.alloc(3000, 4)], 4106)`), file()),
      expected: [aligned(4106, 6000)],
    },
    {
      what: "fallocate() of 8 KiB at 3 MiB",
      operation: () => run("fallocate", ["-o", String(3 * mib), "-l", "8192", file()]).then(() => undefined),
      expected: [{ kind: "write", offset: 3 * mib, count: 8192 }],
    },
    {
      what: "fallocate() punching a 64 KiB hole",
      operation: () => run("fallocate", ["-p", "-o", "65536", "-l", "65536", file()]).then(() => undefined),
      expected: [{ kind: "write", offset: 65536, count: 65536 }],
    },
    {
      // Everything from the new end on may differ (the file may grow again before a round).
      what: "ftruncate() to 2 MiB + 1",
      operation: () => inChild("node", node(`fs.ftruncateSync(fd, ${2 * mib + 1})`), file()),
      expected: [{ kind: "truncate", offset: 2 * mib }],
    },
    {
      what: "truncate() of the path to 1 MiB",
      operation: () => run("truncate", ["-s", String(mib), file()]).then(() => undefined),
      expected: [{ kind: "truncate", offset: mib }],
    },
    {
      what: "a read (not a write: reported as an access only)",
      operation: () => inChild("node", node(`fs.readSync(fd, Buffer.alloc(100), 0, 100, 8192)`), file()),
      expected: [{ kind: "access", offset: 8192, count: page }],
    },
    {
      // Stores through the mapping raise no event: the mapping itself is reported once.
      what: "mmap() of 64 KiB, shared, stored into",
      operation: () =>
        inChild(
          "python3",
          "import mmap,sys\nf=open(sys.argv[1],'r+b')\nm=mmap.mmap(f.fileno(),65536,offset=0)\nm[0:4]=b'mmap'\nm.close()",
          file(),
        ),
      expected: [{ kind: "access", offset: 0, count: 65536 }],
    },
  ];

  for (const { what, operation, expected } of cases)
    it(`reports ${what} with its exact range`, async function () {
      if (unavailable !== undefined || listener === undefined) {
        this.test!.title += ` (skipped: ${unavailable})`;
        this.skip();
      }
      await writeFile(file(), Buffer.alloc(4 * mib));
      const ino = String(statSync(file()).ino);
      await listener.sync(); // the records of that setup write are delivered by now
      records.length = 0;
      await operation();
      const forFile = () => records.filter((record) => record.ino === ino).map(comparable);
      await eventually(
        `${expected.length} records for the file`,
        async () => {
          await listener?.sync();
          return forFile().length >= expected.length ? true : undefined;
        },
        10_000,
        { describe: () => Promise.resolve(JSON.stringify(forFile())), intervalMs: 30 },
      );
      await listener.sync();
      assert.deepEqual(forFile(), expected);
    });

  it("reports a truncate that finished before a hold ahead of the hold's answer", async function () {
    if (unavailable !== undefined || listener === undefined) {
      this.test!.title += ` (skipped: ${unavailable})`;
      this.skip();
    }
    // A truncate raises no completion event: without this, a cut right after it would read the
    // file as if the zeroed range had not changed.
    await writeFile(file(), Buffer.alloc(4 * mib));
    const ino = String(statSync(file()).ino);
    await listener.sync();
    records.length = 0;
    await inChild("node", node(`fs.ftruncateSync(fd, ${mib + 1})`), file());
    const held = await listener.hold(2000);
    const truncates = records.filter((record) => record.ino === ino).map(comparable);
    await listener.release();
    assert.equal(held.quiet, true);
    assert.deepEqual(truncates, [{ kind: "truncate", offset: mib }]);
  });

  it("keeps the ranges recorded before a namespace-only scan for the next round", async function () {
    if (unavailable !== undefined) {
      this.test!.title += ` (skipped: ${unavailable})`;
      this.skip();
    }
    // The agent's periodic scan under write ranges looks at the namespace only and hands files
    // whose stat changed back to the ranges: dropping the recorded ranges there lost those writes.
    await loadBlockHasher();
    const root = await mkdtemp(join(tmpdir(), "ksr-ranges-scan-"));
    const manifest = new Manifest("m1");
    const log = { info: () => undefined, warn: () => undefined };
    const capture = new WriteRangeCapture(root, manifest, { watchdogMs: 5000, log });
    try {
      await writeFile(join(root, "data"), Buffer.alloc(mib));
      await capture.start();
      const sent: string[] = [];
      const emitter = { emit: (op: Operation) => Promise.resolve(void sent.push(op.$case)) };
      const source = (tracking?: ContentTracking) => new TreeSource(root, manifest, emitter, tracking);
      await source(capture.tracking).fullScan();
      await capture.round(source);
      await inChild("node", node(`fs.writeSync(fd, Buffer.alloc(100, 9), 0, 100, 65536)`), join(root, "data"));
      await eventually("the write recorded", () => Promise.resolve(capture.pending ? true : undefined), 10_000);
      capture.discard(true);
      sent.length = 0;
      await capture.round(source);
      assert.ok(sent.includes("write"), `the write reached the stream (sent: ${sent.join(", ")})`);
    } finally {
      capture.close();
      await rm(root, { recursive: true, force: true });
    }
  });

  it("falls back to tree scan on tmpfs and says why; refuses an explicit write-ranges there", async function () {
    if (unavailable !== undefined) {
      this.test!.title += ` (skipped: ${unavailable})`;
      this.skip();
    }
    const shm = await mkdtemp("/dev/shm/ksr-ranges-");
    const warnings: string[] = [];
    const log = { info: () => undefined, warn: (line: string) => warnings.push(line) };
    try {
      const capture = await startCapture("auto", shm, new Manifest("m1"), { watchdogMs: 2000, log });
      capture.close();
      assert.equal(capture.choice.strategy, "tree-scan");
      assert.match(
        capture.choice.reason,
        /write ranges unavailable: the filesystem of .* refuses pre-content marks \(EOPNOTSUPP\)/,
      );
      assert.deepEqual(warnings, [`capture: tree-scan (${capture.choice.reason})`]);
      await assert.rejects(
        startCapture("write-ranges", shm, new Manifest("m1"), { watchdogMs: 2000, log }),
        /--capture write-ranges cannot run: the filesystem of .* refuses pre-content marks/,
      );
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  });

  it("falls back to tree scan without CAP_SYS_ADMIN and says so", async function () {
    if (unavailable !== undefined) {
      this.test!.title += ` (skipped: ${unavailable})`;
      this.skip();
    }
    // The capture started in a process whose capability bounding set lacks CAP_SYS_ADMIN.
    const capture = new URL("../../src/replicator/agent/capture.js", import.meta.url).href;
    const manifest = new URL("../../src/replicator/agent/manifest.js", import.meta.url).href;
    const script = `
      const { startCapture } = await import(${JSON.stringify(capture)});
      const { Manifest } = await import(${JSON.stringify(manifest)});
      const log = { info() {}, warn() {} };
      const c = await startCapture("auto", process.argv[1], new Manifest("m1"), { watchdogMs: 2000, log });
      c.close();
      process.stdout.write(JSON.stringify(c.choice));`;
    const { stdout } = await run("setpriv", [
      "--bounding-set",
      "-sys_admin",
      "--inh-caps",
      "-sys_admin",
      process.execPath,
      "--input-type=module",
      "-e",
      script,
      dir,
    ]);
    const choice = JSON.parse(stdout) as { strategy: string; reason: string };
    assert.equal(choice.strategy, "tree-scan");
    assert.match(choice.reason, /refused \(EPERM\): the agent needs CAP_SYS_ADMIN/);
  });
});
