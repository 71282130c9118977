import { strict as assert } from "node:assert";
import { isConditionTrue } from "../../src/runtime/conditions.js";
import { predicates, type WatchedEvent } from "../../src/runtime/controller.js";
import { validateLeaderElection } from "../../src/runtime/leader-election.js";
import type { KubeObject } from "../../src/runtime/objects.js";

const object = (generation: number, labels?: Record<string, string>): KubeObject => ({
  metadata: { name: "x", generation, labels },
});
const update = (old: KubeObject, now: KubeObject): WatchedEvent<KubeObject> => ({ type: "update", old, object: now });

describe("runtime/predicates", () => {
  const cases: [string, (event: WatchedEvent<KubeObject>) => boolean, WatchedEvent<KubeObject>, boolean][] = [
    ["generationChanged passes adds", predicates.generationChanged, { type: "add", object: object(1) }, true],
    ["generationChanged passes deletes", predicates.generationChanged, { type: "delete", object: object(1) }, true],
    ["generationChanged passes a spec change", predicates.generationChanged, update(object(1), object(2)), true],
    ["generationChanged drops a status-only change", predicates.generationChanged, update(object(2), object(2)), false],
    ["labelsChanged passes a new label", predicates.labelsChanged, update(object(1), object(1, { a: "1" })), true],
    [
      "labelsChanged passes a changed value",
      predicates.labelsChanged,
      update(object(1, { a: "1" }), object(1, { a: "2" })),
      true,
    ],
    [
      "labelsChanged passes a removed label",
      predicates.labelsChanged,
      update(object(1, { a: "1", b: "2" }), object(1, { a: "1" })),
      true,
    ],
    [
      "labelsChanged drops equal labels",
      predicates.labelsChanged,
      update(object(1, { a: "1" }), object(2, { a: "1" })),
      false,
    ],
    [
      "any passes when one passes",
      predicates.any(predicates.generationChanged, predicates.labelsChanged),
      update(object(1), object(1, { a: "1" })),
      true,
    ],
    [
      "any drops when none passes",
      predicates.any(predicates.generationChanged, predicates.labelsChanged),
      update(object(1), object(1)),
      false,
    ],
  ];
  for (const [name, predicate, event, expected] of cases) {
    it(name, () => {
      assert.equal(predicate(event), expected);
    });
  }
});

describe("runtime/leader-election options", () => {
  const good = {
    leaseName: "l",
    leaseNamespace: "ns",
    identity: "me",
    leaseDurationMs: 15_000,
    renewDeadlineMs: 10_000,
    retryPeriodMs: 2000,
  };
  const cases: [string, Partial<typeof good>, RegExp | undefined][] = [
    ["accepts client-go's defaults", {}, undefined],
    [
      "rejects renewDeadline ≥ leaseDuration (two leaders at once)",
      { renewDeadlineMs: 15_000 },
      /must exceed renewDeadline/,
    ],
    ["rejects retryPeriod too close to renewDeadline", { retryPeriodMs: 9000 }, /1.2 × retryPeriod/],
    ["rejects an empty identity", { identity: "" }, /identity/],
  ];
  for (const [name, change, error] of cases) {
    it(name, () => {
      if (error === undefined) validateLeaderElection({ ...good, ...change });
      else
        assert.throws(() => {
          validateLeaderElection({ ...good, ...change });
        }, error);
    });
  }
});

describe("runtime/conditions isConditionTrue", () => {
  it("is true only for a True condition of that type", () => {
    const conditions = [
      { type: "Ready", status: "True" as const, reason: "Ok", message: "", lastTransitionTime: "2026-01-01T00:00:00Z" },
    ];
    assert.equal(isConditionTrue(conditions, "Ready"), true);
    assert.equal(isConditionTrue(conditions, "Synced"), false);
    assert.equal(isConditionTrue([{ ...conditions[0]!, status: "Unknown" }], "Ready"), false);
    assert.equal(isConditionTrue(undefined, "Ready"), false);
  });
});
