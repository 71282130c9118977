// ReplicationPolicy: checks what CEL cannot (the encryption key Secret exists
// and holds exactly 32 bytes), counts the machines that use the policy, keeps
// Ready true to that. No finalizer: deleting a policy leaves nothing behind,
// and machines that still name it report it themselves.
import { protectedMachines, replicationPolicies, type ReplicationPolicy } from "../../api/types.js";
import {
  findCondition,
  reconcileWithStatus,
  secrets,
  StatusWriter,
  type Condition,
  type Reconciler,
} from "../../runtime/index.js";
import type { OperatorDeps } from "../deps.js";
import { recordPolicyStatus, type KeyObservation } from "./status.js";

export interface PolicyControllerOptions {
  /** Secrets are read directly (not cached cluster-wide), so a broken key is looked at again this often. */
  recheckKeyMs?: number;
  /** A valid key is checked again this often, to notice the Secret being deleted or changed. */
  revalidateKeyMs?: number;
}

export function newPolicyReconciler(deps: OperatorDeps, options: PolicyControllerOptions = {}): Reconciler {
  const { client, cache, events } = deps;
  const scope = { namespace: deps.watchNamespace };
  const policies = cache.informer(replicationPolicies, scope);
  const machines = cache.informer(protectedMachines, scope);
  const recheckKeyMs = options.recheckKeyMs ?? 30_000;
  const revalidateKeyMs = options.revalidateKeyMs ?? 5 * 60_000;

  const observeKey = async (policy: ReplicationPolicy): Promise<KeyObservation> => {
    const ref = policy.spec.encryption?.keySecretRef;
    if (ref === undefined) return { state: "NotEncrypted" };
    const where = { secret: ref.name, key: ref.key };
    const secret = await client.get(secrets, ref.name, policy.metadata.namespace);
    if (secret === undefined) return { state: "SecretNotFound", ...where };
    const value = secret.data?.[ref.key];
    if (value === undefined) return { state: "KeyNotFound", ...where };
    // Only the length is looked at; the key itself goes nowhere.
    const bytes = Buffer.from(value, "base64").length;
    return bytes === 32 ? { state: "Valid", ...where } : { state: "WrongLength", ...where, bytes };
  };

  return async ({ name, namespace }, context) => {
    const policy = policies.get(name, namespace);
    if (policy === undefined || policy.metadata.deletionTimestamp !== undefined) return undefined;
    const status = new StatusWriter(client, replicationPolicies, policy, context.clock);
    return reconcileWithStatus(status, context.signal, async () => {
      const key = await observeKey(policy);
      const users = machines.list(namespace).filter((machine) => machine.spec.policyRef.name === name).length;
      recordPolicyStatus(status, policy, { key, machines: users });
      announceTransition(policy, policy.status?.conditions, status.preview().conditions, (event) => {
        void events.record(policy, event);
      });
      return { requeueAfterMs: key.state === "Valid" || key.state === "NotEncrypted" ? revalidateKeyMs : recheckKeyMs };
    });
  };
}

/** An Event whenever Ready changes status or reason: Normal when it turns ready, Warning otherwise. */
function announceTransition(
  policy: ReplicationPolicy,
  before: readonly Condition[] | undefined,
  after: readonly Condition[] | undefined,
  record: (event: { type: "Normal" | "Warning"; reason: string; action: string; note: string }) => void,
): void {
  const was = findCondition(before, "Ready");
  const now = findCondition(after, "Ready");
  if (now === undefined || (was?.status === now.status && was.reason === now.reason)) return;
  record({
    type: now.status === "True" ? "Normal" : "Warning",
    reason: now.reason,
    action: "Validate",
    note: `ReplicationPolicy ${policy.metadata.name}: ${now.message}`,
  });
}
