// Pods for end-to-end network checks: a web server serving its /etc, and a
// prober that tries its targets every half second and logs one JSON line per
// round; a verdict counts once three rounds in a row agree (a new policy, pod
// or site change takes the cluster a moment).
import type { V1Pod } from "@kubernetes/client-node";
import { siteLabel } from "../../src/local/node/layout.js";
import { readContainerLog } from "../../src/local/node/logs.js";
import { waitFor } from "./local-node-helpers.js";

const proberScript = `
import json, os, socket, time, urllib.request
targets = json.loads(os.environ["TARGETS"])
while True:
    results = {}
    for name, target in sorted(targets.items()):
        try:
            if target.startswith("dns:"):
                socket.getaddrinfo(target[4:], 80, socket.AF_INET, socket.SOCK_STREAM)
            else:
                urllib.request.urlopen(target, timeout=1).read()
            results[name] = "ok"
        except Exception:
            results[name] = "blocked"
    print(json.dumps(results), flush=True)
    time.sleep(0.5)
`;

export type Verdicts = Record<string, "ok" | "blocked">;

/** Serves the pod's /etc on 8080 (so /hostname names the pod), ready once it answers. */
export function webPod(name: string, site: string): V1Pod {
  return {
    metadata: { name, labels: { app: name } },
    spec: {
      nodeSelector: { [siteLabel]: site },
      containers: [
        {
          name: "web",
          image: "debian:12",
          command: ["python3", "-m", "http.server", "8080", "--directory", "/etc"],
          ports: [{ name: "http", containerPort: 8080 }],
          readinessProbe: { httpGet: { path: "/hostname", port: "http" }, periodSeconds: 1 },
        },
      ],
    },
  };
}

/** Targets are URLs, or dns:NAME for a lookup. */
export function prober(
  name: string,
  site: string,
  labels: Record<string, string>,
  targets: Record<string, string>,
): V1Pod {
  return {
    metadata: { name, labels },
    spec: {
      nodeSelector: { [siteLabel]: site },
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: "probe",
          image: "debian:12",
          command: ["python3", "-u", "-c", proberScript],
          env: [{ name: "TARGETS", value: JSON.stringify(targets) }],
        },
      ],
    },
  };
}

/** The prober's log so far; empty until its first start. */
function proberLog(dir: string, namespace: string, pod: string): string {
  try {
    return readContainerLog({ dir, namespace, pod }).trim();
  } catch {
    return "";
  }
}

/** Waits until the prober's last three rounds all show the expected verdicts. */
export function proberSettlesOn(dir: string, namespace: string, pod: string, expected: Verdicts): Promise<true> {
  return waitFor(
    `${namespace}/${pod} sees ${JSON.stringify(expected)}`,
    () => {
      const lines = proberLog(dir, namespace, pod).split("\n").slice(-3);
      if (lines.length < 3 || lines.some((line) => !line.startsWith("{"))) return Promise.resolve(undefined);
      const canonical = (verdicts: Verdicts) => JSON.stringify(Object.entries(verdicts).sort());
      const rounds = lines.map((line) => canonical(JSON.parse(line) as Verdicts));
      return Promise.resolve(rounds.every((round) => round === canonical(expected)) ? true : undefined);
    },
    90_000,
    () => Promise.resolve(proberLog(dir, namespace, pod).split("\n").at(-1) ?? ""),
  );
}
