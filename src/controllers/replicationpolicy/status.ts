// A policy's status from what the reconcile observed: the encryption key's
// state, the machines that use it.
import type { ReplicationPolicy } from "../../api/types.js";
import type { ConditionUpdate, StatusWriter } from "../../runtime/index.js";

export type KeyObservation =
  | { state: "NotEncrypted" }
  | { state: "Valid"; secret: string; key: string }
  | { state: "SecretNotFound" | "KeyNotFound"; secret: string; key: string }
  | { state: "WrongLength"; secret: string; key: string; bytes: number };

export interface PolicyObservations {
  key: KeyObservation;
  machines: number;
}

const keyBytes = 32;

function keyCondition(key: KeyObservation, namespace: string): ConditionUpdate {
  const type = "EncryptionKeyValid";
  switch (key.state) {
    case "NotEncrypted":
      return {
        type,
        status: "True",
        reason: "EncryptionDisabled",
        message: "spec.encryption is not set: data at rest is not encrypted",
      };
    case "Valid":
      return {
        type,
        status: "True",
        reason: "KeyValid",
        message: `Secret ${key.secret} key ${key.key} holds a 32-byte key`,
      };
    case "SecretNotFound":
      return {
        type,
        status: "False",
        reason: "KeySecretNotFound",
        message: `Secret ${namespace}/${key.secret} does not exist: create it with a ${keyBytes}-byte key under "${key.key}", e.g. kubectl -n ${namespace} create secret generic ${key.secret} --from-file=${key.key}=<(head -c ${keyBytes} /dev/urandom)`,
      };
    case "KeyNotFound":
      return {
        type,
        status: "False",
        reason: "KeyNotFound",
        message: `Secret ${namespace}/${key.secret} has no key "${key.key}": add a ${keyBytes}-byte key under it, or point spec.encryption.keySecretRef.key at the key that holds it`,
      };
    case "WrongLength":
      return {
        type,
        status: "False",
        reason: "KeyWrongLength",
        message: `Secret ${namespace}/${key.secret} key "${key.key}" holds ${key.bytes} bytes; AES-256 needs exactly ${keyBytes} (raw bytes, not hex or base64 text)`,
      };
  }
}

/** Records the observations in the reconcile's status writer. */
export function recordPolicyStatus(
  status: StatusWriter<ReplicationPolicy>,
  policy: ReplicationPolicy,
  observed: PolicyObservations,
): void {
  const key = keyCondition(observed.key, policy.metadata.namespace ?? "");
  status.set({ protectedMachines: observed.machines });
  status.condition(key);
  status.condition(
    key.status === "True"
      ? { type: "Ready", status: "True", reason: "PolicyValid", message: `used by ${observed.machines} machine(s)` }
      : { type: "Ready", status: "False", reason: key.reason, message: key.message },
  );
}
