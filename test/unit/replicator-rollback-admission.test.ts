// Which frames a master target admits around a rollback: none while it runs, then only a resync
// that read the rolled-back replica's manifest; the demand survives a restart (durable flag).
import { strict as assert } from "node:assert";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { Codec, type Frame } from "../../src/gen/ksr/replication/v1/replication.js";
import { DurableCounter } from "../../src/replicator/durable-counter.js";
import { CallError } from "../../src/replicator/grpc-util.js";
import { UndoJournal } from "../../src/replicator/journal/undo-journal.js";
import { FrameRejected } from "../../src/replicator/master-target/machine-applier.js";
import { RollbackAdmission } from "../../src/replicator/master-target/recovery-points.js";

const point = { id: "p1", seq: 5, timeUnixMs: 1, consistency: "crash" as const, group: "" };

function frame(afterGap: boolean): Frame {
  return {
    machineId: "m1",
    firstSeq: 9,
    lastSeq: 9,
    codec: Codec.CODEC_NONE,
    sealed: Buffer.alloc(0),
    afterGap,
    uncompressedSize: 0,
  };
}

type Step = "rollback" | "finished" | "manifest" | "restart";
type Outcome = "admitted" | "refused (unavailable)" | "rejected (resync)";

describe("replicator master target: frames around a rollback", function () {
  let work: string;
  let journal: UndoJournal;
  let counter: DurableCounter;
  let admission: RollbackAdmission;

  const open = async () => {
    counter = await DurableCounter.open(join(work, "m1.resync-after-rollback"));
    admission = new RollbackAdmission("m1", journal, counter);
  };

  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), "ksr-admission-"));
    journal = await UndoJournal.open(join(work, "journal"));
    await open();
  });
  afterEach(async () => {
    await counter.close();
    await journal.close();
    await rm(work, { recursive: true, force: true });
  });

  async function run(step: Step): Promise<void> {
    if (step === "rollback") await admission.beginRollback(point);
    if (step === "finished") admission.running = undefined;
    if (step === "manifest") admission.manifestServed();
    if (step === "restart") {
      await counter.close();
      await open();
    }
  }

  function outcome(afterGap: boolean): Outcome {
    try {
      admission.admit([frame(afterGap)]);
      return "admitted";
    } catch (error) {
      if (error instanceof CallError && error.code === status.UNAVAILABLE) return "refused (unavailable)";
      if (error instanceof FrameRejected) return "rejected (resync)";
      throw error;
    }
  }

  const cases: { name: string; steps: Step[]; afterGap: boolean; expected: Outcome }[] = [
    { name: "no rollback ever", steps: [], afterGap: false, expected: "admitted" },
    { name: "while a rollback runs", steps: ["rollback"], afterGap: false, expected: "refused (unavailable)" },
    { name: "a resync frame while it runs", steps: ["rollback"], afterGap: true, expected: "refused (unavailable)" },
    {
      name: "an ordinary frame after it",
      steps: ["rollback", "finished"],
      afterGap: false,
      expected: "rejected (resync)",
    },
    {
      name: "a resync whose manifest was read before it ended",
      steps: ["rollback", "manifest", "finished"],
      afterGap: true,
      expected: "rejected (resync)",
    },
    {
      name: "a resync that read the rolled-back manifest",
      steps: ["rollback", "finished", "manifest"],
      afterGap: true,
      expected: "admitted",
    },
    {
      name: "an ordinary frame after a restart",
      steps: ["rollback", "finished", "restart"],
      afterGap: false,
      expected: "rejected (resync)",
    },
    {
      name: "a resync read before a restart",
      steps: ["rollback", "finished", "manifest", "restart"],
      afterGap: true,
      expected: "rejected (resync)",
    },
  ];
  for (const { name, steps, afterGap, expected } of cases) {
    it(`${name}: ${expected}`, async () => {
      for (const step of steps) await run(step);
      assert.equal(outcome(afterGap), expected);
    });
  }

  it("admits everything again once the resync's first frame was applied", async () => {
    await admission.beginRollback(point);
    admission.running = undefined;
    admission.manifestServed();
    await admission.committed([frame(true)]);
    assert.equal(outcome(false), "admitted");
    await counter.close();
    await open();
    assert.equal(outcome(false), "admitted", "after a restart too");
  });
});
