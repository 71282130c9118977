// Pod events (Started, Killing, Unhealthy, FailedMount, BackOff...) as the
// kubelet reports them, each distinct message sent at most once per window so
// a pod retrying every few seconds does not flood the API.
import type { CoreV1Api, V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { describeError } from "./kube.js";

export interface EventRecorder {
  normal(pod: V1Pod, reason: string, message: string): void;
  warning(pod: V1Pod, reason: string, message: string): void;
}

const repeatWindowMs = 5 * 60_000;

export function eventRecorder(core: CoreV1Api, nodeName: string, log: Logger): EventRecorder {
  const lastSent = new Map<string, number>();
  const send = (pod: V1Pod, type: "Normal" | "Warning", reason: string, message: string) => {
    const uid = pod.metadata?.uid ?? "";
    const key = `${uid}|${reason}|${message}`;
    const now = Date.now();
    if (now - (lastSent.get(key) ?? 0) < repeatWindowMs) return;
    lastSent.set(key, now);
    for (const [k, t] of lastSent) if (now - t > repeatWindowMs) lastSent.delete(k);
    const namespace = pod.metadata?.namespace ?? "default";
    const time = new Date();
    void core
      .createNamespacedEvent({
        namespace,
        body: {
          metadata: { generateName: `${pod.metadata?.name ?? "pod"}.`, namespace },
          involvedObject: { kind: "Pod", apiVersion: "v1", name: pod.metadata?.name, namespace, uid },
          reason,
          message,
          type,
          source: { component: "kubelet", host: nodeName },
          reportingComponent: "kubelet",
          reportingInstance: nodeName,
          firstTimestamp: time,
          lastTimestamp: time,
          count: 1,
        },
      })
      .catch((error: unknown) => {
        log.debug({ error: describeError(error) }, "event not recorded");
      });
  };
  return {
    normal: (pod, reason, message) => {
      send(pod, "Normal", reason, message);
    },
    warning: (pod, reason, message) => {
      send(pod, "Warning", reason, message);
    },
  };
}
