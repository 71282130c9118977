// Machine ids name cache directories and certificates, so they are kept to a safe alphabet.
const machineIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function checkMachineId(machineId: string): string {
  if (!machineIdPattern.test(machineId))
    throw new Error(`machine id "${machineId}" must be 1-128 letters, digits, '.', '_' or '-', starting alphanumeric`);
  return machineId;
}

/**
 * The machine id of a ProtectedMachine: namespace and name, so that machines of
 * the same name in two namespaces never share a cache or an agent identity.
 * A namespace holds no dot, so the first dot splits it from the name.
 */
export function machineIdOf(ref: { namespace: string; name: string }): string {
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(ref.namespace))
    throw new Error(`namespace "${ref.namespace}" is not a DNS-1123 label`);
  return checkMachineId(`${ref.namespace}.${ref.name}`);
}
