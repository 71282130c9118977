// Container environment as the kubelet builds it: envFrom, then env in order,
// with $(VAR) references expanded against what is defined so far.
import type { V1ConfigMap, V1Container, V1EnvVar, V1Pod, V1Secret } from "@kubernetes/client-node";

/** A container cannot be started with this configuration (the kubelet's CreateContainerConfigError). */
export class ContainerConfigError extends Error {}

export interface PodFacts {
  pod: V1Pod;
  podIP: string;
  hostIP: string;
}

export interface ObjectLookup {
  configMap(namespace: string, name: string): Promise<V1ConfigMap | undefined>;
  secret(namespace: string, name: string): Promise<V1Secret | undefined>;
}

/** Values for downward-API field paths (env fieldRef and downwardAPI volumes). */
export function fieldPathValue(facts: PodFacts, fieldPath: string): string {
  const { pod } = facts;
  const meta = pod.metadata ?? {};
  const mapEntry = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (mapEntry !== null) {
    const map = mapEntry[1] === "labels" ? meta.labels : meta.annotations;
    return map?.[mapEntry[2] ?? ""] ?? "";
  }
  switch (fieldPath) {
    case "metadata.name":
      return meta.name ?? "";
    case "metadata.namespace":
      return meta.namespace ?? "";
    case "metadata.uid":
      return meta.uid ?? "";
    case "metadata.labels":
      return formatMap(meta.labels);
    case "metadata.annotations":
      return formatMap(meta.annotations);
    case "spec.nodeName":
      return pod.spec?.nodeName ?? "";
    case "spec.serviceAccountName":
      return pod.spec?.serviceAccountName ?? "default";
    case "status.podIP":
    case "status.podIPs":
      return facts.podIP;
    case "status.hostIP":
    case "status.hostIPs":
      return facts.hostIP;
    default:
      throw new ContainerConfigError(`unsupported fieldRef.fieldPath "${fieldPath}"`);
  }
}

function formatMap(map: Record<string, string> | undefined): string {
  return Object.entries(map ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join("\n");
}

/**
 * Expands $(NAME) from vars; $$ escapes a dollar; unknown references stay as
 * written, exactly as Kubernetes does.
 */
export function expandReferences(value: string, vars: ReadonlyMap<string, string>): string {
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name: string | undefined) => {
    if (match === "$$") return "$";
    return name !== undefined && vars.has(name) ? (vars.get(name) ?? "") : match;
  });
}

const decodeSecret = (value: string) => Buffer.from(value, "base64").toString("utf8");

async function keyRefValue(
  kind: "ConfigMap" | "Secret",
  ref: { name?: string; key: string; optional?: boolean },
  namespace: string,
  lookup: ObjectLookup,
): Promise<string | undefined> {
  const name = ref.name ?? "";
  const data =
    kind === "ConfigMap"
      ? (await lookup.configMap(namespace, name))?.data
      : mapValues((await lookup.secret(namespace, name))?.data, decodeSecret);
  const value = data?.[ref.key];
  if (value !== undefined || ref.optional === true) return value;
  throw new ContainerConfigError(
    data === undefined
      ? `${kind.toLowerCase()} "${name}" not found`
      : `couldn't find key ${ref.key} in ${kind} ${namespace}/${name}`,
  );
}

function mapValues(
  map: Record<string, string> | undefined,
  f: (value: string) => string,
): Record<string, string> | undefined {
  return map === undefined ? undefined : Object.fromEntries(Object.entries(map).map(([k, v]) => [k, f(v)]));
}

async function envVarValue(
  envVar: V1EnvVar,
  vars: ReadonlyMap<string, string>,
  facts: PodFacts,
  lookup: ObjectLookup,
): Promise<string | undefined> {
  const namespace = facts.pod.metadata?.namespace ?? "default";
  const from = envVar.valueFrom;
  if (from === undefined) return expandReferences(envVar.value ?? "", vars);
  if (from.fieldRef !== undefined) return fieldPathValue(facts, from.fieldRef.fieldPath);
  if (from.configMapKeyRef !== undefined) return keyRefValue("ConfigMap", from.configMapKeyRef, namespace, lookup);
  if (from.secretKeyRef !== undefined) return keyRefValue("Secret", from.secretKeyRef, namespace, lookup);
  throw new ContainerConfigError(
    `env ${envVar.name}: only value, fieldRef, configMapKeyRef and secretKeyRef are supported`,
  );
}

async function envFromValues(
  container: V1Container,
  namespace: string,
  lookup: ObjectLookup,
): Promise<[string, string][]> {
  const entries: [string, string][] = [];
  for (const source of container.envFrom ?? []) {
    const prefix = source.prefix ?? "";
    const ref = source.configMapRef ?? source.secretRef;
    const name = ref?.name ?? "";
    const data =
      source.configMapRef !== undefined
        ? (await lookup.configMap(namespace, name))?.data
        : mapValues((await lookup.secret(namespace, name))?.data, decodeSecret);
    if (data === undefined && ref?.optional !== true) {
      throw new ContainerConfigError(
        `${source.configMapRef !== undefined ? "configmap" : "secret"} "${name}" not found`,
      );
    }
    for (const [key, value] of Object.entries(data ?? {})) entries.push([prefix + key, value]);
  }
  return entries;
}

/** The container's declared environment, in definition order (base variables come first, from the caller). */
export async function containerEnvironment(
  container: V1Container,
  base: ReadonlyMap<string, string>,
  facts: PodFacts,
  lookup: ObjectLookup,
): Promise<Map<string, string>> {
  const vars = new Map(base);
  for (const [key, value] of await envFromValues(container, facts.pod.metadata?.namespace ?? "default", lookup)) {
    vars.set(key, value);
  }
  for (const envVar of container.env ?? []) {
    const value = await envVarValue(envVar, vars, facts, lookup);
    if (value !== undefined) vars.set(envVar.name, value);
  }
  return vars;
}
