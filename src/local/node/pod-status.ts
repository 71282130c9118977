// Pod status from the node's view of its containers: phase, conditions and
// container statuses, computed as a pure function so the rules are testable.
import type {
  V1ContainerState,
  V1ContainerStateTerminated,
  V1ContainerStatus,
  V1Pod,
  V1PodCondition,
  V1PodStatus,
} from "@kubernetes/client-node";

export type ContainerPhase =
  | { kind: "waiting"; reason: string; message?: string }
  | { kind: "running"; startedAt: Date }
  | {
      kind: "terminated";
      exitCode: number;
      reason: string;
      message?: string;
      signal?: number;
      startedAt: Date;
      finishedAt: Date;
    };

export type TerminatedPhase = Extract<ContainerPhase, { kind: "terminated" }>;

export interface ContainerView {
  name: string;
  image: string;
  imageID: string;
  containerID?: string;
  state: ContainerPhase;
  lastTermination?: Extract<ContainerPhase, { kind: "terminated" }>;
  restartCount: number;
  ready: boolean;
  started: boolean;
  /** The container ended and its restart policy keeps it ended. */
  finished: boolean;
}

export interface PodView {
  podIP?: string;
  hostIP: string;
  startTime: Date;
  /** Volumes and address are in place (PodReadyToStartContainers). */
  sandboxReady: boolean;
  initContainers: ContainerView[];
  containers: ContainerView[];
  /** An init container failed for good (restartPolicy Never). */
  initFailed: boolean;
}

export function containerState(phase: ContainerPhase): V1ContainerState {
  switch (phase.kind) {
    case "waiting":
      return { waiting: { reason: phase.reason, ...(phase.message === undefined ? {} : { message: phase.message }) } };
    case "running":
      return { running: { startedAt: phase.startedAt } };
    case "terminated":
      return {
        terminated: {
          exitCode: phase.exitCode,
          reason: phase.reason,
          startedAt: phase.startedAt,
          finishedAt: phase.finishedAt,
          ...(phase.signal === undefined ? {} : { signal: phase.signal }),
          ...(phase.message === undefined ? {} : { message: phase.message }),
        },
      };
  }
}

function containerStatus(view: ContainerView): V1ContainerStatus {
  return {
    name: view.name,
    image: view.image,
    imageID: view.imageID,
    ...(view.containerID === undefined ? {} : { containerID: view.containerID }),
    state: containerState(view.state),
    lastState: view.lastTermination === undefined ? {} : containerState(view.lastTermination),
    ready: view.ready,
    started: view.started,
    restartCount: view.restartCount,
  };
}

const initDone = (view: PodView) =>
  view.initContainers.every((c) => c.state.kind === "terminated" && c.state.exitCode === 0);

/** The kubelet's phase rules (getPhase), for this node's simpler container states. */
export function podPhase(view: PodView): NonNullable<V1PodStatus["phase"]> {
  if (view.initFailed) return "Failed";
  if (!initDone(view)) return "Pending";
  const { containers } = view;
  if (containers.length === 0) return "Pending";
  const everStarted = (c: ContainerView) => c.state.kind !== "waiting" || c.lastTermination !== undefined;
  if (containers.some((c) => !everStarted(c))) return "Pending";
  if (containers.every((c) => c.state.kind === "terminated" && c.finished)) {
    return containers.every((c) => c.state.kind === "terminated" && c.state.exitCode === 0) ? "Succeeded" : "Failed";
  }
  return "Running";
}

function condition(
  type: string,
  ok: boolean,
  reason: string | undefined,
  message: string | undefined,
  previous: V1PodCondition[],
  now: Date,
): V1PodCondition {
  const status = ok ? "True" : "False";
  const before = previous.find((c) => c.type === type);
  return {
    type,
    status,
    lastProbeTime: undefined,
    lastTransitionTime:
      before?.status === status && before.lastTransitionTime !== undefined ? before.lastTransitionTime : now,
    ...(ok || reason === undefined ? {} : { reason }),
    ...(ok || message === undefined ? {} : { message }),
  };
}

const ownedConditions = new Set(["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"]);

export function podStatus(pod: V1Pod, view: PodView, now: Date = new Date()): V1PodStatus {
  const previous = pod.status?.conditions ?? [];
  const phase = podPhase(view);
  const unready = view.containers.filter((c) => !c.ready).map((c) => c.name);
  const incompleteInit = view.initContainers
    .filter((c) => !(c.state.kind === "terminated" && c.state.exitCode === 0))
    .map((c) => c.name);
  const gates = (pod.spec?.readinessGates ?? []).map((g) => g.conditionType);
  const gatesOpen = gates.every((type) => previous.some((c) => c.type === type && c.status === "True"));
  const completed = phase === "Succeeded" || phase === "Failed";
  const containersReady = unready.length === 0 && !completed;
  const unreadyMessage = `containers with unready status: [${unready.join(" ")}]`;
  const readyReason = completed ? "PodCompleted" : containersReady ? "ReadinessGatesNotReady" : "ContainersNotReady";
  const conditions = [
    ...previous.filter((c) => !ownedConditions.has(c.type)),
    condition("PodReadyToStartContainers", view.sandboxReady, undefined, undefined, previous, now),
    condition(
      "Initialized",
      incompleteInit.length === 0,
      "ContainersNotInitialized",
      `containers with incomplete status: [${incompleteInit.join(" ")}]`,
      previous,
      now,
    ),
    condition(
      "ContainersReady",
      containersReady,
      completed ? "PodCompleted" : "ContainersNotReady",
      unreadyMessage,
      previous,
      now,
    ),
    condition(
      "Ready",
      containersReady && gatesOpen,
      readyReason,
      completed ? undefined : unreadyMessage,
      previous,
      now,
    ),
  ];
  return {
    phase,
    conditions,
    hostIP: view.hostIP,
    hostIPs: [{ ip: view.hostIP }],
    ...(view.podIP === undefined ? {} : { podIP: view.podIP, podIPs: [{ ip: view.podIP }] }),
    startTime: view.startTime,
    initContainerStatuses: view.initContainers.map(containerStatus),
    containerStatuses: view.containers.map(containerStatus),
  };
}

/** Whether a container that ended should run again under the pod's restartPolicy. */
export function shouldRestart(restartPolicy: string | undefined, exitCode: number): boolean {
  if (restartPolicy === "Never") return false;
  if (restartPolicy === "OnFailure") return exitCode !== 0;
  return true;
}

/** Crash-loop back-off as the kubelet applies it: the first restart is immediate, then base doubling to a cap (10 s → 5 min). */
export function restartDelayMs(restart: number, baseMs: number, maxMs: number): number {
  return restart <= 1 ? 0 : Math.min(maxMs, baseMs * 2 ** (restart - 2));
}

function terminatedPhase(state: V1ContainerStateTerminated): TerminatedPhase {
  return {
    kind: "terminated",
    exitCode: state.exitCode,
    reason: state.reason ?? "Unknown",
    startedAt: state.startedAt ?? new Date(0),
    finishedAt: state.finishedAt ?? new Date(0),
    ...(state.message === undefined ? {} : { message: state.message }),
  };
}

/**
 * A container that already ran under an earlier agent (`ksr local down`/`up`) or before its
 * site lost power is gone, as after a node's reboot: the kubelet finds it exited (a running one
 * as exit code 255, reason Unknown), so starting it again is a restart (restartCount + 1,
 * lastState that run, a new log file), and the restart policy decides whether it happens.
 * Init containers run again, as they do in a new pod sandbox.
 */
export function coldStart(
  init: boolean,
  previous: V1ContainerStatus | undefined,
  now = new Date(),
): { attempts: number; phase?: TerminatedPhase; lastTermination?: TerminatedPhase } {
  const id = previous?.containerID;
  if (previous === undefined || id === undefined || id === "") return { attempts: 0 };
  const attempts = Number(/-(\d+)$/.exec(id)?.[1] ?? previous.restartCount + 1);
  const ended =
    previous.state?.terminated !== undefined
      ? terminatedPhase(previous.state.terminated)
      : previous.state?.running !== undefined
        ? ({
            kind: "terminated",
            exitCode: 255,
            reason: "Unknown",
            startedAt: previous.state.running.startedAt ?? now,
            finishedAt: now,
          } as const)
        : previous.lastState?.terminated !== undefined
          ? terminatedPhase(previous.lastState.terminated)
          : undefined;
  if (ended === undefined) return { attempts };
  return init ? { attempts, lastTermination: ended } : { attempts, phase: ended, lastTermination: ended };
}
