import { strict as assert } from "node:assert";
import type { V1ContainerStatus, V1Pod } from "@kubernetes/client-node";
import {
  coldStart,
  podPhase,
  podStatus,
  restartDelayMs,
  shouldRestart,
  type ContainerPhase,
  type ContainerView,
  type PodView,
  type TerminatedPhase,
} from "../../../src/local/node/pod-status.js";

const t0 = new Date("2026-01-01T00:00:00Z");
const waiting: ContainerPhase = { kind: "waiting", reason: "ContainerCreating" };
const running: ContainerPhase = { kind: "running", startedAt: t0 };
const exited = (exitCode: number): ContainerPhase => ({
  kind: "terminated",
  exitCode,
  reason: exitCode === 0 ? "Completed" : "Error",
  startedAt: t0,
  finishedAt: t0,
});

function container(state: ContainerPhase, extra: Partial<ContainerView> = {}): ContainerView {
  return {
    name: "c",
    image: "busybox",
    imageID: "",
    state,
    restartCount: 0,
    ready: false,
    started: false,
    finished: false,
    ...extra,
  };
}
function view(containers: ContainerView[], initContainers: ContainerView[] = [], initFailed = false): PodView {
  return {
    podIP: "127.5.0.1",
    hostIP: "127.0.0.1",
    startTime: t0,
    sandboxReady: true,
    containers,
    initContainers,
    initFailed,
  };
}

describe("local node pod status", () => {
  const phases: [string, PodView, string][] = [
    ["a container not started yet", view([container(waiting)]), "Pending"],
    ["an init container still running", view([container(waiting)], [container(running)]), "Pending"],
    [
      "an init container failed for good",
      view([container(waiting)], [container(exited(1), { finished: true })], true),
      "Failed",
    ],
    ["a running container", view([container(running)]), "Running"],
    ["one running, one done", view([container(running), container(exited(0), { finished: true })]), "Running"],
    [
      "a container in back-off after a crash",
      view([
        container(
          { kind: "waiting", reason: "CrashLoopBackOff" },
          { lastTermination: exited(1) as Extract<ContainerPhase, { kind: "terminated" }> },
        ),
      ]),
      "Running",
    ],
    ["a container exited 1 that will restart", view([container(exited(1))]), "Running"],
    [
      "all exited 0 for good",
      view([container(exited(0), { finished: true }), container(exited(0), { finished: true })]),
      "Succeeded",
    ],
    [
      "one exited 1 for good",
      view([container(exited(0), { finished: true }), container(exited(1), { finished: true })]),
      "Failed",
    ],
  ];
  for (const [what, podView, phase] of phases) {
    it(`is ${phase} with ${what}`, () => {
      assert.equal(podPhase(podView), phase);
    });
  }

  const restarts: [string | undefined, number, boolean][] = [
    [undefined, 0, true],
    ["Always", 0, true],
    ["OnFailure", 0, false],
    ["OnFailure", 2, true],
    ["Never", 2, false],
  ];
  for (const [policy, exitCode, expected] of restarts) {
    it(`restartPolicy ${policy ?? "(default)"} with exit ${exitCode} restarts: ${expected}`, () => {
      assert.equal(shouldRestart(policy, exitCode), expected);
    });
  }

  it("restarts at once the first time, then doubles the back-off up to the cap", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 10].map((n) => restartDelayMs(n, 10_000, 300_000)),
      [0, 10_000, 20_000, 40_000, 300_000],
    );
  });

  it("keeps conditions it does not own and transition times of unchanged ones", () => {
    const before = new Date("2025-12-31T00:00:00Z");
    const pod: V1Pod = {
      spec: { containers: [] },
      status: {
        conditions: [
          { type: "PodScheduled", status: "True", lastTransitionTime: before },
          { type: "Initialized", status: "True", lastTransitionTime: before },
        ],
      },
    };
    const status = podStatus(pod, view([container(running, { ready: true, started: true })]), t0);
    const byType = Object.fromEntries((status.conditions ?? []).map((c) => [c.type, c]));
    assert.equal(byType.PodScheduled?.lastTransitionTime, before);
    assert.equal(byType.Initialized?.lastTransitionTime, before);
    assert.deepEqual([byType.Ready?.status, byType.Ready?.lastTransitionTime], ["True", t0]);
    assert.deepEqual(status.podIPs, [{ ip: "127.5.0.1" }]);
  });

  it("names unready containers and holds Ready for readiness gates", () => {
    const pod: V1Pod = { spec: { containers: [], readinessGates: [{ conditionType: "example.com/lb" }] } };
    const unready = podStatus(pod, view([container(running)]), t0).conditions?.find((c) => c.type === "Ready");
    assert.equal(unready?.message, "containers with unready status: [c]");
    const gated = podStatus(pod, view([container(running, { ready: true })]), t0).conditions?.find(
      (c) => c.type === "Ready",
    );
    assert.deepEqual([gated?.status, gated?.reason], ["False", "ReadinessGatesNotReady"]);
  });

  describe("a cold start (after ksr local down/up or a site's power loss)", () => {
    const t1 = new Date("2026-01-01T01:00:00Z");
    const status = (fields: Partial<V1ContainerStatus>): V1ContainerStatus => ({
      name: "main",
      image: "busybox",
      imageID: "",
      ready: false,
      restartCount: 2,
      ...fields,
    });
    const unknown: TerminatedPhase = {
      kind: "terminated",
      exitCode: 255,
      reason: "Unknown",
      startedAt: t0,
      finishedAt: t1,
    };
    const completed: TerminatedPhase = {
      kind: "terminated",
      exitCode: 0,
      reason: "Completed",
      startedAt: t0,
      finishedAt: t0,
    };
    const completedState = { exitCode: 0, reason: "Completed", startedAt: t0, finishedAt: t0 };
    const cases: [string, boolean, V1ContainerStatus | undefined, ReturnType<typeof coldStart>][] = [
      ["no status: a first start", false, undefined, { attempts: 0 }],
      [
        "never started (no container ID)",
        false,
        status({ state: { waiting: { reason: "ContainerCreating" } } }),
        { attempts: 0 },
      ],
      [
        "was running: exited 255 Unknown, numbered after its last run",
        false,
        status({ containerID: "ksr-local://u-main-3", state: { running: { startedAt: t0 } } }),
        { attempts: 3, phase: unknown, lastTermination: unknown },
      ],
      [
        "had exited: that exit is its last state",
        false,
        status({
          containerID: "ksr-local://u-main-1",
          state: { terminated: completedState },
        }),
        { attempts: 1, phase: completed, lastTermination: completed },
      ],
      [
        "in back-off: its last termination",
        false,
        status({
          containerID: "ksr-local://u-main-4",
          state: { waiting: { reason: "CrashLoopBackOff" } },
          lastState: { terminated: completedState },
        }),
        { attempts: 4, phase: completed, lastTermination: completed },
      ],
      [
        "a completed init container runs again",
        true,
        status({
          containerID: "ksr-local://u-main-1",
          state: { terminated: completedState },
        }),
        { attempts: 1, lastTermination: completed },
      ],
      [
        "another runtime's container ID: counted from restartCount",
        false,
        status({ containerID: "containerd://abc", state: { running: { startedAt: t0 } } }),
        { attempts: 3, phase: unknown, lastTermination: unknown },
      ],
    ];
    for (const [name, init, previous, expected] of cases)
      it(name, () => {
        assert.deepEqual(coldStart(init, previous, t1), expected);
      });
  });
});
