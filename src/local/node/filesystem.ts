// The filesystem a container sees: the machine's own root, rebuilt inside a
// private mount namespace on a tmpfs (so directories created for mount points
// never touch the host), with the pod's volumes bind-mounted at their paths.
// This module only plans; runtime.ts turns the plan into a shell script that
// runs inside `unshare --mount --propagation private`.
import { posix } from "node:path";

export interface BindMount {
  /** Host path of the volume (or file) to expose. */
  source: string;
  /** Absolute path inside the container. */
  target: string;
  readOnly: boolean;
  type: "dir" | "file";
}

export interface TopLevelEntry {
  name: string;
  type: "dir" | "file" | "symlink";
  linkTarget?: string;
}

export interface HostView {
  /** Entries of the host's "/", which become the container's root. */
  topLevel: TopLevelEntry[];
  exists(path: string): boolean;
  /** Host realpath of an existing path. */
  realpath(path: string): string;
}

export interface FilesystemPlan {
  topLevel: TopLevelEntry[];
  /** Host directories that get a throw-away overlay so missing mount points can be created inside them. */
  overlays: string[];
  steps: { mkdir?: string; touch?: string; bind?: BindMount }[];
  workingDir: string;
}

/** Rejects relative paths and ".." so a pod spec can never aim a mount outside the container's root. */
export function normalizeContainerPath(path: string, what: string): string {
  if (!path.startsWith("/")) throw new Error(`${what} "${path}" must be an absolute path`);
  if (path.split("/").includes("..")) throw new Error(`${what} "${path}" must not contain ".."`);
  const normalized = posix.normalize(path);
  return normalized.length > 1 ? normalized.replace(/\/$/, "") : normalized;
}

/** The container gets its own /dev (a tmpfs with the usual device nodes), so device paths are created there. */
export const privateDev = "/dev";

const isWithin = (path: string, dir: string) => dir === "/" || path === dir || path.startsWith(dir + "/");
const depth = (path: string) => path.split("/").filter(Boolean).length;

function deepestExisting(path: string, host: HostView): string {
  let current = path;
  while (current !== "/" && !host.exists(current)) current = posix.dirname(current);
  return current;
}

interface Placement {
  /** Where the path really is inside the container, symlinks of the host resolved. */
  path: string;
  /** It must be created (inside a volume, the root tmpfs, or an overlay). */
  create: boolean;
  /** Host directory to overlay first, when the path must be created inside the host's own tree. */
  overlay?: string;
}

function place(path: string, mountTargets: readonly string[], host: HostView): Placement {
  if (mountTargets.some((target) => isWithin(path, target) && path !== target)) return { path, create: true };
  if (mountTargets.includes(path)) return { path, create: false };
  const existing = deepestExisting(path, host);
  const real = existing === "/" ? "/" : host.realpath(existing);
  const resolved = posix.join(real, posix.relative(existing, path));
  if (existing === path) return { path: resolved, create: false };
  if (mountTargets.some((target) => isWithin(resolved, target))) return { path: resolved, create: true };
  if (real === "/" || isWithin(resolved, privateDev)) return { path: resolved, create: true };
  return { path: resolved, create: true, overlay: real };
}

/** Drops overlays nested in another overlay: the outer one already makes them writable. */
function outermost(dirs: string[]): string[] {
  const sorted = [...new Set(dirs)].sort((a, b) => depth(a) - depth(b));
  return sorted.filter((dir, i) => !sorted.slice(0, i).some((outer) => isWithin(dir, outer)));
}

export function planFilesystem(mounts: readonly BindMount[], workingDir: string, host: HostView): FilesystemPlan {
  const ordered = [...mounts].sort((a, b) => depth(a.target) - depth(b.target));
  const targets: string[] = [];
  const overlays: string[] = [];
  const steps: FilesystemPlan["steps"] = [];
  for (const mount of ordered) {
    const placement = place(mount.target, targets, host);
    if (placement.overlay !== undefined) overlays.push(placement.overlay);
    if (placement.create) steps.push(mount.type === "dir" ? { mkdir: placement.path } : { touch: placement.path });
    steps.push({ bind: { ...mount, target: placement.path } });
    targets.push(placement.path);
  }
  const cwd = place(workingDir, targets, host);
  if (cwd.overlay !== undefined) overlays.push(cwd.overlay);
  if (cwd.create) steps.push({ mkdir: cwd.path });
  return { topLevel: host.topLevel, overlays: outermost(overlays), steps, workingDir: cwd.path };
}
