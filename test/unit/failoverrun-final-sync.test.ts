// When a planned failover's final sync is done: by sequence numbers, from an agent report
// observed after the source stopped, never by comparing whole-second times.
import { strict as assert } from "node:assert";
import type { VolumeStatus } from "../../src/api/types.js";
import { finalSyncState } from "../../src/controllers/failoverrun/steps/builtin.js";

const stopped = "2026-12-01T10:00:00Z";
const volume = (changes: Partial<VolumeStatus>): VolumeStatus => ({
  name: "data",
  claimName: "data-db-0",
  replicaClaimName: "data-db-0",
  ...changes,
});

const cases: readonly {
  name: string;
  volumes: VolumeStatus[];
  stoppedAt?: string;
  done: boolean;
  says: RegExp;
}[] = [
  {
    name: "applied at the captured seq of a report after the stop",
    volumes: [volume({ lastAppliedSequence: 120, capturedSequence: 120, capturedTime: "2026-12-01T10:00:01.200Z" })],
    done: true,
    says: /data@120 >= 120/,
  },
  {
    name: "applied beyond it (a marker after the stop)",
    volumes: [volume({ lastAppliedSequence: 121, capturedSequence: 120, capturedTime: "2026-12-01T10:00:03Z" })],
    done: true,
    says: /data@121 >= 120/,
  },
  {
    name: "changes captured but not all applied",
    volumes: [volume({ lastAppliedSequence: 118, capturedSequence: 120, capturedTime: "2026-12-01T10:00:02Z" })],
    done: false,
    says: /data: seq 118 of 120 applied/,
  },
  {
    // The stop's time is whole seconds, rounded down: a report in that second may predate the stop.
    name: "a report in the stop's own second does not count, even with everything applied",
    volumes: [volume({ lastAppliedSequence: 120, capturedSequence: 120, capturedTime: "2026-12-01T10:00:00.900Z" })],
    done: false,
    says: /waiting for its agent's first report after the stop/,
  },
  {
    name: "a report from before the stop",
    volumes: [volume({ lastAppliedSequence: 120, capturedSequence: 120, capturedTime: "2026-12-01T09:59:58Z" })],
    done: false,
    says: /first report after the stop/,
  },
  {
    name: "no report at all",
    volumes: [volume({ lastAppliedSequence: 120, pendingBytes: 0 })],
    done: false,
    says: /no report from its agent yet/,
  },
  {
    name: "every volume must be caught up",
    volumes: [
      volume({ lastAppliedSequence: 120, capturedSequence: 120, capturedTime: "2026-12-01T10:00:02Z" }),
      volume({ name: "logs", lastAppliedSequence: 40, capturedSequence: 41, capturedTime: "2026-12-01T10:00:02Z" }),
    ],
    done: false,
    says: /^logs: seq 40 of 41 applied$/,
  },
  { name: "no volume listed", volumes: [], done: false, says: /lists no volume/ },
  {
    name: "the source not stopped",
    volumes: [volume({ lastAppliedSequence: 1, capturedSequence: 1, capturedTime: "2026-12-01T10:00:02Z" })],
    stoppedAt: "",
    done: false,
    says: /not been stopped/,
  },
];

describe("the final sync of a planned failover, by sequence numbers", () => {
  for (const { name, volumes, stoppedAt, done, says } of cases)
    it(name, () => {
      const state = finalSyncState(volumes, stoppedAt === "" ? undefined : (stoppedAt ?? stopped));
      assert.equal(state.done, done, state.message);
      assert.match(state.message, says);
    });
});
