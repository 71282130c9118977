// Resource types of built-in kinds the project's controllers use (pods, workloads, Services and
// volumes are in workload-resources.ts). Kinds from src/api declare theirs next to their types.
import { resourceType, type KubeObject } from "./objects.js";

export interface ConfigMap extends KubeObject {
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
}

export interface Secret extends KubeObject {
  type?: string;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

export interface Namespace extends KubeObject {
  status?: { phase?: string };
}

export const configMaps = resourceType<ConfigMap>({
  group: "",
  version: "v1",
  kind: "ConfigMap",
  plural: "configmaps",
  namespaced: true,
});
export const secrets = resourceType<Secret>({
  group: "",
  version: "v1",
  kind: "Secret",
  plural: "secrets",
  namespaced: true,
});
export const namespaces = resourceType<Namespace>({
  group: "",
  version: "v1",
  kind: "Namespace",
  plural: "namespaces",
  namespaced: false,
});

export interface ServiceAccount extends KubeObject {
  automountServiceAccountToken?: boolean;
}

export const serviceAccounts = resourceType<ServiceAccount>({
  group: "",
  version: "v1",
  kind: "ServiceAccount",
  plural: "serviceaccounts",
  namespaced: true,
});

export interface CustomResourceDefinition extends KubeObject {
  spec?: unknown;
  status?: { conditions?: { type: string; status: string }[] };
}

export const customResourceDefinitions = resourceType<CustomResourceDefinition>({
  group: "apiextensions.k8s.io",
  version: "v1",
  kind: "CustomResourceDefinition",
  plural: "customresourcedefinitions",
  namespaced: false,
});
