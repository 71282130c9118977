import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  AddressPool,
  choosePodSubnet,
  loopbackRange,
  networkNames,
  networksInUse,
  podNamespaceName,
  podNetworkPlan,
  podRangeOctet,
  podSwitchPort,
  nodePodRange,
  chooseServiceSubnet,
} from "../../../src/local/node/addresses.js";
import { clusterTag } from "../../../src/local/node/layout.js";

/** The /24 after the given one, wrapping at the end of 198.18.0.0/15. */
function nextSubnet(subnet: string): string {
  const [, second, third] = /^198\.(\d+)\.(\d+)\.0\/24$/.exec(subnet)?.map(Number) ?? [];
  const index = ((second ?? 0) - 18) * 256 + (third ?? 0) + 1;
  return `198.${18 + Math.floor((index % 512) / 256)}.${index % 256}.0/24`;
}

describe("local node pod addresses", () => {
  it("gives each owner one stable loopback address in the cluster's /16", () => {
    const pool = new AddressPool(loopbackRange(42));
    const a = pool.allocate("a");
    const b = pool.allocate("b");
    assert.equal(a, "127.42.0.1");
    assert.equal(b, "127.42.0.2");
    assert.equal(pool.allocate("a"), a);
  });

  const nodeRanges: { index: number; first: string; last: string; size: number; cidr: string }[] = [
    { index: 0, first: "198.19.3.1", last: "198.19.3.126", size: 126, cidr: "198.19.3.0/25" },
    { index: 1, first: "198.19.3.129", last: "198.19.3.249", size: 121, cidr: "198.19.3.128/25" },
  ];
  for (const { index, first, last, size, cidr } of nodeRanges) {
    it(`hands out ${first} to ${last} to node ${index}, never the reserved .250-.254, then says it is full`, () => {
      const pool = new AddressPool(nodePodRange("198.19.3.0/24", index));
      const addresses = Array.from({ length: size }, (_, i) => pool.allocate(`pod-${i}`));
      assert.deepEqual([addresses[0], addresses.at(-1), new Set(addresses).size], [first, last, size]);
      assert.throws(
        () => pool.allocate("one-more"),
        new RegExp(`all ${size} pod addresses in ${cidr.replace(/\./g, "\\.")} are in use`),
      );
      pool.release("pod-7");
      assert.equal(pool.allocate("one-more"), addresses[7]);
    });
  }

  it("does not hand a released address out again before the others", () => {
    const pool = new AddressPool(loopbackRange(42));
    const first = pool.allocate("a");
    pool.release("a");
    assert.notEqual(pool.allocate("b"), first);
  });

  it("never hands out one address twice while it is in use", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 20 })), { maxLength: 200 }), (ops) => {
        const pool = new AddressPool(nodePodRange("198.18.7.0/24", 0));
        const held = new Map<string, string>();
        for (const [allocate, id] of ops) {
          const owner = `pod-${id}`;
          if (allocate) held.set(owner, pool.allocate(owner));
          else {
            pool.release(owner);
            held.delete(owner);
          }
        }
        const addresses = [...held.values()];
        return (
          new Set(addresses).size === addresses.length &&
          addresses.every((a) => /^198\.18\.7\.([1-9]\d?|1[01]\d|12[0-6])$/.test(a))
        );
      }),
    );
  });

  it("keeps loopback cluster ranges away from 127.0.x and 127.1.x and inside the octet", () => {
    fc.assert(
      fc.property(fc.string(), (dir) => {
        const octet = podRangeOctet(`/tmp/${dir}`);
        return octet >= 2 && octet <= 254;
      }),
    );
  });

  const badRanges: [string, () => unknown, RegExp][] = [
    ["loopback octet 0", () => loopbackRange(0), /not 1\.\.254/],
    ["a /16", () => nodePodRange("198.18.0.0/16", 0), /not a \/24 of 198\.18\.0\.0\/15/],
    ["a private /24", () => nodePodRange("10.0.0.0/24", 0), /not a \/24/],
    ["a third node", () => nodePodRange("198.18.0.0/24", 2), /node index 2 is not 0 or 1/],
    ["a third octet above 255", () => podNetworkPlan("/tmp/x", "198.18.256.0/24", "198.18.1.0/24"), /not a \/24/],
    ["a private Service range", () => podNetworkPlan("/tmp/x", "198.18.1.0/24", "10.96.0.0/24"), /not a \/24/],
  ];
  for (const [name, make, error] of badRanges) {
    it(`refuses ${name}`, () => {
      assert.throws(make, error);
    });
  }
});

describe("local node pod subnet choice", () => {
  const dir = "/tmp/ksr-subnet-choice";
  const preferred = choosePodSubnet(dir, []);

  it("starts from a /24 of 198.18.0.0/15 derived from the cluster directory", () => {
    assert.match(preferred, /^198\.1[89]\.\d{1,3}\.0\/24$/);
    assert.equal(choosePodSubnet(dir, []), preferred);
    const others = ["/tmp/a", "/tmp/b", "/tmp/c", "/tmp/d"].map((d) => choosePodSubnet(d, []));
    assert.ok(new Set(others).size > 1, `different directories should spread: ${others.join(" ")}`);
  });

  const prefix = preferred.replace(/\.0\/24$/, "");
  const cases: { name: string; inUse: string[]; previous?: string; expected: string | RegExp | { throws: RegExp } }[] =
    [
      { name: "nothing in use", inUse: [], expected: preferred },
      { name: "unrelated networks in use", inUse: ["192.0.2.0/24", "10.0.0.0/8", "127.0.0.0/8"], expected: preferred },
      {
        name: "the previous subnet while free",
        inUse: [preferred],
        previous: "198.19.200.0/24",
        expected: "198.19.200.0/24",
      },
      {
        name: "not the previous subnet once taken",
        inUse: ["198.19.200.0/24"],
        previous: "198.19.200.0/24",
        expected: preferred,
      },
      { name: "not a previous subnet outside the range", inUse: [], previous: "10.1.2.0/24", expected: preferred },
      { name: "the next /24 when the preferred is routed", inUse: [preferred], expected: nextSubnet(preferred) },
      { name: "the next /24 when a host inside it is routed", inUse: [`${prefix}.9`], expected: nextSubnet(preferred) },
      {
        name: "the next /24 when an address inside it is configured",
        inUse: [`${prefix}.254/24`],
        expected: nextSubnet(preferred),
      },
      {
        name: "the other half when a wider route covers the preferred /24",
        inUse: [preferred.startsWith("198.18.") ? "198.18.0.0/16" : "198.19.0.0/16"],
        expected: preferred.startsWith("198.18.") ? /^198\.19\./ : /^198\.18\./,
      },
      {
        name: "an error when all of 198.18.0.0/15 is routed",
        inUse: ["198.16.0.0/12"],
        expected: { throws: /no pod subnet is left/ },
      },
    ];
  for (const { name, inUse, previous, expected } of cases) {
    it(`chooses ${name}`, () => {
      if (typeof expected === "object" && "throws" in expected) {
        assert.throws(() => choosePodSubnet(dir, inUse, previous), expected.throws);
        return;
      }
      const chosen = choosePodSubnet(dir, inUse, previous);
      if (expected instanceof RegExp) assert.match(chosen, expected);
      else assert.equal(chosen, expected);
    });
  }

  it("reads networks in use from `ip -4 route` and `ip -4 -o addr` output", () => {
    const routes = [
      "default via 192.0.2.1 dev eth0",
      "192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2",
      "198.18.7.0/24 dev ksr0123456789 proto kernel scope link src 198.18.7.254",
      "10.9.8.7 via 192.0.2.1 dev eth0",
      "",
    ].join("\n");
    const addresses = [
      "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever",
      "2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever",
    ].join("\n");
    assert.deepEqual(networksInUse(routes, addresses), [
      "192.0.2.0/24",
      "198.18.7.0/24",
      "10.9.8.7",
      "127.0.0.1/8",
      "192.0.2.2/24",
    ]);
  });

  it("chooses a Service /24 apart from the pod subnet and everything in use, keeping the previous one while free", () => {
    const pods = choosePodSubnet(dir, []);
    const services = chooseServiceSubnet(dir, [], pods);
    assert.notEqual(services, pods);
    assert.equal(chooseServiceSubnet(dir, [], pods, "198.18.9.0/24"), "198.18.9.0/24");
    assert.notEqual(chooseServiceSubnet(dir, ["198.18.9.0/24"], pods, "198.18.9.0/24"), "198.18.9.0/24");
    assert.notEqual(chooseServiceSubnet(dir, [], "198.18.9.0/24", "198.18.9.0/24"), "198.18.9.0/24");
  });

  it("records the node's .254, the Service range and the cluster's names in the plan", () => {
    const tag = clusterTag(dir);
    assert.deepEqual(podNetworkPlan(dir, "198.19.4.0/24", "198.18.4.0/24"), {
      subnet: "198.19.4.0/24",
      hostAddress: "198.19.4.254",
      serviceSubnet: "198.18.4.0/24",
      switchNamespace: `ksr-${tag}`,
      hostInterface: `ksr${tag}`,
    });
  });
});

describe("local node network names", () => {
  const uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
  const cases: { dir: string }[] = [{ dir: "/tmp/one" }, { dir: "/tmp/two" }, { dir: "/home/someone/.ksr/local" }];
  for (const { dir } of cases) {
    it(`keeps every name of ${dir} under the cluster's prefix and interface names within 15 characters`, () => {
      const names = networkNames(dir);
      const tag = clusterTag(dir);
      const pod = podNamespaceName(dir, uid);
      assert.deepEqual(
        {
          switchNamespace: names.switchNamespace,
          hostInterface: names.hostInterface,
          podNamespace: pod,
          podStartsWithPrefix: pod.startsWith(names.podNamespacePrefix),
          switchStartsWithPrefix: names.switchNamespace.startsWith(names.podNamespacePrefix),
        },
        {
          switchNamespace: `ksr-${tag}`,
          hostInterface: `ksr${tag}`,
          podNamespace: `ksr-${tag}-0f1e2d3c4b5a`,
          podStartsWithPrefix: true,
          switchStartsWithPrefix: false,
        },
      );
      assert.ok(names.hostInterface.length <= 15);
    });
  }

  it("names the bridge's end of a pod's veth by the UID, within 15 characters", () => {
    assert.equal(podSwitchPort(uid), "p0f1e2d3c4b5a");
    assert.ok(podSwitchPort(uid).length <= 15);
  });
});
