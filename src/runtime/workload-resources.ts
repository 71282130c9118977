// Resource types of the built-in kinds a workload is made of (pods, their volumes and
// controllers, Services, nodes), with the shapes of @kubernetes/client-node and the runtime's metadata.
import type {
  V1Deployment,
  V1Job,
  V1NetworkPolicy,
  V1Node,
  V1PersistentVolumeClaim,
  V1Pod,
  V1Service,
  V1StatefulSet,
  V1StorageClass,
} from "@kubernetes/client-node";
import { resourceType, type KubeObject } from "./objects.js";

type Kube<T> = Omit<T, "metadata" | "apiVersion" | "kind"> & KubeObject;

export type Pod = Kube<V1Pod>;
export type PersistentVolumeClaim = Kube<V1PersistentVolumeClaim>;
export type StatefulSet = Kube<V1StatefulSet>;
export type Deployment = Kube<V1Deployment>;
export type Service = Kube<V1Service>;
export type Node = Kube<V1Node>;
export type StorageClass = Kube<V1StorageClass>;

export const pods = resourceType<Pod>({ group: "", version: "v1", kind: "Pod", plural: "pods", namespaced: true });
export const persistentVolumeClaims = resourceType<PersistentVolumeClaim>({
  group: "",
  version: "v1",
  kind: "PersistentVolumeClaim",
  plural: "persistentvolumeclaims",
  namespaced: true,
});
export const statefulSets = resourceType<StatefulSet>({
  group: "apps",
  version: "v1",
  kind: "StatefulSet",
  plural: "statefulsets",
  namespaced: true,
});
export const deployments = resourceType<Deployment>({
  group: "apps",
  version: "v1",
  kind: "Deployment",
  plural: "deployments",
  namespaced: true,
});
export const services = resourceType<Service>({
  group: "",
  version: "v1",
  kind: "Service",
  plural: "services",
  namespaced: true,
});
export const nodes = resourceType<Node>({ group: "", version: "v1", kind: "Node", plural: "nodes", namespaced: false });
export const storageClasses = resourceType<StorageClass>({
  group: "storage.k8s.io",
  version: "v1",
  kind: "StorageClass",
  plural: "storageclasses",
  namespaced: false,
});

export type Job = Kube<V1Job>;
export type NetworkPolicy = Kube<V1NetworkPolicy>;

export const jobs = resourceType<Job>({ group: "batch", version: "v1", kind: "Job", plural: "jobs", namespaced: true });
export const networkPolicies = resourceType<NetworkPolicy>({
  group: "networking.k8s.io",
  version: "v1",
  kind: "NetworkPolicy",
  plural: "networkpolicies",
  namespaced: true,
});
