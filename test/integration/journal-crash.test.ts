import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { hydrate, rollback } from "../../src/replicator/journal/materialise.js";
import { UndoJournal } from "../../src/replicator/journal/undo-journal.js";
import { crashSegmentBytes, crashWorkload } from "../fixture/journal-crash-workload.js";
import {
  applyWorkload,
  assertPointsHydrate,
  makeSite,
  removeSite,
  type JournalSite,
} from "../fixture/journal-harness.js";
import { readTree, type Workload } from "../fixture/journal-model.js";

const child = fileURLToPath(new URL("../fixture/journal-crash-child.js", import.meta.url));
const rounds = Number(process.env.KSR_JOURNAL_CRASH_ROUNDS ?? 3);
const changes = 160;

/** Runs the child and SIGKILLs it `delayMs` after it is ready (or lets it finish first). */
function runAndKill(args: string[], delayMs: number): Promise<"killed" | "finished"> {
  return new Promise((resolve, reject) => {
    const process = spawn("node", [child, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let errors = "";
    process.stderr.on("data", (chunk: Buffer) => (errors += chunk.toString()));
    process.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (output.startsWith("ready\n") && !output.includes("armed")) {
        output += "armed";
        setTimeout(() => process.kill("SIGKILL"), delayMs);
      }
    });
    process.on("close", (code, signal) => {
      if (signal === "SIGKILL") resolve("killed");
      else if (code === 0) resolve("finished");
      else reject(new Error(`child failed (${code ?? signal}): ${errors}`));
    });
  });
}

function openJournal(site: JournalSite): Promise<UndoJournal> {
  return UndoJournal.open(site.journalDir, { segmentBytes: crashSegmentBytes });
}

async function assertEveryPointHydrates(site: JournalSite, workload: Workload): Promise<void> {
  const journal = await openJournal(site);
  try {
    assert.ok(journal.points().length > 0);
    await assertPointsHydrate(site, journal, workload.expected);
  } finally {
    await journal.close();
  }
}

describe("journal: kill -9 of the master target", function () {
  this.timeout(60_000 * rounds);
  let site: JournalSite;
  beforeEach(async () => {
    site = await makeSite("journal-crash");
  });
  afterEach(() => removeSite(site));

  it("during apply: replaying after the crash leaves every point reconstructable", async () => {
    for (let round = 0; round < rounds; round++) {
      const seed = 1000 + round;
      const workload = crashWorkload(seed, changes);
      const outcome = await runAndKill(["apply", site.base, String(seed), String(changes)], 20 + Math.random() * 400);
      const journal = await openJournal(site);
      try {
        await applyWorkload(site, workload, journal); // the master target's replay from its applied seq
        assert.deepEqual(await readTree(site.replicaRoot), workload.finalState, `round ${round} (${outcome})`);
      } finally {
        await journal.close();
      }
      await assertEveryPointHydrates(site, workload);
      await removeSite(site);
      site = await makeSite("journal-crash");
    }
  });

  it("during pruning: the retained points stay reconstructable", async () => {
    for (let round = 0; round < rounds; round++) {
      const seed = 2000 + round;
      const workload = crashWorkload(seed, changes);
      const journal = await openJournal(site);
      await applyWorkload(site, workload, journal);
      const before = journal.points().map((point) => point.id);
      await journal.close();
      await runAndKill(["prune", site.base, String(seed), String(changes)], Math.random() * 60);
      const after = await openJournal(site);
      const retained = after.points().map((point) => point.id);
      await after.close();
      assert.deepEqual(retained, before.slice(before.length - retained.length), "retained points are the newest ones");
      await assertEveryPointHydrates(site, workload);
      await removeSite(site);
      site = await makeSite("journal-crash");
    }
  });

  it("during hydration: resuming writes the point exactly", async () => {
    for (let round = 0; round < rounds; round++) {
      const seed = 4000 + round;
      const workload = crashWorkload(seed, changes);
      const journal = await openJournal(site);
      await applyWorkload(site, workload, journal);
      const target = journal.points()[0];
      assert.ok(target !== undefined);
      await journal.close();
      const outcome = await runAndKill(
        ["hydrate", site.base, String(seed), String(changes), target.id],
        Math.random() * 40,
      );
      const resumed = await openJournal(site);
      try {
        const destination = join(site.base, "drill");
        assert.equal(await hydrate(resumed, site.replicaRoot, target, destination), true);
        assert.deepEqual(await readTree(destination), workload.expected.get(target.id), `round ${round} (${outcome})`);
        assert.deepEqual(await readTree(site.replicaRoot), workload.finalState, "hydration never changes the replica");
      } finally {
        await resumed.close();
      }
      await removeSite(site);
      site = await makeSite("journal-crash");
    }
  });

  it("during rollback: resuming reaches the point exactly", async () => {
    for (let round = 0; round < rounds; round++) {
      const seed = 3000 + round;
      const workload = crashWorkload(seed, changes);
      const journal = await openJournal(site);
      await applyWorkload(site, workload, journal);
      const points = journal.points();
      const target = points[Math.floor(points.length / 3)] ?? points[0];
      assert.ok(target !== undefined);
      await journal.close();
      const outcome = await runAndKill(
        ["rollback", site.base, String(seed), String(changes), target.id],
        Math.random() * 150,
      );
      const resumed = await openJournal(site);
      try {
        if (resumed.pendingRollback !== undefined || resumed.points().at(-1)?.id !== target.id)
          assert.equal(await rollback(resumed, site.replicaRoot, resumed.point(target.id)), true);
        assert.deepEqual(
          await readTree(site.replicaRoot),
          workload.expected.get(target.id),
          `round ${round} (${outcome})`,
        );
        assert.equal(resumed.points().at(-1)?.id, target.id);
        await assertPointsHydrate(site, resumed, workload.expected);
      } finally {
        await resumed.close();
      }
      await removeSite(site);
      site = await makeSite("journal-crash");
    }
  });
});
