// kill -9 of each of the three programs at random moments while a writer changes the source.
// Invariants: the process server never loses a batch it acknowledged, and once the writer stops
// the replica converges to the source byte for byte. KSR_CRASH_ROUNDS raises the round count
// (the benchmark-sized soak is 50+); CI runs a few.
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, rename, rm, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { OpenReply } from "../../src/gen/ksr/replication/v1/replication.js";
import type { AgentProgress } from "../../src/replicator/agent/agent.js";
import { LocalPipeline, type Role } from "../../src/replicator/local-pipeline.js";
import { converge } from "../fixture/replication.js";
import { treesDiffer } from "../fixture/tree-compare.js";

const rounds = Number(process.env.KSR_CRASH_ROUNDS ?? "4");
const roles: Role[] = ["agent", "process-server", "master-target"];

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function pick<T>(items: readonly T[]): T {
  return items[Math.floor(Math.random() * items.length)] as T;
}

/** Random writes, truncates, renames and removals over a small tree until stopped. */
function startWriter(root: string): { stop(): Promise<void> } {
  const state = { running: true };
  const names = Array.from({ length: 12 }, (_, i) => `dir${i % 3}/file${i}`);
  const loop = (async () => {
    for (let i = 0; i < 3; i++) await mkdir(join(root, `dir${i}`), { recursive: true });
    while (state.running) {
      const name = pick(names);
      const path = join(root, name);
      const action = Math.random();
      try {
        if (action < 0.6) {
          const handle = await open(path, "a+").then(async (h) => {
            await h.close();
            return open(path, "r+");
          });
          const size = 1 + Math.floor(Math.random() * 200_000);
          await handle.write(randomBytes(size), 0, size, Math.floor(Math.random() * 300_000));
          await handle.close();
        } else if (action < 0.75) {
          await truncate(path, Math.floor(Math.random() * 200_000));
        } else if (action < 0.9) {
          await rename(path, join(root, pick(names)));
        } else {
          await rm(path, { force: true });
        }
      } catch {
        // racing its own renames and removals is fine
      }
      await sleep(5 + Math.random() * 30);
    }
  })();
  return {
    async stop() {
      state.running = false;
      await loop;
    },
  };
}

describe("replicator crash safety (kill -9 rounds)", function () {
  this.timeout(60_000 + rounds * 15_000);
  let work: string;
  let pipeline: LocalPipeline;
  let progress: AgentProgress | undefined;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "ksr-crash-"));
    await mkdir(join(work, "source"));
    await mkdir(join(work, "logs"));
    pipeline = await LocalPipeline.create({
      source: join(work, "source"),
      target: join(work, "target"),
      work: join(work, "work"),
      once: false,
      scanIntervalSeconds: 5,
      cacheLimit: "1Gi",
      logDir: join(work, "logs"),
      onProgress: (latest) => {
        progress = latest;
      },
    });
    await pipeline.startAll();
  });
  after(async () => {
    await pipeline.stopAll();
    await rm(work, { recursive: true, force: true });
  });

  async function openAsAgent(): Promise<OpenReply> {
    for (;;) {
      try {
        return await pipeline.openAsAgent();
      } catch {
        await sleep(200); // the restarted process server is not listening yet
      }
    }
  }

  it(`survives ${rounds} rounds of kill -9 and converges without losing acknowledged changes`, async () => {
    const writer = startWriter(join(work, "source"));
    const killed: Role[] = [];
    try {
      for (let round = 0; round < rounds; round++) {
        await sleep(300 + Math.random() * 1200);
        const role = roles[round % roles.length] ?? pick(roles);
        const ackedBeforeKill = progress?.ackedSeq ?? 0;
        await pipeline.kill(role);
        killed.push(role);
        await sleep(Math.random() * 500);
        await pipeline.start(role);
        if (role === "process-server") {
          const reply = await openAsAgent();
          assert.ok(
            reply.durableSeq >= ackedBeforeKill,
            `the process server acknowledged seq ${ackedBeforeKill} but holds only ${reply.durableSeq} after kill -9`,
          );
        }
      }
    } finally {
      await writer.stop();
    }
    const difference = await converge(() => treesDiffer(join(work, "source"), join(work, "target")), 45_000);
    assert.equal(difference, "", `after killing ${killed.join(", ")}`);
  });
});
