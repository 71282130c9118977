// Property: after any sequence of writes (write, pwrite, writev, truncate, appends, new files,
// renames), the replica converges to the source byte for byte, with either capture strategy.
// Agent, process server and master target run as separate processes, so every write here
// comes from another process than the agent's (as an application's would).
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, open, readFile, rename, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import type { AgentProgress } from "../../src/replicator/agent/agent.js";
import { LocalPipeline } from "../../src/replicator/local-pipeline.js";
import { eventually } from "../fixture/eventually.js";
import { fanotifyUnavailable } from "../fixture/fanotify.js";
import { converge } from "../fixture/replication.js";
import { treesDiffer } from "../fixture/tree-compare.js";

const mib = 1024 * 1024;
const files = ["a.bin", "b.bin", "dir/c.bin"];

type Op =
  | { kind: "pwrite"; file: number; offset: number; length: number; fill: number }
  | { kind: "writev"; file: number; offset: number; lengths: number[]; fill: number }
  | { kind: "append"; file: number; length: number; fill: number }
  | { kind: "truncate"; file: number; size: number }
  | { kind: "create"; name: number; length: number; fill: number }
  | { kind: "rename"; from: number; to: number };

const file = fc.integer({ min: 0, max: files.length - 1 });
const fill = fc.integer({ min: 0, max: 255 });
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("pwrite" as const),
      file,
      offset: fc.integer({ min: 0, max: 6 * mib }),
      length: fc.integer({ min: 1, max: 200_000 }),
      fill,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("writev" as const),
      file,
      offset: fc.integer({ min: 0, max: 3 * mib }),
      lengths: fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 4 }),
      fill,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("append" as const),
      file,
      length: fc.integer({ min: 1, max: 100_000 }),
      fill,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("truncate" as const), file, size: fc.integer({ min: 0, max: 5 * mib }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("create" as const),
      name: fc.integer({ min: 0, max: 3 }),
      length: fc.integer({ min: 0, max: 300_000 }),
      fill,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("rename" as const),
      from: fc.integer({ min: 0, max: 3 }),
      to: fc.integer({ min: 0, max: 3 }),
    }),
  },
);

/** Bytes that differ by position, so a block sent to the wrong offset shows. */
function pattern(length: number, fill: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i++) bytes[i] = (fill + i * 31 + (i >> 12)) & 0xff;
  return bytes;
}

async function apply(root: string, step: Op): Promise<void> {
  const path = (index: number) => join(root, files[index] ?? "a.bin");
  switch (step.kind) {
    case "pwrite": {
      const handle = await open(path(step.file), "r+");
      await handle.write(pattern(step.length, step.fill), 0, step.length, step.offset);
      await handle.close();
      return;
    }
    case "writev": {
      const handle = await open(path(step.file), "r+");
      await handle.writev(
        step.lengths.map((length, i) => pattern(length, step.fill + i)),
        step.offset,
      );
      await handle.close();
      return;
    }
    case "append": {
      const handle = await open(path(step.file), "a");
      await handle.write(pattern(step.length, step.fill));
      await handle.close();
      return;
    }
    case "truncate":
      await truncate(path(step.file), step.size);
      return;
    case "create":
      await writeFile(join(root, `new-${step.name}`), pattern(step.length, step.fill));
      return;
    case "rename":
      await rename(join(root, `new-${step.from}`), join(root, `new-${step.to}`)).catch(() => undefined);
      return;
  }
}

for (const capture of ["tree-scan", "write-ranges"] as const)
  describe(`capture property (${capture}): random write sequences reach the replica exactly`, function () {
    this.timeout(300_000);
    let work: string;
    let pipeline: LocalPipeline | undefined;
    let unavailable: string | undefined;
    let progress: AgentProgress | undefined;
    const source = () => join(work, "source");
    const target = () => join(work, "target");

    before(async () => {
      work = await mkdtemp(join(tmpdir(), `ksr-capture-${capture}-`));
      await mkdir(join(source(), "dir"), { recursive: true });
      if (capture === "write-ranges") unavailable = await fanotifyUnavailable(source());
      if (unavailable !== undefined) return;
      for (const name of files) await writeFile(join(source(), name), pattern(4 * mib, name.length));
      pipeline = await LocalPipeline.create({
        source: source(),
        target: target(),
        work: join(work, "pipeline"),
        once: false,
        logDir: work,
        onProgress: (latest) => (progress = latest),
        agentArgs: ["--capture", capture],
      });
      await pipeline.startAll();
      assert.equal(await converge(() => treesDiffer(source(), target()), 60_000), "", "the initial copy");
    });
    after(async () => {
      await pipeline?.stopAll();
      await rm(work, { recursive: true, force: true });
    });

    it("converges after every sequence, byte for byte", async function () {
      if (unavailable !== undefined) {
        this.test!.title += ` (skipped: ${unavailable})`;
        this.skip();
      }
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (steps) => {
          for (const step of steps) await apply(source(), step);
          const difference = await converge(() => treesDiffer(source(), target()), 60_000);
          assert.equal(difference, "", `after ${JSON.stringify(steps)}`);
        }),
        // Each run starts where the last one left the tree, so shrinking would replay on another state.
        { numRuns: 25, endOnFailure: true },
      );
      assert.equal(
        (progress?.capture ?? { strategy: "tree-scan" }).strategy,
        capture,
        "the agent ran the strategy asked for",
      );
    });

    if (capture === "write-ranges")
      it("re-hashes a file while it is mapped shared and writable (stores raise no event)", async function () {
        if (unavailable !== undefined) {
          this.test!.title += ` (skipped: ${unavailable})`;
          this.skip();
        }
        // The mapping stays until this test closes the child's stdin.
        const script = [
          "import mmap, sys",
          "f = open(sys.argv[1], 'r+b')",
          "m = mmap.mmap(f.fileno(), 1 << 20, offset=0)",
          "m[300000:300011] = b'stored-once'",
          "sys.stdout.write('stored\\n'); sys.stdout.flush()",
          "sys.stdin.read()",
          "m.close()",
        ].join("\n");
        const mapped = join(source(), "mapped.bin");
        await writeFile(mapped, Buffer.alloc(mib));
        assert.equal(await converge(() => treesDiffer(source(), target()), 60_000), "", "the new file replicated");
        const child = spawn("python3", ["-c", script, mapped], { stdio: ["pipe", "pipe", "inherit"] });
        const exited = new Promise((resolve) => child.once("exit", resolve));
        try {
          await new Promise<void>((resolve, reject) => {
            child.stdout.once("data", () => {
              resolve();
            });
            void exited.then(() => {
              reject(new Error(`the mapping process exited (${child.exitCode})`));
            });
          });
          await eventually("the stored bytes in the replica while the file is still mapped", async () => {
            const replica = await readFile(join(target(), "mapped.bin"));
            return replica.subarray(300000, 300011).toString() === "stored-once" ? true : undefined;
          });
          assert.equal(child.exitCode, null, "the file was still mapped");
        } finally {
          child.stdin.end();
          await exited;
        }
      });
  });
