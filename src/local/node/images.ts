// The local node has no image store: an explicit table maps image names to
// programs already on this machine. Anything not in the table is refused with
// a reason the user can act on, never guessed.
import { existsSync, readdirSync } from "node:fs";
import { basename, join } from "node:path";
import type { BindMount } from "./filesystem.js";

export type ImageKind = "project" | "shell" | "postgres" | "coredns";

export interface ImageReference {
  /** Last path element of the repository, e.g. "busybox" for docker.io/library/busybox:1.36. */
  name: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export interface ResolvedImage {
  kind: ImageKind;
  reference: ImageReference;
  entrypoint: string[];
  cmd: string[];
  /** PATH the image's processes see, as its Dockerfile would set it. */
  path: string;
}

export interface ImageHost {
  /** The Node.js binary that runs the project's CLI. */
  nodeBinary: string;
  /** The repository (package root) whose built CLI the project's image runs. */
  packageRoot: string;
  /** Debian PostgreSQL's bin directory, when installed. */
  postgresBinDir?: string;
  /** Our stand-in for the postgres image's docker-entrypoint.sh, on the host. */
  postgresEntrypoint: string;
  /** CoreDNS as built with the control plane (hack/build-controlplane.sh), when there. */
  coreDnsBinary?: string;
}

/** Where the images' own files appear inside their containers, as in the real images. */
export const projectPathInContainer = "/opt/kube-site-recovery";
export const postgresEntrypointInContainer = "/usr/local/bin/docker-entrypoint.sh";
/** The coredns image's one file and entrypoint. */
export const coreDnsInContainer = "/coredns";

const standardPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
export const supportedImages = ["kube-site-recovery", "busybox", "debian", "ubuntu", "postgres", "coredns"] as const;

/** Splits registry/org/name:tag@digest; rejects what no registry would accept. */
export function parseImageReference(image: string): ImageReference {
  const trimmed = image.trim();
  if (trimmed === "" || /\s/.test(trimmed)) throw new Error(`image "${image}" is not a valid image reference`);
  const [withTag = "", digest] = trimmed.split("@", 2);
  const lastSlash = withTag.lastIndexOf("/");
  const colon = withTag.lastIndexOf(":");
  const hasTag = colon > lastSlash;
  const repository = hasTag ? withTag.slice(0, colon) : withTag;
  const tag = hasTag ? withTag.slice(colon + 1) : undefined;
  const name = repository.slice(repository.lastIndexOf("/") + 1);
  if (name === "" || tag === "") throw new Error(`image "${image}" is not a valid image reference`);
  return { name, repository, ...(tag === undefined ? {} : { tag }), ...(digest === undefined ? {} : { digest }) };
}

/** The highest-versioned Debian PostgreSQL install, e.g. /usr/lib/postgresql/15/bin. */
export function findPostgresBinDir(root = "/usr/lib/postgresql"): string | undefined {
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, "bin", "postgres")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(root, versions[0], "bin");
}

export type ImageResolution = { ok: true; image: ResolvedImage } | { ok: false; reason: string; message: string };

export function resolveImage(
  image: string,
  host: Pick<ImageHost, "postgresBinDir" | "coreDnsBinary">,
): ImageResolution {
  let reference: ImageReference;
  try {
    reference = parseImageReference(image);
  } catch (error) {
    return { ok: false, reason: "InvalidImageName", message: (error as Error).message };
  }
  const notPresent = (why: string): ImageResolution => ({
    ok: false,
    reason: "ErrImageNeverPull",
    message: `image "${image}" cannot run on the ksr local node: ${why}`,
  });
  switch (reference.name) {
    case "kube-site-recovery":
      return { ok: true, image: { kind: "project", reference, entrypoint: ["ksr"], cmd: [], path: standardPath } };
    case "busybox":
      return { ok: true, image: { kind: "shell", reference, entrypoint: [], cmd: ["sh"], path: standardPath } };
    case "debian":
    case "ubuntu":
      return { ok: true, image: { kind: "shell", reference, entrypoint: [], cmd: ["bash"], path: standardPath } };
    case "postgres":
      if (host.postgresBinDir === undefined) {
        return notPresent("it runs Debian's PostgreSQL, which is not installed here (apt-get install postgresql)");
      }
      return {
        ok: true,
        image: {
          kind: "postgres",
          reference,
          entrypoint: ["docker-entrypoint.sh"],
          cmd: ["postgres"],
          path: `${host.postgresBinDir}:${standardPath}`,
        },
      };
    case "coredns":
      if (host.coreDnsBinary === undefined)
        return notPresent("it runs the CoreDNS built with the control plane, which is missing from its directory");
      return {
        ok: true,
        image: { kind: "coredns", reference, entrypoint: [coreDnsInContainer], cmd: [], path: standardPath },
      };
    default:
      return notPresent(
        `only ${supportedImages.join(", ")} are in the local image table (docs/local-node.md); run it in kind instead`,
      );
  }
}

/**
 * Docker's rule: a container's command replaces the image entrypoint and drops
 * its cmd; args alone replace the cmd. The first word is then mapped to the
 * program on this machine that plays its part.
 */
export function containerArgv(
  image: ResolvedImage,
  command: readonly string[] | undefined,
  args: readonly string[] | undefined,
  host: ImageHost,
): string[] {
  const hasCommand = command !== undefined && command.length > 0;
  const entrypoint = hasCommand ? command : image.entrypoint;
  const rest = args !== undefined && args.length > 0 ? args : hasCommand ? [] : image.cmd;
  const [first, ...tail] = [...entrypoint, ...rest];
  if (first === undefined) throw new Error(`image ${image.reference.repository} has no command to run`);
  return [...hostProgram(image, first, host), ...tail];
}

function hostProgram(image: ResolvedImage, program: string, host: ImageHost): string[] {
  const name = basename(program);
  if (image.kind === "project" && (name === "ksr" || name === "kubectl-dr")) {
    return [host.nodeBinary, join(projectPathInContainer, "bin", `${name}.js`)];
  }
  if (image.kind === "postgres" && name === "docker-entrypoint.sh") return ["/bin/sh", postgresEntrypointInContainer];
  return [program];
}

/** Files an image brings along: the repository for the project's image, the entrypoint for postgres, CoreDNS's binary. */
export function imageMounts(image: ResolvedImage, host: ImageHost): BindMount[] {
  if (image.kind === "project") {
    return [{ source: host.packageRoot, target: projectPathInContainer, readOnly: true, type: "dir" }];
  }
  if (image.kind === "postgres") {
    return [{ source: host.postgresEntrypoint, target: postgresEntrypointInContainer, readOnly: true, type: "file" }];
  }
  if (image.kind === "coredns" && host.coreDnsBinary !== undefined) {
    return [{ source: host.coreDnsBinary, target: coreDnsInContainer, readOnly: true, type: "file" }];
  }
  return [];
}

/**
 * Stands in for the postgres image's entrypoint: initialise PGDATA on first
 * start (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB as the image documents),
 * then run the server as the postgres user, since PostgreSQL refuses root.
 */
export const postgresEntrypointScript = `#!/bin/sh
set -eu
if [ "$#" -eq 0 ] || [ "\${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ] || [ "$(id -u)" != 0 ]; then exec "$@"; fi
PGDATA="\${PGDATA:-/var/lib/postgresql/data}"
export PGDATA
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"
  printf '%s\\n' "\${POSTGRES_PASSWORD:-postgres}" > "$pwfile"
  chown postgres "$pwfile"
  as_postgres initdb --username="\${POSTGRES_USER:-postgres}" --pwfile="$pwfile" --auth-host=scram-sha-256 --auth-local=trust -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  printf 'host all all all scram-sha-256\\n' >> "$PGDATA/pg_hba.conf"
  if [ -n "\${POSTGRES_DB:-}" ] && [ "\${POSTGRES_DB}" != "\${POSTGRES_USER:-postgres}" ]; then
    as_postgres postgres --single -D "$PGDATA" -c listen_addresses= postgres <<SQL >/dev/null
CREATE DATABASE "\${POSTGRES_DB}";
SQL
  fi
fi
# A container starts in a PID namespace of its own, where the PID in a postmaster.pid copied from a
# running server (a crash-consistent recovery point) names no process. Local pods share the host's
# PIDs, where it may name the source's live postmaster and PostgreSQL would refuse to start; the pod
# owns its claim, so no other server of it runs here.
rm -f "$PGDATA/postmaster.pid"
# In its own network namespace the pod listens on every address, as the image does. A pod on the
# node's loopback fallback (127.x, no namespace) must keep to its own address, or pods would share ports.
pod_ip="$(getent hosts "$(hostname)" | awk '{ print $1; exit }')"
case "$pod_ip" in 127.*) listen="$pod_ip" ;; *) listen='*' ;; esac
exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@" -c "listen_addresses=$listen"
`;
