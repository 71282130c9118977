import { strict as assert } from "node:assert";
import {
  containerArgv,
  imageMounts,
  parseImageReference,
  resolveImage,
  type ImageHost,
  type ResolvedImage,
} from "../../../src/local/node/images.js";

const host: ImageHost = {
  nodeBinary: "/usr/bin/node",
  packageRoot: "/repo",
  postgresBinDir: "/usr/lib/postgresql/15/bin",
  postgresEntrypoint: "/cluster/node/scripts/postgres-entrypoint.sh",
};

function resolved(image: string): ResolvedImage {
  const result = resolveImage(image, host);
  if (!result.ok) throw new Error(result.message);
  return result.image;
}

describe("local node images", () => {
  const references: [string, { name: string; repository: string; tag?: string; digest?: string }][] = [
    ["busybox", { name: "busybox", repository: "busybox" }],
    ["busybox:1.36", { name: "busybox", repository: "busybox", tag: "1.36" }],
    ["docker.io/library/debian:12", { name: "debian", repository: "docker.io/library/debian", tag: "12" }],
    [
      "localhost:5000/team/kube-site-recovery",
      { name: "kube-site-recovery", repository: "localhost:5000/team/kube-site-recovery" },
    ],
    [
      "ghcr.io/x/postgres:16@sha256:abc",
      { name: "postgres", repository: "ghcr.io/x/postgres", tag: "16", digest: "sha256:abc" },
    ],
  ];
  for (const [image, expected] of references) {
    it(`parses ${image}`, () => {
      assert.deepEqual(parseImageReference(image), expected);
    });
  }
  for (const bad of ["", "  ", "busybox:", "has space:1"]) {
    it(`rejects ${JSON.stringify(bad)}`, () => {
      assert.throws(() => parseImageReference(bad), /not a valid image reference/);
    });
  }

  const table: [string, string][] = [
    ["ghcr.io/acme/kube-site-recovery:v1", "project"],
    ["busybox:1.36", "shell"],
    ["debian:bookworm", "shell"],
    ["ubuntu", "shell"],
    ["postgres:16", "postgres"],
  ];
  for (const [image, kind] of table) {
    it(`maps ${image} to ${kind}`, () => {
      assert.equal(resolved(image).kind, kind);
    });
  }

  it("refuses an image outside the table with ErrImageNeverPull and what is supported", () => {
    const result = resolveImage("nginx:1.27", host);
    assert.ok(!result.ok && result.reason === "ErrImageNeverPull" && result.message.includes("busybox, debian"));
  });

  it("brings the repository along for the project's image and the entrypoint for postgres", () => {
    assert.deepEqual(imageMounts(resolved("kube-site-recovery"), host), [
      { source: "/repo", target: "/opt/kube-site-recovery", readOnly: true, type: "dir" },
    ]);
    assert.deepEqual(imageMounts(resolved("postgres"), host), [
      { source: host.postgresEntrypoint, target: "/usr/local/bin/docker-entrypoint.sh", readOnly: true, type: "file" },
    ]);
    assert.deepEqual(imageMounts(resolved("busybox"), host), []);
  });

  it("refuses postgres when Debian's PostgreSQL is missing, saying how to install it", () => {
    const result = resolveImage("postgres:16", {});
    assert.ok(!result.ok && result.message.includes("apt-get install postgresql"));
  });

  const argv: [string, string[] | undefined, string[] | undefined, string[]][] = [
    ["kube-site-recovery", undefined, undefined, ["/usr/bin/node", "/opt/kube-site-recovery/bin/ksr.js"]],
    ["kube-site-recovery", undefined, ["version"], ["/usr/bin/node", "/opt/kube-site-recovery/bin/ksr.js", "version"]],
    [
      "kube-site-recovery",
      ["/usr/local/bin/ksr", "operator"],
      ["--x"],
      ["/usr/bin/node", "/opt/kube-site-recovery/bin/ksr.js", "operator", "--x"],
    ],
    [
      "kube-site-recovery",
      ["kubectl-dr"],
      ["approve"],
      ["/usr/bin/node", "/opt/kube-site-recovery/bin/kubectl-dr.js", "approve"],
    ],
    ["kube-site-recovery", ["sh", "-c", "true"], undefined, ["sh", "-c", "true"]],
    ["busybox", undefined, undefined, ["sh"]],
    ["busybox", ["sleep"], ["5"], ["sleep", "5"]],
    ["busybox", undefined, ["echo", "hi"], ["echo", "hi"]],
    ["debian", undefined, undefined, ["bash"]],
    ["postgres", undefined, undefined, ["/bin/sh", "/usr/local/bin/docker-entrypoint.sh", "postgres"]],
    [
      "postgres",
      undefined,
      ["postgres", "-c", "fsync=off"],
      ["/bin/sh", "/usr/local/bin/docker-entrypoint.sh", "postgres", "-c", "fsync=off"],
    ],
  ];
  for (const [image, command, args, expected] of argv) {
    it(`runs ${image} command=${JSON.stringify(command)} args=${JSON.stringify(args)} as ${expected.join(" ")}`, () => {
      assert.deepEqual(containerArgv(resolved(image), command, args, host), expected);
    });
  }
});
