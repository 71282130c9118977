import { strict as assert } from "node:assert";
import type { V1Pod } from "@kubernetes/client-node";
import { podResolvConf, renderResolvConf } from "../../../src/local/node/resolv-conf.js";

const pod = (spec: Partial<NonNullable<V1Pod["spec"]>>): V1Pod => ({
  metadata: { name: "p", namespace: "shop" },
  spec: { containers: [], ...spec },
});
const cluster = [
  "nameserver 198.18.3.10",
  "search shop.svc.cluster.local svc.cluster.local cluster.local",
  "options ndots:5",
  "",
];

describe("local node resolv.conf", () => {
  const cases: { name: string; spec: Partial<NonNullable<V1Pod["spec"]>>; dns?: string; want?: string[] }[] = [
    { name: "ClusterFirst by default", spec: {}, dns: "198.18.3.10", want: cluster },
    { name: "the machine's file for hostNetwork under ClusterFirst", spec: { hostNetwork: true }, dns: "198.18.3.10" },
    {
      name: "the cluster's for ClusterFirstWithHostNet",
      spec: { hostNetwork: true, dnsPolicy: "ClusterFirstWithHostNet" },
      dns: "198.18.3.10",
      want: cluster,
    },
    { name: "the machine's file for Default", spec: { dnsPolicy: "Default" }, dns: "198.18.3.10" },
    { name: "the machine's file when there is no cluster DNS", spec: {} },
    {
      name: "dnsConfig alone for None",
      spec: { dnsPolicy: "None", dnsConfig: { nameservers: ["198.18.3.99"], searches: ["a.example"] } },
      dns: "198.18.3.10",
      want: ["nameserver 198.18.3.99", "search a.example", ""],
    },
    {
      name: "dnsConfig merged into ClusterFirst, options overriding by name",
      spec: {
        dnsConfig: {
          nameservers: ["198.18.3.11"],
          searches: ["extra.example"],
          options: [{ name: "ndots", value: "2" }, { name: "edns0" }],
        },
      },
      dns: "198.18.3.10",
      want: [
        "nameserver 198.18.3.10",
        "nameserver 198.18.3.11",
        "search shop.svc.cluster.local svc.cluster.local cluster.local extra.example",
        "options ndots:2 edns0",
        "",
      ],
    },
  ];
  for (const { name, spec, dns, want } of cases) {
    it(`writes ${name}`, () => {
      const conf = podResolvConf(pod(spec), dns);
      assert.deepEqual(conf === undefined ? undefined : renderResolvConf(conf).split("\n"), want);
    });
  }
});
