// The pod's /etc/resolv.conf, as the kubelet writes it from dnsPolicy and
// dnsConfig: ClusterFirst pods ask the cluster DNS with the namespace's search
// path and ndots:5; Default (and hostNetwork pods under ClusterFirst, and every
// pod when there is no cluster DNS) keep the machine's file; None takes
// dnsConfig alone. dnsConfig is merged as the kubelet merges it.
import type { V1Pod } from "@kubernetes/client-node";

export const clusterDomain = "cluster.local";

export interface ResolvConf {
  nameservers: string[];
  searches: string[];
  options: string[];
}

/** Cluster DNS for the pod, or undefined when it keeps the machine's resolv.conf. */
export function podResolvConf(pod: V1Pod, clusterDns: string | undefined): ResolvConf | undefined {
  const policy = pod.spec?.dnsPolicy ?? "ClusterFirst";
  const hostNetwork = pod.spec?.hostNetwork === true;
  let base: ResolvConf | undefined;
  if (policy === "None") base = { nameservers: [], searches: [], options: [] };
  else if (
    clusterDns !== undefined &&
    (policy === "ClusterFirstWithHostNet" || (policy === "ClusterFirst" && !hostNetwork))
  ) {
    const namespace = pod.metadata?.namespace ?? "default";
    base = {
      nameservers: [clusterDns],
      searches: [`${namespace}.svc.${clusterDomain}`, `svc.${clusterDomain}`, clusterDomain],
      options: ["ndots:5"],
    };
  }
  // Default keeps the machine's file as it is (its dnsConfig is not merged in).
  if (base === undefined) return undefined;
  const extra = pod.spec?.dnsConfig;
  const options = new Map(base.options.map((option) => [option.split(":")[0] ?? option, option]));
  for (const option of extra?.options ?? [])
    options.set(option.name ?? "", option.value === undefined ? (option.name ?? "") : `${option.name}:${option.value}`);
  return {
    nameservers: [...new Set([...base.nameservers, ...(extra?.nameservers ?? [])])].slice(0, 3),
    searches: [...new Set([...base.searches, ...(extra?.searches ?? [])])].slice(0, 32),
    options: [...options.values()].filter((option) => option !== ""),
  };
}

export function renderResolvConf(conf: ResolvConf): string {
  return [
    ...conf.nameservers.map((server) => `nameserver ${server}`),
    ...(conf.searches.length === 0 ? [] : [`search ${conf.searches.join(" ")}`]),
    ...(conf.options.length === 0 ? [] : [`options ${conf.options.join(" ")}`]),
    "",
  ].join("\n");
}
