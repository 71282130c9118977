// When a needed resync runs, decided on the reconcile's clock (a FakeClock here): held while the
// policy's window is closed (Resynchronizing, the reason and the next opening), let go once the
// clock reaches the opening, windows across midnight and on some days only, an unknown time zone
// refused with the field named, and Manual policies waiting for `kubectl dr resync`.
import { strict as assert } from "node:assert";
import type { ProtectedMachine, ReplicationPolicy, ResyncStatus } from "../../src/api/types.js";
import type { Plan } from "../../src/controllers/protectedmachine/plan.js";
import { driveResync, type ResyncDeps } from "../../src/controllers/protectedmachine/resync.js";
import type { VolumeObservation } from "../../src/controllers/protectedmachine/status.js";
import type { ControlStatus } from "../../src/gen/ksr/replication/v1/replication.js";
import { silentLogger, type ReconcileContext } from "../../src/runtime/index.js";
import { controlStatus } from "../fixture/control-status.js";
import { shopReversed } from "../fixture/failoverrun-world.js";
import { FakeClock } from "../fixture/fake-clock.js";
import { resyncPolicy } from "../fixture/writer.js";

type Resync = ReplicationPolicy["spec"]["resync"];

/** The stream's process server says a resync is required (the request or a lost cache made it so). */
const control = (fields: Partial<ControlStatus> = {}): ControlStatus =>
  controlStatus({ machineId: "db-data", resyncRequired: true, ...fields });

const machine = (resync?: ResyncStatus, requestedAt?: string): ProtectedMachine => ({
  apiVersion: "dr.ksr.io/v1alpha1",
  kind: "ProtectedMachine",
  metadata: {
    name: "db",
    namespace: "shop",
    ...(requestedAt === undefined ? {} : { annotations: { "dr.ksr.io/resync-requested-at": requestedAt } }),
  },
  spec: {
    policyRef: { name: "nightly" },
    source: { workloadRef: { kind: "StatefulSet", name: "db" } },
    target: { site: "recovery", namespace: "shop-recovery" },
    paused: false,
  },
  status: {
    phase: "Protected",
    initialReplication: { completionTime: "2026-11-30T00:00:00Z", progressPercent: 100 },
    ...(resync === undefined ? {} : { resync }),
  },
});

const plan = (resync: Resync): Plan => ({
  policy: resyncPolicy("nightly", "shop", resync),
  volumes: [
    {
      statusName: "data-0",
      volumeName: "data",
      claimName: "data-db-0",
      replicaClaimName: "data-db-0",
      machineId: "db-data",
    },
  ],
  processServer: "ksr-ps",
  masterTarget: { name: "ksr-mt", namespace: "shop-recovery" },
  agents: [],
});

const volume = (fields?: Partial<ControlStatus>): VolumeObservation => ({
  statusName: "data-0",
  claimName: "data-db-0",
  replicaClaimName: "data-db-0",
  control: control(fields),
});

/** The process server's resync controls, as calls recorded. */
function recordingDeps(): ResyncDeps & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    replicators: {
      requestResync: (_peer, machineId) => {
        calls.push(`request ${machineId}`);
        return Promise.resolve();
      },
      holdResync: (_peer, machineId, held) => {
        calls.push(`${held ? "hold" : "release"} ${machineId}`);
        return Promise.resolve();
      },
    },
  };
}

/** A reconcile context whose clock reads `iso`. */
async function at(iso: string): Promise<{ clock: FakeClock; context: ReconcileContext }> {
  const clock = new FakeClock();
  await clock.advance(Date.parse(iso));
  return { clock, context: { clock, log: silentLogger, retries: 0, signal: new AbortController().signal } };
}

// 2026-12-04 is a Friday; Berlin is UTC+1 and New York UTC-5 in December.
const office: Resync = { mode: "Automatic", window: { start: "09:00", end: "17:00", timeZone: "America/New_York" } };
const fridayNight: Resync = {
  mode: "Automatic",
  window: { start: "22:00", end: "06:00", timeZone: "Europe/Berlin", days: ["Friday"] },
};

describe("the resync on the reconcile's clock", () => {
  const cases: {
    name: string;
    resync: Resync;
    now: string;
    state: "Running" | "Waiting";
    nextStartTime?: string;
    reason?: string;
    calls: string[];
  }[] = [
    {
      name: "no window: at once",
      resync: { mode: "Automatic" },
      now: "2026-12-01T03:00:00Z",
      state: "Running",
      calls: [],
    },
    {
      name: "window closed (08:59 New York): held, the next opening named",
      resync: office,
      now: "2026-12-01T13:59:00Z",
      state: "Waiting",
      nextStartTime: "2026-12-01T14:00:00Z",
      reason: "ResyncWaitingForWindow",
      calls: ["hold db-data"],
    },
    {
      name: "window open (09:00 New York): runs",
      resync: office,
      now: "2026-12-01T14:00:00Z",
      state: "Running",
      calls: [],
    },
    {
      name: "end exclusive (17:00 New York): held until tomorrow's opening",
      resync: office,
      now: "2026-12-01T22:00:00Z",
      state: "Waiting",
      nextStartTime: "2026-12-02T14:00:00Z",
      reason: "ResyncWaitingForWindow",
      calls: ["hold db-data"],
    },
    {
      name: "across midnight: Saturday 05:59 Berlin is still Friday's window",
      resync: fridayNight,
      now: "2026-12-05T04:59:00Z",
      state: "Running",
      calls: [],
    },
    {
      name: "across midnight: Saturday 06:00 Berlin closed until next Friday",
      resync: fridayNight,
      now: "2026-12-05T05:00:00Z",
      state: "Waiting",
      nextStartTime: "2026-12-11T21:00:00Z",
      reason: "ResyncWaitingForWindow",
      calls: ["hold db-data"],
    },
    {
      name: "not a window day: Thursday 22:30 Berlin",
      resync: fridayNight,
      now: "2026-12-03T21:30:00Z",
      state: "Waiting",
      nextStartTime: "2026-12-04T21:00:00Z",
      reason: "ResyncWaitingForWindow",
      calls: ["hold db-data"],
    },
    {
      name: "Manual without a request: held for kubectl dr resync",
      resync: { mode: "Manual", window: office.window },
      now: "2026-12-01T15:00:00Z",
      state: "Waiting",
      reason: "ResyncWaitingForRequest",
      calls: ["hold db-data"],
    },
  ];
  for (const c of cases)
    it(c.name, async () => {
      const deps = recordingDeps();
      const { context } = await at(c.now);
      const observed = await driveResync(deps, machine(), plan(c.resync), [volume()], 0, context);
      assert.equal(observed.status?.state, c.state);
      assert.equal(observed.status.nextStartTime, c.nextStartTime);
      assert.equal(observed.waiting?.reason, c.reason);
      if (c.state === "Running") assert.equal(observed.status.startTime, c.now);
      assert.deepEqual(deps.calls, c.calls);
      const warned = observed.events.filter((event) => event.type === "Warning").map((event) => event.reason);
      assert.deepEqual(warned, c.reason === undefined ? [] : [c.reason], "one Warning Event says why it waits");
    });

  it("lets a held resync go once the clock reaches the window's opening, and says the time while it waits", async () => {
    const deps = recordingDeps();
    const { clock, context } = await at("2026-12-04T20:58:30Z"); // Friday 21:58:30 Berlin
    const held = await driveResync(deps, machine(), plan(fridayNight), [volume()], 0, context);
    assert.equal(held.status?.state, "Waiting");
    assert.equal(held.status.nextStartTime, "2026-12-04T21:00:00Z");
    assert.match(
      held.waiting?.message ?? "",
      /resync window \(22:00-06:00 Europe\/Berlin, Friday\) opens at 2026-12-04T21:00:00Z; .*the RPO grows/,
    );
    await clock.advance(60_000); // 21:59:30: still closed, no second Warning
    const still = await driveResync(
      deps,
      machine(held.status),
      plan(fridayNight),
      [volume({ resyncHeld: true })],
      0,
      context,
    );
    assert.equal(still.status?.state, "Waiting");
    assert.deepEqual(still.events, []);
    await clock.advance(30_000); // 22:00:00
    const running = await driveResync(
      deps,
      machine(still.status),
      plan(fridayNight),
      [volume({ resyncHeld: true, syncing: true, syncBytesTotal: 100, syncBytesDone: 40 })],
      7,
      context,
    );
    assert.deepEqual(running.status, {
      state: "Running",
      reason: "every volume is being compared with its replica; only differing blocks are sent",
      startTime: "2026-12-04T21:00:00Z",
      bytesTotal: 100,
      bytesCompared: 40,
      bytesSent: 7,
    });
    assert.deepEqual(deps.calls, ["hold db-data", "release db-data"]);
    await clock.advance(5 * 60_000);
    const done = await driveResync(
      deps,
      machine(running.status),
      plan(fridayNight),
      [volume({ resyncRequired: false })],
      3,
      context,
    );
    assert.equal(done.status?.state, "Completed");
    assert.equal(done.status.completionTime, "2026-12-04T21:05:00Z");
    assert.equal(done.status.bytesSent, 10);
    assert.deepEqual(
      done.events.map((event) => event.reason),
      ["ResyncCompleted"],
    );
  });

  it("holds a requested resync under a closed window before ordering it, so the agent never starts it early", async () => {
    const deps = recordingDeps();
    const { context } = await at("2026-12-01T12:00:00Z"); // Tuesday: fridayNight is closed
    const requestedAt = "2026-12-01T11:59:59Z";
    // Just protected: the hold was never placed, and nothing is required yet.
    const observed = await driveResync(
      deps,
      machine(undefined, requestedAt),
      plan(fridayNight),
      [volume({ resyncRequired: false, resyncHeld: false })],
      0,
      context,
    );
    assert.equal(observed.status?.state, "Waiting");
    assert.deepEqual(deps.calls, ["hold db-data", "request db-data"]);
  });

  it("drops a waiting resync that is no longer required, with an Event, and keeps the request it served", async () => {
    const deps = recordingDeps();
    const { context } = await at("2026-12-01T12:00:00Z");
    const waiting: ResyncStatus = { state: "Waiting", requestedAt: "2026-12-01T11:00:00Z", reason: "window closed" };
    const observed = await driveResync(
      deps,
      machine(waiting, waiting.requestedAt),
      plan(fridayNight),
      [volume({ resyncRequired: false, resyncHeld: true })],
      0,
      context,
    );
    assert.deepEqual(observed.status, { requestedAt: "2026-12-01T11:00:00Z" });
    assert.equal(observed.waiting, undefined);
    assert.deepEqual(
      observed.events.map((event) => `${event.type} ${event.reason}`),
      ["Normal ResyncNoLongerNeeded"],
    );
  });

  it("refuses a window in a time zone the operator does not know, naming the field, and holds nothing", async () => {
    const deps = recordingDeps();
    const { context } = await at("2026-12-01T12:00:00Z");
    const resync: Resync = {
      mode: "Automatic",
      window: { start: "22:00", end: "06:00", timeZone: "Mars/Olympus_Mons" },
    };
    const observed = await driveResync(deps, machine(), plan(resync), [volume()], 0, context);
    assert.equal(observed.waiting?.reason, "InvalidResyncWindow");
    assert.match(observed.waiting.message, /spec\.resync\.window\.timeZone "Mars\/Olympus_Mons" is not a time zone/);
    assert.deepEqual(deps.calls, []);
  });

  it("serves kubectl dr resync under a Manual policy once: requested, released, and not again for the same request", async () => {
    const deps = recordingDeps();
    const { context } = await at("2026-12-01T12:00:00Z");
    const requestedAt = "2026-12-01T11:59:59Z";
    const manual: Resync = { mode: "Manual" };
    const first = await driveResync(
      deps,
      machine(undefined, requestedAt),
      plan(manual),
      [volume({ resyncRequired: false, resyncHeld: true })],
      0,
      context,
    );
    assert.equal(first.status?.state, "Running");
    assert.equal(first.status.requestedAt, requestedAt);
    assert.deepEqual(deps.calls, ["release db-data", "request db-data"]);
    assert.deepEqual(
      first.events.map((event) => event.reason),
      ["ResyncRequested"],
    );
    const completed = { ...first.status, state: "Completed" as const };
    deps.calls.length = 0;
    const again = await driveResync(deps, machine(completed, requestedAt), plan(manual), [volume()], 0, context);
    assert.equal(again.waiting?.reason, "ResyncWaitingForRequest", "a served request does not run twice");
    assert.deepEqual(deps.calls, ["hold db-data"]);
  });

  describe("in a new epoch (a reprotect's comparison)", () => {
    /** Reversed into epoch 1; `initialEpoch` is the epoch of the completed initial replication status holds. */
    const reversed = (initialEpoch: number, resync?: ResyncStatus): ProtectedMachine => {
      const base = machine(resync);
      return {
        ...base,
        status: {
          ...base.status,
          initialReplication: { completionTime: "2026-11-30T00:00:00Z", progressPercent: 100, epoch: initialEpoch },
          replication: shopReversed,
        },
      };
    };
    const closed = "2026-12-01T12:00:00Z"; // Tuesday 13:00 Berlin: fridayNight is closed

    it("is not held by a closed window while the completed initial replication is the ended epoch's", async () => {
      const deps = recordingDeps();
      const { context } = await at(closed);
      const observed = await driveResync(deps, reversed(0), plan(fridayNight), [volume()], 0, context);
      assert.equal(observed.waiting, undefined);
      assert.equal(observed.status?.state, undefined);
      assert.deepEqual(deps.calls, []);
    });

    it("lets go of a hold placed before the epoch's first status, and forgets the ended epoch's wait", async () => {
      const deps = recordingDeps();
      const { context } = await at(closed);
      const waited: ResyncStatus = {
        state: "Waiting",
        reason: "a resync is needed",
        completionTime: "2026-11-29T00:00:00Z",
      };
      const observed = await driveResync(
        deps,
        reversed(0, waited),
        plan(fridayNight),
        [volume({ resyncHeld: true })],
        0,
        context,
      );
      assert.deepEqual(deps.calls, ["release db-data"]);
      assert.deepEqual(observed.status, { completionTime: "2026-11-29T00:00:00Z" });
      assert.equal(observed.waiting, undefined);
    });

    it("holds a resync again once the new epoch was protected (the window applies to later resyncs)", async () => {
      const deps = recordingDeps();
      const { context } = await at(closed);
      const observed = await driveResync(deps, reversed(1), plan(fridayNight), [volume()], 0, context);
      assert.equal(observed.status?.state, "Waiting");
      assert.deepEqual(deps.calls, ["hold db-data"]);
    });
  });
});
