// Create-or-update of the objects placement builds. Desired objects carry a hash of themselves,
// so an unchanged object is never written again (and a change to what the operator would
// build, say a new replica on a master target, is one write).
import { createHash } from "node:crypto";
import { isAlreadyExists, type KubeClient, type KubeObject, type ResourceType } from "../../runtime/index.js";

export const specHashAnnotation = "dr.ksr.io/spec-hash";

/**
 * keep: created once, never changed (claims, keys). patch: a merge patch of labels, annotations and
 * spec (Deployments, Services: the Service keeps its cluster IP). recreate: deleted, and created again
 * on the next reconcile (pods, whose spec is immutable).
 */
export type UpdateMode = "keep" | "patch" | "recreate";

export function withSpecHash<T extends KubeObject>(desired: T): T {
  const hash = createHash("sha256").update(JSON.stringify(desired)).digest("hex").slice(0, 16);
  return {
    ...desired,
    metadata: { ...desired.metadata, annotations: { ...desired.metadata.annotations, [specHashAnnotation]: hash } },
  };
}

/** Returns "created", "updated", "deleted" (recreate pending) or "unchanged". */
export async function apply<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType<T>,
  desiredObject: T,
  existing: T | undefined,
  mode: UpdateMode,
): Promise<"created" | "updated" | "deleted" | "unchanged"> {
  const desired = withSpecHash(desiredObject);
  if (existing === undefined || existing.metadata.deletionTimestamp !== undefined) {
    if (existing !== undefined) return "unchanged"; // still going away: created again once it is gone
    try {
      await client.create(type, desired);
      return "created";
    } catch (error) {
      if (isAlreadyExists(error)) return "unchanged"; // the cache lags our own writes
      throw error;
    }
  }
  const wanted = desired.metadata.annotations?.[specHashAnnotation];
  if (mode === "keep" || existing.metadata.annotations?.[specHashAnnotation] === wanted) return "unchanged";
  const { name, namespace } = existing.metadata;
  if (mode === "recreate") {
    await client.delete(type, { name, namespace }, { uid: existing.metadata.uid });
    return "deleted";
  }
  const { metadata, ...rest } = desired as KubeObject & Record<string, unknown>;
  const patch = {
    ...rest,
    metadata: {
      labels: metadata.labels,
      annotations: metadata.annotations,
      resourceVersion: existing.metadata.resourceVersion,
    },
  };
  await client.patch(type, { name, namespace }, patch, "merge");
  return "updated";
}
