// traffic: the Service clients use selects the recovered pods of a machine. In a
// drill a copy of the Service in the drill namespace selects them and production
// is not touched. A Service in another namespace than the recovered pods (it
// cannot select them) becomes an ExternalName of the recovered copy, its old spec
// kept in an annotation; the failback that recovers the pods into that Service's namespace again
// restores it (a fresh cluster IP: the old one may have been given to another Service meanwhile).
import { isAlreadyExists, services } from "../../../runtime/index.js";
import { directionOf } from "../../protectedmachine/direction.js";
import { drillNamespaceOf } from "../machine.js";
import type { StepContext, StepExecutor } from "./types.js";
import { recoveredMachineLabel, serviceCopy } from "./workload.js";

export const originalServiceAnnotation = "dr.ksr.io/service-before-failover";

export const trafficStep: StepExecutor = {
  async execute({ run, work, machines, client }: StepContext) {
    const traffic = work.action?.traffic;
    if (traffic === undefined) return { state: "Failed", message: "the step has no traffic action" };
    const machine = machines.get(traffic.machine);
    if (machine === undefined)
      return { state: "Failed", message: `ProtectedMachine ${traffic.machine} does not exist` };
    const serviceNamespace = traffic.serviceNamespace ?? run.metadata.namespace ?? "default";
    const service = await client.get(services, traffic.service, serviceNamespace);
    if (service === undefined)
      return { state: "Failed", message: `Service ${serviceNamespace}/${traffic.service} does not exist` };
    const kept = service.metadata.annotations?.[originalServiceAnnotation];
    // A Service this project failed over is an ExternalName without a selector: the one it had before counts.
    const restored = kept === undefined ? undefined : restoredSpec(kept);
    const selector = { ...(restored ?? service.spec)?.selector, [recoveredMachineLabel]: traffic.machine };
    const recoveredNamespace = run.spec.type === "Test" ? drillNamespaceOf(run) : directionOf(machine).targetNamespace;
    if (run.spec.type === "Test" || recoveredNamespace !== serviceNamespace) {
      const copy = serviceCopy(service, run, recoveredNamespace, selector);
      await client.create(services, copy).catch(async (error: unknown) => {
        if (!isAlreadyExists(error)) throw error;
        await client.patch(
          services,
          { name: traffic.service, namespace: recoveredNamespace },
          { spec: { selector } },
          "merge",
        );
      });
      if (run.spec.type === "Test")
        return {
          state: "Succeeded",
          message: `Service ${recoveredNamespace}/${traffic.service} selects the drill's pods`,
        };
      const target = `${traffic.service}.${recoveredNamespace}.svc.cluster.local`;
      if (service.spec?.type !== "ExternalName" || service.spec.externalName !== target)
        await client.patch(
          services,
          { name: traffic.service, namespace: serviceNamespace },
          {
            metadata: { annotations: { [originalServiceAnnotation]: JSON.stringify(service.spec ?? {}) } },
            spec: { type: "ExternalName", externalName: target, selector: null, clusterIP: null, clusterIPs: null },
          },
          "merge",
        );
      return { state: "Succeeded", message: `Service ${serviceNamespace}/${traffic.service} now points at ${target}` };
    }
    await client.patch(
      services,
      { name: traffic.service, namespace: serviceNamespace },
      restored === undefined
        ? { spec: { selector } }
        : {
            metadata: { annotations: { [originalServiceAnnotation]: null } },
            spec: { ...restored, externalName: null, selector },
          },
      "merge",
    );
    return {
      state: "Succeeded",
      message: `Service ${serviceNamespace}/${traffic.service} selects the recovered ${traffic.machine}`,
    };
  },
};

/** The spec kept before the failover, without its cluster IPs: the API server allocates new ones. */
type KeptSpec = Record<string, unknown> & { selector?: Record<string, string>; type?: string };

function restoredSpec(kept: string): KeptSpec {
  const { clusterIP: _ip, clusterIPs: _ips, ...spec } = JSON.parse(kept) as KeptSpec;
  return { ...spec, type: spec.type ?? "ClusterIP" };
}
