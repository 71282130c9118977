// The demo's shop: examples/ as a user applies them, with the changes a demo needs. The API
// writes every order into PostgreSQL (the examples' API only spools them) and logs each one with
// the row's item and its answer, so what a failover recovered can be checked against what the
// writer acknowledged; a load generator posts orders all the time. The policy cuts
// crash-consistent points every 30 s instead of 5 min, so a drill has a fresh point without
// waiting. The namespaces are the demo's choice (`shop`, recovered into `shop-recovery`, drilled
// in `shop-drill`), so a test can run it beside others.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import type { KubeObject } from "../runtime/index.js";
import { packageRoot } from "../util/package-root.js";

export const defaultShopNamespace = "shop";
export const planName = "shop";

export interface ShopNamespaces {
  /** Where the shop runs first, and where its ProtectedMachines, plan and runs live. */
  shop: string;
  /** spec.target.namespace of every machine. */
  recovery: string;
  /** The drill's own namespace: the Test run creates it, cleanup deletes it. */
  drill: string;
}

export function shopNamespaces(shop: string): ShopNamespaces {
  return { shop, recovery: `${shop}-recovery`, drill: `${shop}-drill` };
}
export const machineNames = ["shop-db", "shop-api", "shop-web"] as const;

/**
 * The API: POST /orders inserts a row (psql from the image's PostgreSQL client) and appends
 * `TIME PATH CODE ITEM` to its spool, the writer's own log (ITEM, the row's item, ties a row to
 * its line); GET answers 200 (the plan's smoke test).
 */
const apiScript = `
import http.server, os, subprocess, time
def psql(sql):
    return subprocess.run(["psql", "-h", os.environ["DATABASE_HOST"], "-U", "postgres", "-tAc", sql],
                          capture_output=True, text=True, timeout=10)
while psql("CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, item text NOT NULL, at timestamptz NOT NULL DEFAULT now())").returncode != 0:
    time.sleep(1)
class Api(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        code, logged_item = 200, ""
        if self.path.startswith("/orders"):
            item = time.time_ns()
            code = 200 if psql("INSERT INTO orders (item) VALUES ('%d')" % item).returncode == 0 else 503
            logged_item = f" {item}"
        with open("/var/spool/shop/orders.log", "a") as spool:
            spool.write(f"{time.time()} {self.path} {code}{logged_item}\\n")
        self.send_response(code)
        self.end_headers()
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), Api).serve_forever()
`;

type Manifest = KubeObject & Record<string, unknown>;

function examples(file: string): Manifest[] {
  const text = readFileSync(join(packageRoot, "examples", file), "utf8");
  return parseAllDocuments(text)
    .map((doc) => doc.toJS() as Manifest | null)
    .filter((object): object is Manifest => object !== null);
}

interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: unknown[];
}
interface WithPod {
  spec: { template: { spec: { containers: Container[] } } };
}

/** The application (database, API, web), as examples/ has it but for the API writing to PostgreSQL. */
export function applicationManifests(): Manifest[] {
  const objects = examples("00-application.yaml");
  const api = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "shop-api") as
    (Manifest & WithPod) | undefined;
  const container = api?.spec.template.spec.containers[0];
  if (container === undefined) throw new Error("examples/00-application.yaml has no shop-api Deployment");
  container.command = ["python3", "-c"];
  container.args = [apiScript];
  container.env = [
    { name: "DATABASE_HOST", value: "shop-db" },
    { name: "PGPASSWORD", valueFrom: { secretKeyRef: { name: "shop-db", key: "password" } } },
  ];
  return objects;
}

export const loadGeneratorName = "shop-load";

/** Posts an order to the shop's API five times a second, from the site the shop runs in; not protected. */
export function loadGenerator(site: "primary" | "recovery"): Manifest {
  const labels = { "app.kubernetes.io/name": loadGeneratorName };
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: loadGeneratorName, labels },
    spec: {
      replicas: 1,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          nodeSelector: { "topology.dr.ksr.io/site": site },
          terminationGracePeriodSeconds: 1,
          containers: [
            {
              name: "load",
              image: "busybox:1.36",
              command: [
                "sh",
                "-c",
                "trap 'exit 0' TERM; while true; do wget -q -O /dev/null --post-data=x http://shop-api/orders; sleep 0.2; done",
              ],
            },
          ],
        },
      },
    },
  };
}

/**
 * Policy, machines and plan from examples/: the policy cuts a crash-consistent point every 30 s,
 * the machines recover into the namespace given, and the web tier warms up for `warmUp` (the
 * examples' 30 s, shorter in the reduced demo).
 */
export function protectionManifests(recoveryNamespace: string, warmUp: string): Manifest[] {
  const objects = [
    ...examples("10-replication-policy.yaml"),
    ...examples("20-protected-machines.yaml"),
    ...examples("30-recovery-plan.yaml"),
  ];
  for (const object of objects)
    if (object.kind === "ReplicationPolicy") {
      const spec = object.spec as Record<string, unknown>;
      spec.crashConsistentFrequency = "30s";
      delete spec.bandwidthLimit;
    } else if (object.kind === "ProtectedMachine") {
      (object.spec as { target: { namespace: string } }).target.namespace = recoveryNamespace;
    } else if (object.kind === "RecoveryPlan") {
      const groups = (object.spec as { groups: { postActions?: { name: string; wait?: { duration: string } }[] }[] })
        .groups;
      for (const action of groups.flatMap((group) => group.postActions ?? []))
        if (action.wait !== undefined) action.wait.duration = warmUp;
    }
  return objects;
}

/** The API's spool claim, and its log on that volume: what the writer itself says it acknowledged. */
export const spoolClaimName = "shop-api-spool";
export const orderLogFile = "orders.log";

export interface LoggedOrder {
  /** The row's item: the API's clock (Unix nanoseconds) as it took the order. */
  item: string;
  /** The API's clock (Unix milliseconds) as it answered. */
  answeredMs: number;
  /** The HTTP status it answered: 200 once the row was committed. */
  code: number;
}

/**
 * The orders of the API's spool, in the order it took them. Only lines ended by a newline count:
 * a site that loses power mid-write leaves a torn last line. A complete line of another shape is
 * not the demo's API and is an error, not something to skip.
 */
export function parseOrderLog(text: string): LoggedOrder[] {
  const orders: LoggedOrder[] = [];
  for (const line of text.split("\n").slice(0, -1)) {
    const match = /^(\d+(?:\.\d+)?) (\S+) (\d{3})(?: (\d+))?$/.exec(line);
    if (match === null) throw new Error(`the API's spool has a line of an unknown shape: ${JSON.stringify(line)}`);
    const [, time = "", path = "", code = "", item] = match;
    if (!path.startsWith("/orders")) continue;
    if (item === undefined) throw new Error(`the API's spool has an order without its item: ${JSON.stringify(line)}`);
    orders.push({ item, answeredMs: Number(time) * 1000, code: Number(code) });
  }
  return orders;
}
