// One pod's lifecycle on the local node: images, address, volumes, init
// containers in order, containers with restart policy and back-off, probes,
// graceful termination, and the status the rest of the cluster sees.
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { CoreV1Api, V1Container, V1ContainerStatus, V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { dropContainerRecord, killCgroupTree, saveContainerRecord } from "./containment.js";
import { ContainerConfigError, containerEnvironment, expandReferences, type PodFacts } from "./env.js";
import type { EventRecorder } from "./events.js";
import { containerArgv, imageMounts, resolveImage, type ImageHost, type ResolvedImage } from "./images.js";
import { describeError, isNotFound, mergePatch } from "./kube.js";
import { podLogDir, type NodeLayout } from "./layout.js";
import type { PodNetwork, PodSandboxNetwork } from "./network.js";
import {
  coldStart,
  podStatus,
  restartDelayMs,
  shouldRestart,
  type ContainerPhase,
  type ContainerView,
  type PodView,
} from "./pod-status.js";
import { Prober } from "./probes.js";
import { podResolvConf, renderResolvConf } from "./resolv-conf.js";
import { execInContainer, killContainerTree, signalContainer, startContainer, type RunningProcess } from "./runtime.js";
import type { ContainerProcess, ExecTools } from "./kubelet-server/exec.js";
import { containerMounts, preparePodVolumes, VolumeNotReady, type PodVolume, type VolumeSources } from "./volumes.js";

export interface NodeContext {
  nodeName: string;
  hostIP: string;
  layout: NodeLayout;
  core: CoreV1Api;
  sources: VolumeSources;
  /** Pod addresses and network namespaces; also says how pods reach the apiserver. */
  network: PodNetwork;
  images: ImageHost;
  /** The util-linux tools, and python3 for containers with a tty. */
  tools: ExecTools;
  /** Parent cgroup of this cluster's containers, when cgroup2 is usable. */
  cgroupRoot?: string;
  events: EventRecorder;
  log: Logger;
  restartBackoff: { baseMs: number; maxMs: number };
  /** How often file-backed volumes (configMap, secret, token) are rewritten. */
  volumeRefreshMs: number;
  /** True while the node's site is cut off from the API (site down --mode network): nothing is written. */
  cutOff?: () => boolean;
}

interface ContainerRun {
  spec: V1Container;
  init: boolean;
  image?: ResolvedImage;
  phase: ContainerPhase;
  lastTermination?: Extract<ContainerPhase, { kind: "terminated" }>;
  restartCount: number;
  /** Starts so far, naming log files and container IDs. */
  attempts: number;
  process?: RunningProcess;
  cgroup?: string;
  env?: Record<string, string>;
  probers: Prober[];
  ready: boolean;
  started: boolean;
  nextStartAt: number;
  /** Ended under a restart policy that keeps it ended. */
  finished: boolean;
}

const retryMs = 2000;
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function newRun(spec: V1Container, init: boolean, previous: V1ContainerStatus | undefined): ContainerRun {
  return {
    spec,
    init,
    phase: { kind: "waiting", reason: "ContainerCreating" },
    restartCount: previous?.restartCount ?? 0,
    probers: [],
    ready: false,
    started: false,
    nextStartAt: 0,
    finished: false,
    ...coldStart(init, previous),
  };
}

export class PodWorker {
  private readonly runs: ContainerRun[];
  private sandbox?: PodSandboxNetwork;
  private volumes?: Map<string, PodVolume>;
  private readonly startTime: Date;
  private syncing = false;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private removedFromApi = false;
  private finalized = false;
  private lastPublished = "";
  private initFailed = false;
  private readonly uid: string;

  constructor(
    private pod: V1Pod,
    private readonly ctx: NodeContext,
    private readonly onFinalized: (uid: string) => void,
  ) {
    this.uid = pod.metadata?.uid ?? "";
    this.startTime = pod.status?.startTime ?? new Date();
    const previous = (statuses: V1ContainerStatus[] | undefined, name: string) =>
      statuses?.find((s) => s.name === name);
    this.runs = [
      ...(pod.spec?.initContainers ?? []).map((c) =>
        newRun(c, true, previous(pod.status?.initContainerStatuses, c.name)),
      ),
      ...(pod.spec?.containers ?? []).map((c) => newRun(c, false, previous(pod.status?.containerStatuses, c.name))),
    ];
  }

  private get key(): string {
    return `${this.pod.metadata?.namespace}/${this.pod.metadata?.name}`;
  }

  private get podDir(): string {
    return join(this.ctx.layout.pods, this.uid);
  }

  update(pod: V1Pod): void {
    this.pod = pod;
    this.kick();
  }

  /** The pod object is gone from the API (force delete): stop at once. */
  removed(): void {
    this.removedFromApi = true;
    this.kick();
  }

  kick(delayMs = 0): void {
    if (this.finalized) return;
    if (delayMs > 0) {
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = setTimeout(() => {
        this.kick();
      }, delayMs);
      return;
    }
    if (this.syncing) {
      this.again = true;
      return;
    }
    this.syncing = true;
    void this.sync()
      .catch((error: unknown) => {
        this.ctx.log.error({ pod: this.key, error: describeError(error) }, "pod sync failed");
        this.kick(retryMs);
      })
      .finally(() => {
        this.syncing = false;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  private isTerminalInApi(): boolean {
    return this.pod.status?.phase === "Succeeded" || this.pod.status?.phase === "Failed";
  }

  private async sync(): Promise<void> {
    if (this.finalized) return;
    if (this.removedFromApi || this.pod.metadata?.deletionTimestamp != null) {
      await this.shutDown();
      return;
    }
    if (this.lastPublished === "" && this.isTerminalInApi()) return; // finished before this agent started
    if (this.podPhaseNow() === "Succeeded" || this.podPhaseNow() === "Failed") return;
    if (!(await this.prepare())) return;
    const pending = this.runs.find((run) => run.init && !(run.phase.kind === "terminated" && run.phase.exitCode === 0));
    if (pending !== undefined) await this.advance(pending);
    else for (const run of this.runs.filter((r) => !r.init)) await this.advance(run);
    if (this.podPhaseNow() === "Succeeded" || this.podPhaseNow() === "Failed") this.finish();
    await this.publish();
  }

  private podPhaseNow(): string {
    return podStatus(this.pod, this.view()).phase ?? "Pending";
  }

  /** Images, address and volumes; false (status published) while the pod cannot start yet. */
  private async prepare(): Promise<boolean> {
    for (const run of this.runs) {
      if (run.image !== undefined) continue;
      const resolution = resolveImage(run.spec.image ?? "", this.ctx.images);
      if (!resolution.ok) {
        this.setWaitingAll(resolution.reason, resolution.message);
        this.ctx.events.warning(this.pod, resolution.reason, resolution.message);
        await this.publish();
        return false;
      }
      run.image = resolution.image;
    }
    if (!(await this.attachNetwork())) return false;
    if (this.volumes !== undefined) return true;
    try {
      this.volumes = await preparePodVolumes(this.podDir, this.facts(), this.ctx.sources);
      this.writeNetworkFiles();
      this.scheduleVolumeRefresh();
      return true;
    } catch (error) {
      if (!(error instanceof VolumeNotReady)) throw error;
      this.setWaitingAll("ContainerCreating", error.message);
      this.ctx.events.warning(this.pod, "FailedMount", error.message);
      await this.publish();
      this.kick(retryMs);
      return false;
    }
  }

  /** The pod's own network namespace and address, or the node's for hostNetwork pods. */
  private async attachNetwork(): Promise<boolean> {
    if (this.sandbox !== undefined) return true;
    if (this.pod.spec?.hostNetwork === true) {
      this.sandbox = { podIP: this.ctx.hostIP };
      return true;
    }
    try {
      this.sandbox = await this.ctx.network.attach(this.uid, this.ctx.nodeName);
      return true;
    } catch (error) {
      const message = `failed to set up the pod's network: ${describeError(error)}`;
      this.setWaitingAll("ContainerCreating", message);
      this.ctx.events.warning(this.pod, "FailedCreatePodSandBox", message);
      await this.publish();
      this.kick(retryMs);
      return false;
    }
  }

  private get podIP(): string | undefined {
    return this.sandbox?.podIP;
  }

  private facts(): PodFacts {
    return { pod: this.pod, podIP: this.podIP ?? "", hostIP: this.ctx.hostIP };
  }

  private setWaitingAll(reason: string, message: string): void {
    for (const run of this.runs) {
      if (run.phase.kind === "waiting") run.phase = { kind: "waiting", reason, message };
    }
  }

  /** The pod's own /etc/hosts, /etc/hostname, /tmp and /run, as a container image would have them. */
  private writeNetworkFiles(): void {
    const name = this.hostname();
    const etc = join(this.podDir, "etc");
    mkdirSync(etc, { recursive: true });
    mkdirSync(join(this.podDir, "tmp"), { recursive: true, mode: 0o1777 });
    mkdirSync(join(this.podDir, "run"), { recursive: true, mode: 0o755 });
    const subdomain = this.pod.spec?.subdomain;
    const fqdn =
      subdomain === undefined ? "" : ` ${name}.${subdomain}.${this.pod.metadata?.namespace}.svc.cluster.local`;
    // The kubelet's file: loopback names, then the pod's own address (its eth0, or the node's for hostNetwork).
    writeFileSync(
      join(etc, "hosts"),
      [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
        `${this.podIP}\t${name}${fqdn}`,
        "",
      ].join("\n"),
    );
    writeFileSync(join(etc, "hostname"), `${name}\n`);
    const resolv = podResolvConf(this.pod, this.ctx.network.clusterDns);
    if (resolv !== undefined) writeFileSync(join(etc, "resolv.conf"), renderResolvConf(resolv));
  }

  private hostname(): string {
    return this.pod.spec?.hostname ?? this.pod.metadata?.name ?? "pod";
  }

  private scheduleVolumeRefresh(): void {
    this.refreshTimer = setInterval(() => {
      void preparePodVolumes(this.podDir, this.facts(), this.ctx.sources).catch((error: unknown) => {
        this.ctx.log.warn({ pod: this.key, error: describeError(error) }, "volume refresh failed");
      });
    }, this.ctx.volumeRefreshMs);
  }

  /** Moves one container forward: start it, or restart it after its back-off. */
  private async advance(run: ContainerRun): Promise<void> {
    if (run.phase.kind === "running" || run.finished) return;
    if (run.phase.kind === "terminated") {
      const policy = run.init && this.pod.spec?.restartPolicy === "Always" ? "OnFailure" : this.pod.spec?.restartPolicy;
      if (!shouldRestart(policy, run.phase.exitCode)) {
        run.finished = true;
        if (run.init) this.initFailed = true;
        return;
      }
      const wait = run.nextStartAt - Date.now();
      if (wait > 0) {
        run.lastTermination = run.phase;
        const message = `back-off ${Math.round(restartDelayMs(run.restartCount + 1, this.ctx.restartBackoff.baseMs, this.ctx.restartBackoff.maxMs) / 1000)}s restarting failed container=${run.spec.name} pod=${this.pod.metadata?.name}`;
        run.phase = { kind: "waiting", reason: "CrashLoopBackOff", message };
        this.ctx.events.warning(this.pod, "BackOff", "Back-off restarting failed container");
        this.kick(wait);
        return;
      }
    }
    if (run.phase.kind === "waiting" && run.nextStartAt > Date.now()) {
      this.kick(run.nextStartAt - Date.now());
      return;
    }
    await this.start(run);
  }

  private async start(run: ContainerRun): Promise<void> {
    const image = run.image;
    if (image === undefined) return;
    let env: Map<string, string>;
    try {
      env = await containerEnvironment(run.spec, this.baseEnvironment(image), this.facts(), this.ctx.sources);
    } catch (error) {
      if (!(error instanceof ContainerConfigError)) throw error;
      run.phase = { kind: "waiting", reason: "CreateContainerConfigError", message: error.message };
      this.ctx.events.warning(this.pod, "Failed", `Error: ${error.message}`);
      this.kick(retryMs);
      return;
    }
    const expand = (values: string[] | undefined) => values?.map((v) => expandReferences(v, env));
    if (run.phase.kind === "terminated") run.lastTermination = run.phase;
    if (run.attempts > 0) run.restartCount++;
    run.attempts++;
    const id = `${this.uid}-${run.spec.name}-${run.attempts}`;
    const cgroup = this.containerCgroup(run);
    try {
      const argv = containerArgv(image, expand(run.spec.command), expand(run.spec.args), this.ctx.images);
      const process = startContainer(
        {
          rootDir: join(this.podDir, "root"),
          scratchDir: join(this.podDir, "scratch", `${run.spec.name}-${run.attempts}`),
          hostname: this.hostname(),
          ...(this.sandbox?.netnsPath === undefined ? {} : { netns: this.sandbox.netnsPath }),
          mounts: [
            ...this.podMounts(),
            ...imageMounts(image, this.ctx.images),
            ...containerMounts(run.spec, this.volumes ?? new Map(), env),
          ],
          workingDir: run.spec.workingDir ?? "/",
          argv,
          env: Object.fromEntries(env),
          user: this.user(run.spec),
          cgroup,
          logFile: join(
            podLogDir(this.ctx.layout, this.pod.metadata?.namespace ?? "", this.pod.metadata?.name ?? "", this.uid),
            run.spec.name,
            `${run.attempts - 1}.log`,
          ),
          scriptFile: join(this.podDir, "launch", `${run.spec.name}-${run.attempts}.sh`),
          stdin: run.spec.stdin === true,
          ...(run.spec.tty === true ? { tty: { python3: this.python3() } } : {}),
        },
        this.ctx.tools,
      );
      saveContainerRecord(this.ctx.layout.clusterDir, id, process.record);
      run.process = process;
      run.cgroup = cgroup;
      run.env = Object.fromEntries(env);
      run.phase = { kind: "running", startedAt: new Date() };
      run.ready = false;
      run.started = run.spec.startupProbe === undefined;
      this.ctx.events.normal(this.pod, "Started", `Started container ${run.spec.name}`);
      void process.exited.then((exit) => {
        this.onExit(run, id, exit.exitCode, exit.signal);
      });
      void process.setUp.then(() => {
        if (run.process !== process) return;
        this.startProbers(run);
        this.kick();
      });
    } catch (error) {
      if (!(error instanceof Error)) throw error;
      run.phase = { kind: "waiting", reason: "CreateContainerError", message: error.message };
      this.ctx.events.warning(this.pod, "Failed", `Error: ${error.message}`);
      if (cgroup !== undefined) await killCgroupTree(cgroup);
      this.kick(retryMs);
    }
  }

  private python3(): string {
    if (this.ctx.tools.python3 === undefined)
      throw new Error("tty: true needs python3 on the node for the container's pty (apt-get install python3)");
    return this.ctx.tools.python3;
  }

  private containerCgroup(run: ContainerRun): string | undefined {
    if (this.ctx.cgroupRoot === undefined) return undefined;
    const path = join(this.ctx.cgroupRoot, `pod-${this.uid}`, `${run.spec.name}-${run.attempts}`);
    try {
      mkdirSync(path, { recursive: true });
      return path;
    } catch {
      return undefined;
    }
  }

  private podMounts() {
    return [
      { source: join(this.podDir, "tmp"), target: "/tmp", readOnly: false, type: "dir" as const },
      { source: join(this.podDir, "run"), target: "/run", readOnly: false, type: "dir" as const },
      { source: join(this.podDir, "etc", "hosts"), target: "/etc/hosts", readOnly: false, type: "file" as const },
      { source: join(this.podDir, "etc", "hostname"), target: "/etc/hostname", readOnly: false, type: "file" as const },
      ...(existsSync(join(this.podDir, "etc", "resolv.conf"))
        ? [
            {
              source: join(this.podDir, "etc", "resolv.conf"),
              target: "/etc/resolv.conf",
              readOnly: false,
              type: "file" as const,
            },
          ]
        : []),
    ];
  }

  private user(container: V1Container): { uid: number; gid: number } | undefined {
    const uid = container.securityContext?.runAsUser ?? this.pod.spec?.securityContext?.runAsUser;
    const gid = container.securityContext?.runAsGroup ?? this.pod.spec?.securityContext?.runAsGroup;
    if (uid === undefined && gid === undefined) return undefined;
    return { uid: uid ?? 0, gid: gid ?? 0 };
  }

  private baseEnvironment(image: ResolvedImage): Map<string, string> {
    return new Map([
      ["PATH", image.path || defaultPath],
      ["HOSTNAME", this.hostname()],
      ["HOME", "/root"],
      ["KUBERNETES_SERVICE_HOST", this.ctx.network.apiServer.host],
      ["KUBERNETES_SERVICE_PORT", String(this.ctx.network.apiServer.port)],
      ["KUBERNETES_SERVICE_PORT_HTTPS", String(this.ctx.network.apiServer.port)],
    ]);
  }

  private startProbers(run: ContainerRun): void {
    const pid = run.process?.record.pid ?? -1;
    const target = {
      podIP: this.podIP ?? "",
      ...(this.ctx.network.probeSource === undefined || this.pod.spec?.hostNetwork === true
        ? {}
        : { sourceAddress: this.ctx.network.probeSource }),
      container: run.spec,
      exec: (argv: string[], timeoutMs: number) => execInContainer(pid, argv, run.env ?? {}, timeoutMs, this.ctx.tools),
    };
    const add = (kind: "startup" | "readiness" | "liveness", probe: V1Container["livenessProbe"]) => {
      if (probe === undefined) return;
      const prober = new Prober(kind, probe, target, (p) => {
        this.onProbe(run, p);
      });
      run.probers.push(prober);
      prober.start();
    };
    if (run.init) return;
    if (!run.started) {
      add("startup", run.spec.startupProbe);
      return;
    }
    add("liveness", run.spec.livenessProbe);
    add("readiness", run.spec.readinessProbe);
    if (run.spec.readinessProbe === undefined) run.ready = true;
  }

  private onProbe(run: ContainerRun, prober: Prober): void {
    if (run.phase.kind !== "running") return;
    if (prober.kind === "readiness") {
      run.ready = prober.result;
      if (!prober.result)
        this.ctx.events.warning(this.pod, "Unhealthy", `Readiness probe failed: ${prober.lastMessage}`);
    } else if (prober.kind === "startup" && prober.succeeded) {
      run.started = true;
      run.probers = [];
      this.startProbers(run);
    } else if (!prober.result) {
      const what = prober.kind === "startup" ? "Startup" : "Liveness";
      this.ctx.events.warning(this.pod, "Unhealthy", `${what} probe failed: ${prober.lastMessage}`);
      this.ctx.events.normal(
        this.pod,
        "Killing",
        `Container ${run.spec.name} failed ${prober.kind} probe, will be restarted`,
      );
      void this.stopContainer(run, this.graceSeconds());
    }
    this.kick();
  }

  private onExit(run: ContainerRun, id: string, exitCode: number, signal?: NodeJS.Signals): void {
    this.ctx.log.info({ pod: this.key, container: run.spec.name, exitCode, signal }, "container exited");
    const startedAt = run.phase.kind === "running" ? run.phase.startedAt : new Date();
    for (const prober of run.probers) prober.stop();
    run.probers = [];
    run.process = undefined;
    run.ready = false;
    const cgroup = run.cgroup;
    run.cgroup = undefined;
    void (cgroup === undefined ? Promise.resolve() : killCgroupTree(cgroup)).then(() => {
      dropContainerRecord(this.ctx.layout.clusterDir, id);
    });
    run.phase = {
      kind: "terminated",
      exitCode,
      reason: exitCode === 0 ? "Completed" : "Error",
      startedAt,
      finishedAt: new Date(),
      ...(signal === undefined ? {} : { message: `terminated by ${signal}` }),
    };
    const delay = restartDelayMs(run.restartCount + 1, this.ctx.restartBackoff.baseMs, this.ctx.restartBackoff.maxMs);
    // A container that ran long enough counts as healthy again: restart it at once, as the kubelet resets back-off.
    const ranMs = Date.now() - startedAt.getTime();
    run.nextStartAt = ranMs > 10 * delay ? 0 : Date.now() + delay;
    this.kick();
  }

  private graceSeconds(): number {
    return this.pod.metadata?.deletionGracePeriodSeconds ?? this.pod.spec?.terminationGracePeriodSeconds ?? 30;
  }

  /** SIGTERM, up to the grace period, then SIGKILL of everything the container started. */
  private async stopContainer(run: ContainerRun, graceSeconds: number): Promise<void> {
    const process = run.process;
    if (process === undefined) return;
    for (const prober of run.probers) prober.stop();
    signalContainer(process.record, "SIGTERM");
    const exited = await Promise.race([
      process.exited.then(() => true),
      new Promise<boolean>((resolve) =>
        setTimeout(() => {
          resolve(false);
        }, graceSeconds * 1000),
      ),
    ]);
    if (!exited) await killContainerTree(process.record, run.cgroup);
    await process.exited;
  }

  /** A pod that ran to completion keeps its status, logs and address, but nothing runs for it any more. */
  private finish(): void {
    this.stopProbers();
    if (this.refreshTimer !== undefined) clearInterval(this.refreshTimer);
    this.refreshTimer = undefined;
  }

  private stopProbers(): void {
    for (const run of this.runs) {
      for (const prober of run.probers) prober.stop();
      run.probers = [];
    }
  }

  /** Deleted pod: stop containers gracefully, let the API forget it, free what it held. */
  private async shutDown(): Promise<void> {
    const running = this.runs.filter((run) => run.process !== undefined);
    if (running.length > 0) this.ctx.events.normal(this.pod, "Killing", "Stopping containers");
    await Promise.all(running.map((run) => this.stopContainer(run, this.graceSeconds())));
    await this.release();
    this.ctx.log.info({ pod: this.key }, "containers stopped; removing the pod");
    if (!this.removedFromApi) {
      await this.publish();
      await this.ctx.core
        .deleteNamespacedPod({
          name: this.pod.metadata?.name ?? "",
          namespace: this.pod.metadata?.namespace ?? "",
          // With a body the apiserver reads the options from it alone: the grace period must be there too.
          body: { gracePeriodSeconds: 0, preconditions: { uid: this.uid } },
        })
        .catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
    }
    this.finalized = true;
    this.onFinalized(this.uid);
  }

  /** Stops every process of the pod at once (node agent shutting down). */
  async kill(): Promise<void> {
    this.finalized = true;
    this.stopProbers();
    await Promise.all(
      this.runs.map(async (run) => {
        if (run.process !== undefined) await killContainerTree(run.process.record, run.cgroup);
      }),
    );
    await this.release();
  }

  private async release(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.refreshTimer !== undefined) clearInterval(this.refreshTimer);
    if (this.ctx.cgroupRoot !== undefined) await killCgroupTree(join(this.ctx.cgroupRoot, `pod-${this.uid}`));
    if (this.sandbox !== undefined && this.pod.spec?.hostNetwork !== true)
      await this.ctx.network.detach(this.uid, this.ctx.nodeName);
    this.sandbox = undefined;
    rmSync(this.podDir, { recursive: true, force: true });
  }

  /** The pod as last seen; the kubelet API finds pods by namespace and name. */
  get object(): V1Pod {
    return this.pod;
  }

  get nodeName(): string {
    return this.ctx.nodeName;
  }

  /** What exec and attach need of a running container; undefined while it is not running. */
  containerProcess(name: string): ContainerProcess | undefined {
    const run = this.runs.find((r) => r.spec.name === name && r.phase.kind === "running");
    const process = run?.process;
    if (run === undefined || process === undefined) return undefined;
    const user = this.user(run.spec);
    return {
      pid: process.record.pid,
      env: run.env ?? {},
      ...(user === undefined ? {} : { user }),
      ...(run.cgroup === undefined ? {} : { cgroup: run.cgroup }),
      attach: {
        ...(process.stdin === undefined ? {} : { stdin: process.stdin }),
        ...(process.resize === undefined ? {} : { resize: process.resize }),
        stdinOnce: run.spec.stdinOnce === true,
      },
    };
  }

  /** Where port-forward connects: inside the pod's network namespace, or to the pod's address without one. */
  get portForwardTarget(): { netns: string } | { host: string } | undefined {
    if (this.sandbox === undefined) return undefined;
    if (this.sandbox.netnsPath !== undefined) return { netns: this.sandbox.netnsPath };
    return { host: this.pod.spec?.hostNetwork === true ? "127.0.0.1" : this.sandbox.podIP };
  }

  private view(): PodView {
    const toView = (run: ContainerRun): ContainerView => ({
      name: run.spec.name,
      image: run.spec.image ?? "",
      imageID: run.image === undefined ? "" : `ksr-local://${run.image.reference.repository}`,
      ...(run.attempts === 0 ? {} : { containerID: `ksr-local://${this.uid}-${run.spec.name}-${run.attempts}` }),
      state: run.phase,
      ...(run.lastTermination === undefined ? {} : { lastTermination: run.lastTermination }),
      restartCount: run.restartCount,
      ready: run.ready,
      started: run.phase.kind === "running" && run.started,
      finished: run.finished,
    });
    return {
      ...(this.podIP === undefined ? {} : { podIP: this.podIP }),
      hostIP: this.ctx.hostIP,
      startTime: this.startTime,
      sandboxReady: this.volumes !== undefined,
      initContainers: this.runs.filter((r) => r.init).map(toView),
      containers: this.runs.filter((r) => !r.init).map(toView),
      initFailed: this.initFailed,
    };
  }

  private async publish(): Promise<void> {
    if (this.ctx.cutOff?.() === true) {
      this.kick(retryMs);
      return;
    }
    const status = podStatus(this.pod, this.view());
    const serialized = JSON.stringify(status);
    if (serialized === this.lastPublished) return;
    try {
      const updated = await this.ctx.core.patchNamespacedPodStatus(
        { name: this.pod.metadata?.name ?? "", namespace: this.pod.metadata?.namespace ?? "", body: { status } },
        mergePatch,
      );
      this.lastPublished = serialized;
      this.pod = updated;
    } catch (error) {
      if (isNotFound(error)) {
        this.removedFromApi = true;
        this.kick();
        return;
      }
      this.ctx.log.warn({ pod: this.key, error: describeError(error) }, "pod status update failed; retrying");
      this.kick(retryMs);
    }
  }
}
