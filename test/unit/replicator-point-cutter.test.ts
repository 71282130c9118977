// The agent's cut state machine against a scripted capture stream (our own interface): what each
// cut records, and barrier calls out of order.
import { strict as assert } from "node:assert";
import type { MarkerOp } from "../../src/replicator/journal/change.js";
import { consistencyToWire, type PointConsistency } from "../../src/replicator/journal/point.js";
import type { QuiesceHook } from "../../src/replicator/journal/quiesce.js";
import {
  CaptureLock,
  CutStateError,
  PointCutter,
  type CaptureStream,
  type CutFlush,
} from "../../src/replicator/agent/point-cutter.js";

class ScriptedStream implements CaptureStream {
  markers: MarkerOp[] = [];
  /** Writes held and not yet let go. */
  holding = false;
  releases = 0;
  /**
   * `hold`: the capture can hold writes (write ranges), and a group member's hold lasts until
   * Mark ("lasts") or lapses before it ("lapses").
   */
  constructor(
    private readonly writesInFlight: boolean,
    private readonly hold: "none" | "lasts" | "lapses" = "none",
  ) {}
  whenReady(): Promise<void> {
    return Promise.resolve();
  }
  flushForCut(group: boolean): Promise<CutFlush> {
    const writesHeld = group && this.hold !== "none" && !this.writesInFlight;
    this.holding = writesHeld;
    return Promise.resolve({ writesInFlight: this.writesInFlight, writesHeld });
  }
  releaseWrites(): Promise<boolean> {
    assert.ok(this.holding, "only held writes are released");
    this.holding = false;
    this.releases++;
    return Promise.resolve(this.hold === "lasts");
  }
  emitMarker(marker: MarkerOp): Promise<number> {
    this.markers.push(marker);
    return Promise.resolve(100 + this.markers.length);
  }
  waitApplied(): Promise<void> {
    return Promise.resolve();
  }
}

const quiet = { info: () => undefined, warn: () => undefined };
const ok: QuiesceHook = { name: "ok", pre: { kind: "command", argv: ["true"] }, timeoutMs: 5000 };
const failing: QuiesceHook = { name: "bad", pre: { kind: "command", argv: ["false"] }, timeoutMs: 5000 };

function marker(id: string, consistency: PointConsistency): MarkerOp {
  return { id, consistency: consistencyToWire(consistency), timeUnixMs: 1, consistencyGroup: "g" };
}

describe("agent: cutting recovery points", () => {
  const cases: {
    what: string;
    requested: PointConsistency;
    hooks: QuiesceHook[];
    inFlight: boolean;
    own: PointConsistency;
    asMember: PointConsistency;
    hold?: "lasts" | "lapses";
  }[] = [
    {
      what: "a quiet crash cut",
      requested: "crash",
      hooks: [],
      inFlight: false,
      own: "crash",
      asMember: "best-effort",
    },
    {
      what: "writes in flight",
      requested: "crash",
      hooks: [],
      inFlight: true,
      own: "best-effort",
      asMember: "best-effort",
    },
    { what: "app with hooks", requested: "app", hooks: [ok], inFlight: false, own: "app", asMember: "app" },
    {
      what: "app, hooks but writes in flight",
      requested: "app",
      hooks: [ok],
      inFlight: true,
      own: "best-effort",
      asMember: "best-effort",
    },
    { what: "app without hooks", requested: "app", hooks: [], inFlight: false, own: "crash", asMember: "best-effort" },
    {
      what: "a quiet crash cut holding writes until Mark",
      requested: "crash",
      hooks: [],
      inFlight: false,
      own: "crash",
      asMember: "crash",
      hold: "lasts",
    },
    {
      what: "a write hold that lapsed before Mark",
      requested: "crash",
      hooks: [],
      inFlight: false,
      own: "crash",
      asMember: "best-effort",
      hold: "lapses",
    },
    {
      what: "writes in flight although the capture can hold",
      requested: "crash",
      hooks: [],
      inFlight: true,
      own: "best-effort",
      asMember: "best-effort",
      hold: "lasts",
    },
    {
      what: "app, a hook failed",
      requested: "app",
      hooks: [ok, failing],
      inFlight: false,
      own: "crash",
      asMember: "best-effort",
    },
  ];
  for (const { what, requested, hooks, inFlight, own, asMember, hold } of cases)
    it(`records ${own} (${asMember} as a group member) for ${what}`, async () => {
      const stream = new ScriptedStream(inFlight, hold);
      const cutter = new PointCutter("m1", new CaptureLock(), stream, hooks, quiet);
      const report = await cutter.cut(requested, true);
      assert.equal(report.consistency, own);
      assert.equal(stream.markers[0]?.consistency, consistencyToWire(own), "the stream's marker says the same");
      const held = await cutter.hold("group-cut", requested, { timeoutMs: 5000, group: true });
      // A hold that lapses is only found out at Mark: the Hold reply still says what was held.
      assert.equal(held.memberConsistency, hold === "lapses" ? own : asMember);
      const marked = await cutter.mark("group-cut", marker("group-cut", requested), true);
      assert.equal(marked.consistency, asMember);
      assert.equal(stream.holding, false, "writes held for the group are let go at Mark");
      await cutter.release("group-cut");
      assert.equal(stream.releases, hold !== undefined && !inFlight ? 1 : 0);
    });

  it("lets held writes go when a group cut is released without a Mark, and when it expires", async () => {
    const stream = new ScriptedStream(false, "lasts");
    const cutter = new PointCutter("m1", new CaptureLock(), stream, [], quiet);
    await cutter.hold("unmarked", "crash", { timeoutMs: 5000, group: true });
    assert.equal(stream.holding, true);
    await cutter.release("unmarked");
    assert.equal(stream.holding, false);
    await cutter.hold("expiring", "crash", { timeoutMs: 50, group: true });
    assert.equal(stream.holding, true);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(stream.holding, false, "a hold the coordinator forgot ends with the cut's own timeout");
    await assert.rejects(cutter.mark("expiring", marker("expiring", "crash"), false), CutStateError);
  });

  it("never marks more than the coordinator asked for", async () => {
    const stream = new ScriptedStream(false);
    const cutter = new PointCutter("m1", new CaptureLock(), stream, [ok], quiet);
    await cutter.hold("c", "app", { timeoutMs: 5000, group: true });
    await cutter.mark("c", marker("c", "crash"), false);
    await cutter.release("c");
    assert.equal(stream.markers[0]?.consistency, consistencyToWire("crash"));
  });

  it("refuses a second hold, a mark of another cut and a bad marker; releasing twice is harmless", async () => {
    const cutter = new PointCutter("m1", new CaptureLock(), new ScriptedStream(false), [], quiet);
    await cutter.hold("first", "crash", { timeoutMs: 5000, group: true });
    await assert.rejects(cutter.hold("second", "crash", { timeoutMs: 5000, group: true }), CutStateError);
    await assert.rejects(cutter.mark("second", marker("second", "crash"), false), /no cut second is held/);
    await assert.rejects(cutter.mark("first", marker("", "crash"), false), /point id must be/);
    await cutter.release("first");
    assert.deepEqual(await cutter.release("first"), []);
    await assert.rejects(cutter.mark("first", marker("first", "crash"), false), CutStateError);
    await cutter.hold("second", "crash", { timeoutMs: 5000, group: true });
    await cutter.release("second");
  });

  it("never logs hook credentials: env values and URL passwords", async () => {
    const logged: string[] = [];
    const log = { info: (line: string) => logged.push(line), warn: (line: string) => logged.push(line) };
    const hooks: QuiesceHook[] = [
      { name: "web", pre: { kind: "http", url: "http://admin:hunter2@127.0.0.1:1/freeze" }, timeoutMs: 2000 },
      {
        name: "db",
        pre: { kind: "command", argv: ["sh", "-c", "exit 4"], env: { PGPASSWORD: "hunter3" } },
        timeoutMs: 2000,
      },
    ];
    for (const hook of hooks) {
      const cutter = new PointCutter("m1", new CaptureLock(), new ScriptedStream(false), [hook], log);
      const report = await cutter.cut("app", true);
      assert.equal(report.consistency, "crash");
      assert.deepEqual(report.failedHooks, [`${hook.name} (pre)`]);
      assert.doesNotMatch(JSON.stringify(report.hooks), /hunter/);
    }
    assert.ok(logged.some((line) => line.includes('quiesce hook "web" pre failed')));
    assert.ok(logged.some((line) => line.includes('quiesce hook "db" pre failed: exited with code 4')));
    assert.doesNotMatch(logged.join("\n"), /hunter/);
  });

  it("holds the capture lock from hold to release", async () => {
    const lock = new CaptureLock();
    const cutter = new PointCutter("m1", lock, new ScriptedStream(false), [], quiet);
    await cutter.hold("c", "crash", { timeoutMs: 5000, group: true });
    let captured = false;
    const round = lock.run(() => {
      captured = true;
      return Promise.resolve();
    });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(captured, false, "the capture loop waits while the cut is held");
    await cutter.release("c");
    await round;
    assert.equal(captured, true);
  });
});
