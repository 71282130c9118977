import { strict as assert } from "node:assert";
import { setCondition, type Condition, type ConditionUpdate } from "../../src/runtime/conditions.js";

const t0 = Date.parse("2026-01-01T00:00:00Z");
const t1 = Date.parse("2026-01-01T00:05:00.750Z");
const ready = (status: Condition["status"], reason: string, time: string, generation?: number): Condition => ({
  type: "Ready",
  status,
  reason,
  message: "",
  lastTransitionTime: time,
  ...(generation === undefined ? {} : { observedGeneration: generation }),
});

describe("runtime/conditions", () => {
  const cases: {
    name: string;
    before: Condition[] | undefined;
    update: ConditionUpdate;
    generation?: number;
    after: Condition[];
  }[] = [
    {
      name: "adds a new condition stamped now (second precision)",
      before: undefined,
      update: { type: "Ready", status: "False", reason: "Creating" },
      generation: 1,
      after: [ready("False", "Creating", "2026-01-01T00:05:00Z", 1)],
    },
    {
      name: "keeps lastTransitionTime when only reason, message or generation change",
      before: [ready("False", "Creating", "2026-01-01T00:00:00Z", 1)],
      update: { type: "Ready", status: "False", reason: "Waiting", message: "pods pending" },
      generation: 2,
      after: [{ ...ready("False", "Waiting", "2026-01-01T00:00:00Z", 2), message: "pods pending" }],
    },
    {
      name: "moves lastTransitionTime when the status changes",
      before: [ready("False", "Creating", "2026-01-01T00:00:00Z", 1)],
      update: { type: "Ready", status: "True", reason: "Available" },
      generation: 1,
      after: [ready("True", "Available", "2026-01-01T00:05:00Z", 1)],
    },
    {
      name: "leaves other conditions alone and in place",
      before: [
        { ...ready("True", "Available", "2026-01-01T00:00:00Z"), type: "Synced" },
        ready("True", "Available", "2026-01-01T00:00:00Z"),
      ],
      update: { type: "Synced", status: "False", reason: "Lagging" },
      after: [
        { ...ready("False", "Lagging", "2026-01-01T00:05:00Z"), type: "Synced" },
        ready("True", "Available", "2026-01-01T00:00:00Z"),
      ],
    },
  ];
  for (const { name, before, update, generation, after } of cases) {
    it(name, () => {
      const snapshot = structuredClone(before);
      assert.deepEqual(setCondition(before, update, { observedGeneration: generation, now: t1 }), after);
      assert.deepEqual(before, snapshot, "the input list is not modified");
    });
  }

  it("is idempotent: applying the same update twice gives equal lists (so status writes are skipped)", () => {
    const once = setCondition([], { type: "Ready", status: "True", reason: "Available" }, { now: t0 });
    const twice = setCondition(once, { type: "Ready", status: "True", reason: "Available" }, { now: t1 });
    assert.deepEqual(twice, once);
  });

  for (const [field, update] of [
    ["reason with a space", { type: "Ready", status: "True", reason: "Not Ready" }],
    ["empty reason", { type: "Ready", status: "True", reason: "" }],
    ["type with a space", { type: "Is Ready", status: "True", reason: "Ok" }],
  ] as const) {
    it(`rejects a ${field}, which the API server would refuse`, () => {
      assert.throws(() => setCondition([], update, { now: t0 }), /not a valid|must be CamelCase/);
    });
  }
});
