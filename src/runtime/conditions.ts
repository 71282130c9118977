// Status conditions in the metav1.Condition shape. lastTransitionTime moves only
// when a condition's status changes, so it tells users how long a state has lasted.

export type ConditionStatus = "True" | "False" | "Unknown";

export interface Condition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface ConditionUpdate {
  type: string;
  status: ConditionStatus;
  reason: string;
  message?: string;
}

// metav1.Condition's validation: the API server rejects anything else.
const reasonPattern = /^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/;
const typePattern =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$/;
const maxMessageLength = 32_768;

/** Kubernetes timestamps have second precision. */
export function rfc3339(time: number): string {
  return new Date(Math.floor(time / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

/**
 * Returns a new condition list with update applied. The existing entry keeps its
 * lastTransitionTime unless the status changes; observedGeneration is the
 * generation of the spec this condition was computed from.
 */
export function setCondition(
  conditions: readonly Condition[] | undefined,
  update: ConditionUpdate,
  context: { observedGeneration?: number; now: number },
): Condition[] {
  validateCondition(update);
  const existing = conditions?.find((condition) => condition.type === update.type);
  const next: Condition = {
    type: update.type,
    status: update.status,
    reason: update.reason,
    message: (update.message ?? "").slice(0, maxMessageLength),
    lastTransitionTime:
      existing !== undefined && existing.status === update.status ? existing.lastTransitionTime : rfc3339(context.now),
    ...(context.observedGeneration === undefined ? {} : { observedGeneration: context.observedGeneration }),
  };
  return existing === undefined
    ? [...(conditions ?? []), next]
    : (conditions ?? []).map((condition) => (condition.type === update.type ? next : condition));
}

/** Throws what the API server would reject, so a bad condition fails where it is set. */
export function validateCondition(update: ConditionUpdate): void {
  if (!typePattern.test(update.type) || update.type.length > 316) {
    throw new Error(`condition type ${JSON.stringify(update.type)} is not a valid metav1.Condition type`);
  }
  if (!reasonPattern.test(update.reason) || update.reason.length > 1024) {
    throw new Error(`condition reason ${JSON.stringify(update.reason)} must be CamelCase (letters, digits, _ , :)`);
  }
}

export function findCondition(conditions: readonly Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((condition) => condition.type === type);
}

export function isConditionTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === "True";
}
