// The Secrets and ConfigMaps a recovered workload's pod template refers to, carried from the
// source namespace into the namespace it is recreated in (a drill's, or the recovery namespace).
// The names to copy are recorded in the step's message before anything is created; copies carry
// the run's labels (a drill's cleanup deletes exactly them); an object already there that the run
// did not make is left as it is and reported, never overwritten. Only names reach status, events
// and logs: the content goes from one API call to the next and nowhere else.
import type { V1Container, V1PodSpec } from "@kubernetes/client-node";
import type { FailoverRun } from "../../../api/types.js";
import {
  configMaps,
  isAlreadyExists,
  secrets,
  type KubeClient,
  type KubeObject,
  type ResourceType,
} from "../../../runtime/index.js";
import { createdByRun, runLabels } from "./types.js";

export type ConfigKind = "Secret" | "ConfigMap";

export interface ConfigReference {
  readonly kind: ConfigKind;
  readonly name: string;
  /** Every reference to it is optional: a missing source is no failure. */
  readonly optional: boolean;
}

export const copiedFromAnnotation = "dr.ksr.io/copied-from";

/** Every Secret and ConfigMap the pod spec refers to, sorted by kind and name; optional only if every reference is. */
export function configReferences(spec: V1PodSpec | undefined): ConfigReference[] {
  const found = new Map<string, ConfigReference>();
  const add = (kind: ConfigKind, name: string | undefined, optional: boolean | undefined) => {
    if (name === undefined || name === "") return;
    const key = `${kind}/${name}`;
    const known = found.get(key);
    found.set(key, { kind, name, optional: (known?.optional ?? true) && optional === true });
  };
  const containers: V1Container[] = [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])];
  for (const container of containers) {
    for (const variable of container.env ?? []) {
      const from = variable.valueFrom;
      add("Secret", from?.secretKeyRef?.name, from?.secretKeyRef?.optional);
      add("ConfigMap", from?.configMapKeyRef?.name, from?.configMapKeyRef?.optional);
    }
    for (const source of container.envFrom ?? []) {
      add("Secret", source.secretRef?.name, source.secretRef?.optional);
      add("ConfigMap", source.configMapRef?.name, source.configMapRef?.optional);
    }
  }
  for (const volume of spec?.volumes ?? []) {
    add("Secret", volume.secret?.secretName, volume.secret?.optional);
    add("ConfigMap", volume.configMap?.name, volume.configMap?.optional);
    for (const source of volume.projected?.sources ?? []) {
      add("Secret", source.secret?.name, source.secret?.optional);
      add("ConfigMap", source.configMap?.name, source.configMap?.optional);
    }
  }
  // An image pull secret cannot be optional: without it the image is not pulled.
  for (const pull of spec?.imagePullSecrets ?? []) add("Secret", pull.name, false);
  return [...found.values()].sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
}

export type ConfigPlan =
  | { readonly ok: false; readonly message: string }
  | {
      readonly ok: true;
      /** Missing in the target: to be copied (after the names are recorded). */
      readonly copy: readonly ConfigReference[];
      /** Copies this run made already. */
      readonly carried: readonly ConfigReference[];
      /** In the target already and not made by this run: left as they are. */
      readonly foreign: readonly ConfigReference[];
    };

const typeOf = (kind: ConfigKind): ResourceType<KubeObject> => (kind === "Secret" ? secrets : configMaps);
const names = (references: readonly ConfigReference[]) =>
  references.map((reference) => `${reference.kind} ${reference.name}`).join(", ");

/** What is to be done for each reference: only reads. A missing source that is not optional fails the step. */
export async function planConfig(
  client: KubeClient,
  run: FailoverRun,
  references: readonly ConfigReference[],
  from: string,
  to: string,
): Promise<ConfigPlan> {
  const copy: ConfigReference[] = [];
  const carried: ConfigReference[] = [];
  const foreign: ConfigReference[] = [];
  const missing: string[] = [];
  for (const reference of references) {
    const there = await client.get(typeOf(reference.kind), reference.name, to);
    if (there !== undefined) {
      (createdByRun(there, run) ? carried : foreign).push(reference);
      continue;
    }
    if ((await client.get(typeOf(reference.kind), reference.name, from)) !== undefined) copy.push(reference);
    else if (!reference.optional) missing.push(`${reference.kind} ${from}/${reference.name}`);
  }
  if (missing.length > 0)
    return {
      ok: false,
      message: `the workload refers to ${missing.join(", ")}, which does not exist: create it (or mark the reference optional) and the step goes on`,
    };
  return { ok: true, copy, carried, foreign };
}

/** The step message that records the copies before they are made. */
export const copyRecord = (plan: { copy: readonly ConfigReference[] }, from: string, to: string): string =>
  `copying ${names(plan.copy)} from ${from} into ${to}`;

/** What the step says about them once the workload is up. */
export function configSummary(plan: Extract<ConfigPlan, { ok: true }>, to: string): string {
  const carried = [...plan.carried, ...plan.copy];
  const parts = [
    ...(carried.length === 0 ? [] : [`copied ${names(carried)}`]),
    ...(plan.foreign.length === 0 ? [] : [`left ${names(plan.foreign)} in ${to} as found (not made by this run)`]),
  ];
  return parts.length === 0 ? "" : `; ${parts.join("; ")}`;
}

/** Creates the recorded copies: the source's content, the run's labels, where it came from. */
export async function copyConfig(
  client: KubeClient,
  run: FailoverRun,
  references: readonly ConfigReference[],
  from: string,
  to: string,
): Promise<void> {
  for (const reference of references) {
    const type = typeOf(reference.kind);
    const source = await client.get(type, reference.name, from);
    if (source === undefined) continue; // gone since the plan: the next pass reports it
    const { apiVersion, kind, metadata, ...content } = source;
    const copied: KubeObject = {
      ...content,
      apiVersion,
      kind,
      metadata: {
        name: metadata.name,
        namespace: to,
        labels: { ...metadata.labels, ...runLabels(run) },
        annotations: { [copiedFromAnnotation]: `${from}/${metadata.name}` },
      },
    };
    await client.create(type, copied).catch((error: unknown) => {
      if (!isAlreadyExists(error)) throw error;
    });
  }
}
