import { strict as assert } from "node:assert";
import { AgentProgress } from "../../src/replicator/process-server/agent-progress.js";

const report = (observedUnixMs: number, coveredSeq: number) => ({
  machineId: "m",
  observedUnixMs,
  coveredSeq,
  syncing: false,
  syncBytesTotal: 0,
  syncBytesDone: 0,
});

describe("process server: agent progress turns the applied seq into a source time", () => {
  const cases: { name: string; reports: [number, number][]; applied: number; expected: number }[] = [
    { name: "nothing reported yet", reports: [], applied: 10, expected: 0 },
    { name: "nothing applied yet", reports: [[1000, 5]], applied: 0, expected: 0 },
    { name: "applied exactly the watermark", reports: [[1000, 5]], applied: 5, expected: 1000 },
    {
      name: "applied between two watermarks",
      reports: [
        [1000, 5],
        [2000, 9],
      ],
      applied: 7,
      expected: 1000,
    },
    {
      name: "applied past every watermark",
      reports: [
        [1000, 5],
        [2000, 9],
      ],
      applied: 9,
      expected: 2000,
    },
    {
      name: "an idle agent moves the time of the same seq",
      reports: [
        [1000, 5],
        [2000, 5],
        [3000, 5],
      ],
      applied: 5,
      expected: 3000,
    },
    {
      name: "a report older than the last is ignored",
      reports: [
        [3000, 5],
        [2000, 9],
      ],
      applied: 9,
      expected: 3000,
    },
  ];
  for (const { name, reports, applied, expected } of cases) {
    it(name, () => {
      const progress = new AgentProgress();
      for (const [time, seq] of reports) progress.record(report(time, seq), time);
      assert.equal(progress.recoveryTimeAt(applied), expected);
    });
  }

  it("never goes back in time when the applied seq is asked again", () => {
    const progress = new AgentProgress();
    progress.record(report(1000, 5), 1000);
    progress.record(report(2000, 9), 2000);
    assert.equal(progress.recoveryTimeAt(9), 2000);
    assert.equal(progress.recoveryTimeAt(5), 2000);
    progress.record(report(3000, 9), 3000);
    assert.equal(progress.recoveryTimeAt(9), 3000);
  });
});
