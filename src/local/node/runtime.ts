// The container runtime: each container is a child process in its own mount
// and UTS namespace (hostname = pod name), in its pod's network namespace
// unless the pod uses the node's network, its output appended to a log file,
// its process tree kept in a cgroup (or at least a process group) of its own.
import { spawn } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readdirSync, readlinkSync, realpathSync, writeFileSync } from "node:fs";
import { constants } from "node:os";
import type { Readable, Writable } from "node:stream";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isRunning, readProcStat, type ProcessRecord } from "../processes.js";
import { killCgroupTree, signalProcessGroup } from "./containment.js";
import type { BindMount, FilesystemPlan, HostView, TopLevelEntry } from "./filesystem.js";
import { planFilesystem, privateDev } from "./filesystem.js";
import { writeContainerLog } from "./kubelet-server/container-log.js";

export interface HostTools {
  unshare: string;
  nsenter: string;
  setpriv: string;
  mount: string;
}

const toolSearchPath = ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"];

/** Absolute paths of the util-linux tools the runtime needs, so a container's PATH cannot change them. */
export function findHostTools(): HostTools {
  const find = (name: string) => {
    const found = toolSearchPath.map((dir) => join(dir, name)).find((path) => existsSync(path));
    if (found === undefined)
      throw new Error(`the local node needs ${name} from util-linux (apt-get install util-linux)`);
    return found;
  };
  return { unshare: find("unshare"), nsenter: find("nsenter"), setpriv: find("setpriv"), mount: find("mount") };
}

export function hostView(): HostView {
  const topLevel: TopLevelEntry[] = readdirSync("/").flatMap((name): TopLevelEntry[] => {
    const stat = lstatSync(join("/", name));
    if (stat.isSymbolicLink()) return [{ name, type: "symlink", linkTarget: readlinkSync(join("/", name)) }];
    if (stat.isDirectory()) return [{ name, type: "dir" }];
    if (stat.isFile()) return [{ name, type: "file" }];
    return [];
  });
  return { topLevel, exists: (path) => existsSync(path), realpath: (path) => realpathSync(path) };
}

export interface LaunchSpec {
  /** Empty host directory the container's root tmpfs is mounted on (inside the namespace only). */
  rootDir: string;
  /** Empty host directory for overlay scratch space (inside the namespace only). */
  scratchDir: string;
  hostname: string;
  /** The pod's network namespace (/run/netns/NAME); absent: the node's own network. */
  netns?: string;
  mounts: BindMount[];
  workingDir: string;
  argv: string[];
  env: Record<string, string>;
  user?: { uid: number; gid: number };
  cgroup?: string;
  logFile: string;
  scriptFile: string;
  /** spec.stdin: the container reads a pipe the node holds, which attach writes to. */
  stdin?: boolean;
  /** spec.tty: the command runs on a pty (the relay above, run by python3 at this path inside the container). */
  tty?: { python3: string };
}

const deviceNodes = ["null", "zero", "full", "random", "urandom", "tty"];

/** A container's /dev as runtimes build it: the harmless device nodes, its own pts view and shm, the usual links. */
function privateDevLines(dev: string, tools: HostTools): string[] {
  const q = shellQuote;
  const mount = q(tools.mount);
  return [
    `${mount} -t tmpfs -o mode=0755,nosuid ksr-dev ${dev}`,
    ...deviceNodes.flatMap((node) => [`: > ${dev}/${node}`, `${mount} --bind /dev/${node} ${dev}/${node}`]),
    `mkdir ${dev}/pts ${dev}/shm`,
    `${mount} --rbind /dev/pts ${dev}/pts`,
    `${mount} -t tmpfs -o mode=1777,nosuid,nodev ksr-shm ${dev}/shm`,
    `ln -s pts/ptmx ${dev}/ptmx`,
    `ln -s /proc/self/fd ${dev}/fd`,
    `ln -s /proc/self/fd/0 ${dev}/stdin`,
    `ln -s /proc/self/fd/1 ${dev}/stdout`,
    `ln -s /proc/self/fd/2 ${dev}/stderr`,
  ];
}

/**
 * The pty relay, `python3 -c ptyRelay WAIT COMMAND...`: runs the command on a new pty, copies fd 0
 * to it and its output to fd 1, applies "cols rows" lines from fd 3 as window sizes, and exits with
 * the command's exit status (128+N for a signal, as shells report it). WAIT is how many seconds to
 * wait for a first size before the command starts: an exec's client sends its terminal's size as
 * the streams open, and a command that reads it at once (stty size, a full-screen program) must
 * see it, not the pty's default.
 */
export const ptyRelay = `
import fcntl, os, pty, select, struct, sys, termios, time
wait = float(sys.argv[1])
command = sys.argv[2:]
master, slave = pty.openpty()
inputs = [0, 3, master]
pending = b""
sized = False
def take(data):
    global pending, sized
    pending += data
    while b"\\n" in pending:
        line, pending = pending.split(b"\\n", 1)
        cols, rows = (int(v) for v in line.split())
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        sized = True
deadline = time.monotonic() + wait
while not sized and 3 in inputs:
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([3], [], [], remaining)[0]:
        break
    data = os.read(3, 65536)
    if data:
        take(data)
    else:
        inputs.remove(3)
pid = os.fork()
if pid == 0:
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    os.execvp(command[0], command)
os.close(slave)
while master in inputs:
    readable, _, _ = select.select(inputs, [], [])
    for fd in readable:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if fd == master:
            if not data:
                inputs.remove(master)
            else:
                os.write(1, data)
        elif not data:
            inputs.remove(fd)
        elif fd == 0:
            os.write(master, data)
        else:
            take(data)
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
sys.exit(128 - code if code < 0 else code)
`;

export const shellQuote = (value: string) => `'${value.replace(/'/g, `'\\''`)}'`;

/** The setup script run as the container's first process; it ends by exec-ing the container's command. */
export function launchScript(spec: LaunchSpec, plan: FilesystemPlan, tools: HostTools): string {
  const q = shellQuote;
  const root = (path: string) => q(join(spec.rootDir, path));
  const lines = ["set -eu"];
  if (spec.cgroup !== undefined) lines.push(`echo $$ > ${q(join(spec.cgroup, "cgroup.procs"))}`);
  lines.push(`${q(tools.mount)} -t tmpfs -o mode=0755 ksr-root ${q(spec.rootDir)}`);
  for (const entry of plan.topLevel) {
    const path = root(entry.name);
    if ("/" + entry.name === privateDev) lines.push(`mkdir ${path}`, ...privateDevLines(path, tools));
    else if (entry.type === "symlink") lines.push(`ln -s ${q(entry.linkTarget ?? "")} ${path}`);
    else if (entry.type === "dir")
      lines.push(`mkdir ${path}`, `${q(tools.mount)} --rbind ${q("/" + entry.name)} ${path}`);
    else lines.push(`: > ${path}`, `${q(tools.mount)} --bind ${q("/" + entry.name)} ${path}`);
  }
  if (plan.overlays.length > 0) lines.push(`${q(tools.mount)} -t tmpfs -o mode=0700 ksr-scratch ${q(spec.scratchDir)}`);
  plan.overlays.forEach((dir, i) => {
    const upper = q(join(spec.scratchDir, String(i), "upper"));
    const work = q(join(spec.scratchDir, String(i), "work"));
    lines.push(
      `mkdir -p ${upper} ${work}`,
      `${q(tools.mount)} -t overlay ksr-overlay -o ${q(`lowerdir=${join(spec.rootDir, dir)}`)},upperdir=${upper},workdir=${work} ${root(dir)}`,
    );
  });
  for (const step of plan.steps) {
    if (step.mkdir !== undefined) lines.push(`mkdir -p ${root(step.mkdir)}`);
    if (step.touch !== undefined)
      lines.push(`mkdir -p ${root(dirname(step.touch))}`, `[ -e ${root(step.touch)} ] || : > ${root(step.touch)}`);
    if (step.bind !== undefined) {
      lines.push(`${q(tools.mount)} --bind ${q(step.bind.source)} ${root(step.bind.target)}`);
      if (step.bind.readOnly) lines.push(`${q(tools.mount)} -o remount,bind,ro ${root(step.bind.target)}`);
    }
  }
  lines.push(`echo ${q(spec.hostname)} > /proc/sys/kernel/hostname`);
  const user =
    spec.user === undefined
      ? []
      : [tools.setpriv, `--reuid=${spec.user.uid}`, `--regid=${spec.user.gid}`, "--clear-groups", "--"];
  // Last, after any uid change (which clears it): the container's main process dies with the node agent.
  const dieWithAgent = [tools.setpriv, "--pdeathsig", "KILL", "--"];
  // With a tty the relay is the container's main process, and its command runs on the pty it made.
  const onTty = spec.tty === undefined ? [] : [spec.tty.python3, "-c", ptyRelay, "0"];
  const command = [
    tools.unshare,
    `--root=${spec.rootDir}`,
    `--wd=${plan.workingDir}`,
    "--",
    ...user,
    ...dieWithAgent,
    ...onTty,
    ...spec.argv,
  ];
  lines.push(`exec ${command.map(q).join(" ")}`);
  return lines.join("\n") + "\n";
}

export interface ContainerExit {
  exitCode: number;
  signal?: NodeJS.Signals;
}

export interface RunningProcess {
  record: ProcessRecord;
  exited: Promise<ContainerExit>;
  /** Resolves once the launch script has built the container's root and handed over to its command (or exited). */
  setUp: Promise<void>;
  /** Resolves once all the container's output is in its log file (its stdout and stderr closed). */
  logWritten: Promise<void>;
  /** The container's standard input (spec.stdin), for attach. */
  stdin?: Writable;
  /** "cols rows" lines set the pty's window size (spec.tty). */
  resize?: Writable;
}

/** The launch script's last step changes the process's root; until then the container is still being assembled. */
async function waitForSetUp(pid: number, exited: Promise<ContainerExit>): Promise<void> {
  const state = { exited: false };
  void exited.then(() => {
    state.exited = true;
  });
  while (!state.exited) {
    try {
      if (readlinkSync(`/proc/${pid}/root`) !== "/") return;
    } catch {
      return;
    }
    await sleep(10);
  }
}

/** The command that runs the launch script in new mount and UTS namespaces, inside the pod's network namespace. */
function launchCommand(spec: LaunchSpec, tools: HostTools): [string, string[]] {
  const unshareArgs = ["--mount", "--uts", "--propagation", "private", "--", "/bin/sh", spec.scriptFile];
  if (spec.netns === undefined) return [tools.unshare, unshareArgs];
  // nsenter without --pid execs rather than forks, so the recorded pid stays the container's main process.
  return [tools.nsenter, [`--net=${spec.netns}`, "--", tools.unshare, ...unshareArgs]];
}

/** Starts a container: writes its launch script and spawns it in new mount and UTS namespaces. */
export function startContainer(spec: LaunchSpec, tools: HostTools, host: HostView = hostView()): RunningProcess {
  const plan = planFilesystem(spec.mounts, spec.workingDir, host);
  mkdirSync(dirname(spec.scriptFile), { recursive: true });
  mkdirSync(spec.rootDir, { recursive: true });
  mkdirSync(spec.scratchDir, { recursive: true });
  writeFileSync(spec.scriptFile, launchScript(spec, plan, tools), { mode: 0o700 });
  mkdirSync(dirname(spec.logFile), { recursive: true });
  const [command, args] = launchCommand(spec, tools);
  // Output goes through the node, which stamps each line (CRI log format), as a runtime's shim does.
  const child = spawn(command, args, {
    detached: true,
    stdio: [spec.stdin === true ? "pipe" : "ignore", "pipe", "pipe", spec.tty === undefined ? "ignore" : "pipe"],
    env: spec.env,
  });
  // The command may exit without reading its input, or the relay without its sizes.
  const stdin = child.stdin ?? undefined;
  const resize = (child.stdio[3] as Writable | null) ?? undefined;
  for (const pipe of [stdin, resize]) pipe?.on("error", () => undefined);
  const [stdout, stderr] = [child.stdout, child.stderr] as [Readable, Readable];
  const logWritten = writeContainerLog(spec.logFile, { stdout, stderr });
  const exited = new Promise<ContainerExit>((resolve) => {
    child.on("error", () => {
      resolve({ exitCode: 128 });
    });
    child.on("exit", (code, signal) => {
      if (signal !== null) resolve({ exitCode: 128 + constants.signals[signal], signal });
      else resolve({ exitCode: code ?? 128 });
    });
  });
  const pid = child.pid ?? -1;
  return {
    record: { name: spec.hostname, pid, startTicks: readProcStat(pid)?.startTicks ?? -1, logFile: spec.logFile },
    exited,
    setUp: waitForSetUp(pid, exited),
    logWritten,
    ...(stdin === undefined ? {} : { stdin }),
    ...(resize === undefined ? {} : { resize }),
  };
}

/** Sends a signal to the container's main process only, as a container runtime's stop does. */
export function signalContainer(record: ProcessRecord, signal: NodeJS.Signals): void {
  if (!isRunning(record)) return;
  try {
    process.kill(record.pid, signal);
  } catch {
    // Exited meanwhile.
  }
}

/** Kills everything the container started: its cgroup when it has one, its process group otherwise. */
export async function killContainerTree(record: ProcessRecord, cgroup: string | undefined): Promise<void> {
  signalProcessGroup(record, "SIGKILL");
  if (cgroup !== undefined) await killCgroupTree(cgroup);
  const deadline = Date.now() + 5000;
  while (isRunning(record) && Date.now() < deadline) await sleep(20);
}

export interface ExecResult {
  exitCode: number;
  output: string;
}

/** Runs a command inside a running container's namespaces (network too), root and working directory (exec probes). */
export function execInContainer(
  pid: number,
  argv: string[],
  env: Record<string, string>,
  timeoutMs: number,
  tools: HostTools,
): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = spawn(
      tools.nsenter,
      [`--target=${pid}`, "--mount", "--uts", "--net", "--root", "--wd", "--", ...argv],
      {
        env,
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      },
    );
    let output = "";
    const collect = (chunk: Buffer) => {
      if (output.length < 10_000) output += chunk.toString();
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    const timer = setTimeout(() => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }, timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      resolve({ exitCode: 126, output: error.message });
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ exitCode: signal !== null ? 128 + constants.signals[signal] : (code ?? 126), output });
    });
  });
}
