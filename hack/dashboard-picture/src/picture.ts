// Takes the README's dashboard picture: Debian's Prometheus scrapes the operator's /metrics on a
// running cluster, a page renders charts/kube-site-recovery/files/dashboard.json with Grafana's
// panel components against that Prometheus, and headless Chromium screenshots it.
//
//   bash hack/dashboard-picture.sh [--kubeconfig K] [--scrape-minutes N] …
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { type AddressInfo, createServer as createNetServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { Readable, type Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { build, type Plugin } from "esbuild";

const toolDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repoRoot = resolve(toolDir, "..", "..");
const SCRAPE_SECONDS = 10;

const usage = `usage: bash hack/dashboard-picture.sh [options]
  --kubeconfig FILE      the cluster running the operator (default $KUBECONFIG, else ~/.ksr/local/kubeconfig)
  --namespace NS         the operator's namespace (default ksr-system)
  --data DIR             Prometheus's storage; reuse it to keep earlier samples (default a temporary directory)
  --scrape-minutes N     wait until Prometheus holds N minutes of the operator's samples (default 5)
  --from TIME            the picture's time range start, e.g. now-30m (default the dashboard's)
  --width PX             the browser window's width (default 1600)
  --out FILE             the picture (default docs/images/dashboard.png)
  --prometheus URL       use this running Prometheus (it must scrape the operator) instead of starting one
  --keep                 leave Prometheus and the page running after the picture, until Ctrl-C`;

const { values: args } = parseArgs({
  options: {
    kubeconfig: { type: "string" },
    namespace: { type: "string", default: "ksr-system" },
    data: { type: "string" },
    "scrape-minutes": { type: "string", default: "5" },
    from: { type: "string" },
    width: { type: "string", default: "1600" },
    out: { type: "string", default: join(repoRoot, "docs", "images", "dashboard.png") },
    prometheus: { type: "string" },
    keep: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  console.log(usage);
  process.exit(0);
}
function positive(name: string, text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) fail(`--${name} ${text}: give a positive number`);
  return value;
}
function fail(message: string): never {
  console.error(`dashboard-picture: ${message}`);
  process.exit(2);
}
const kubeconfig = args.kubeconfig ?? process.env.KUBECONFIG ?? join(homedir(), ".ksr", "local", "kubeconfig");
if (!existsSync(kubeconfig))
  fail(`kubeconfig ${kubeconfig} not found: start a cluster (npx ksr local up) or pass --kubeconfig`);
const scrapeMinutes = positive("scrape-minutes", args["scrape-minutes"]);
const width = positive("width", args.width);
if (args.from !== undefined && !/^now-\d+[smhd]$/.test(args.from))
  fail(`--from ${args.from}: give now-N followed by s, m, h or d`);
const dashboardFile = join(repoRoot, "charts", "kube-site-recovery", "files", "dashboard.json");
const dashboard = JSON.parse(readFileSync(dashboardFile, "utf8")) as {
  time: { from: string };
  panels: { gridPos: { y: number; h: number } }[];
};

const say = (line: string) => console.log(`dashboard-picture: ${line}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const children: ChildProcess[] = [];
const cleanups: (() => void)[] = [];
function cleanup() {
  for (const child of children) child.kill("SIGTERM");
  for (const step of cleanups.reverse()) step();
}
process.on("SIGINT", () => {
  cleanup();
  process.exit(130);
});

async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** The operator's metrics endpoints (both replicas: only the leader exports the ksr_* series). */
async function operatorEndpoints(): Promise<string[]> {
  const { stdout } = await promisify(execFile)("kubectl", [
    "--kubeconfig",
    kubeconfig,
    "-n",
    args.namespace,
    "get",
    "endpointslices",
    "-l",
    "kubernetes.io/service-name=ksr-operator-metrics",
    "-o",
    "json",
  ]);
  const slices = JSON.parse(stdout) as {
    items: { endpoints?: { addresses: string[] }[]; ports?: { name?: string; port: number }[] }[];
  };
  return slices.items.flatMap((slice) =>
    (slice.endpoints ?? []).flatMap((e) => e.addresses.map((a) => `${a}:${slice.ports?.[0]?.port ?? 8080}`)),
  );
}

async function promQuery(
  base: string,
  query: string,
): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const response = await fetch(`${base}/api/v1/query?${new URLSearchParams({ query }).toString()}`);
  const body = (await response.json()) as {
    data?: { result: { metric: Record<string, string>; value: [number, string] }[] };
  };
  return body.data?.result ?? [];
}

async function startPrometheus(): Promise<string> {
  const dataDir = args.data ?? mkdtempSync(join(tmpdir(), "ksr-dashboard-prometheus-"));
  if (args.data === undefined) cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  mkdirSync(dataDir, { recursive: true });
  const targetsFile = join(dataDir, "targets.json");
  const refreshTargets = async () => {
    const targets = await operatorEndpoints();
    writeFileSync(targetsFile, JSON.stringify([{ targets, labels: { service: "ksr-operator-metrics" } }]));
    return targets;
  };
  const targets = await refreshTargets();
  if (targets.length === 0)
    fail(
      `no endpoints behind Service ${args.namespace}/ksr-operator-metrics: install the operator (npx ksr install --wait)`,
    );
  say(`operator metrics endpoints: ${targets.join(", ")}`);
  // Debian's Prometheus is built without Kubernetes service discovery, so the endpoints are
  // rediscovered here and handed over through file_sd (a takeover moves the leader).
  const timer = setInterval(() => void refreshTargets().catch(() => undefined), 15_000);
  cleanups.push(() => clearInterval(timer));
  const configFile = join(dataDir, "prometheus.yml");
  writeFileSync(
    configFile,
    [
      "global:",
      `  scrape_interval: ${SCRAPE_SECONDS}s`,
      "scrape_configs:",
      "  - job_name: ksr-operator",
      "    file_sd_configs:",
      `      - files: [${JSON.stringify(targetsFile)}]`,
      "        refresh_interval: 10s",
      "",
    ].join("\n"),
  );
  const port = await freePort();
  const prometheus = spawn(
    "prometheus",
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(dataDir, "tsdb")}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  children.push(prometheus);
  let log = "";
  prometheus.stderr.on("data", (chunk: Buffer) => (log = (log + chunk.toString()).slice(-4000)));
  prometheus.on("error", (error) => fail(`prometheus: ${error.message} (apt-get install prometheus)`));
  prometheus.on("exit", (code) => {
    if (code !== null && code !== 0) fail(`prometheus exited with ${code}:\n${log}`);
  });
  const base = `http://127.0.0.1:${port}`;
  say(`Prometheus ${base} scraping every ${SCRAPE_SECONDS}s, storage ${dataDir}`);
  return base;
}

async function waitForSamples(base: string) {
  const wanted = Math.floor((scrapeMinutes * 60) / SCRAPE_SECONDS);
  for (let polls = 0; ; polls++) {
    const [samples] = await promQuery(base, `max(count_over_time(ksr_machine_rpo_seconds[${scrapeMinutes}m]))`).catch(
      () => [],
    );
    const count = samples ? Number(samples.value[1]) : 0;
    // A line a minute, and the last one.
    if (count >= wanted || polls % Math.round(60 / SCRAPE_SECONDS) === 0)
      say(`${count}/${wanted} samples of ksr_machine_rpo_seconds in the last ${scrapeMinutes} min`);
    if (count >= wanted) return;
    await sleep(SCRAPE_SECONDS * 1000);
  }
}

/**
 * @grafana/ui's .mjs files default-import some CommonJS packages that set __esModule; esbuild gives a
 * .mjs importer Node's answer (the exports object), Grafana's own bundler gives exports.default.
 * The named packages are imported through a shim that takes their exports.default.
 */
function commonJsDefaultInterop(...names: string[]): Plugin {
  const filter = new RegExp(`^(${names.join("|")})$`);
  return {
    name: "commonjs-default-interop",
    setup(plugin) {
      plugin.onResolve({ filter }, (what) =>
        what.namespace === "interop" ? undefined : { path: what.path, namespace: "interop" },
      );
      plugin.onLoad({ filter: /.*/, namespace: "interop" }, (what) => ({
        contents: `import * as m from ${JSON.stringify(what.path)}; export default m.default ?? m;`,
        resolveDir: toolDir,
        loader: "js",
      }));
    },
  };
}

/** The page's script and style sheet (uPlot's and the components' CSS imports). */
async function bundlePage(): Promise<{ js: string; css: string }> {
  const result = await build({
    entryPoints: [join(toolDir, "src", "page.tsx")],
    bundle: true,
    format: "esm",
    target: "chrome120",
    jsx: "automatic",
    minify: process.env.PICTURE_DEBUG === undefined,
    write: false,
    outdir: "/page",
    logLevel: "warning",
    define: {
      "process.env.NODE_ENV": JSON.stringify(process.env.PICTURE_DEBUG === undefined ? "production" : "development"),
    },
    plugins: [commonJsDefaultInterop("react-custom-scrollbars-2")],
    loader: {
      ".svg": "text",
      ".woff2": "empty",
      ".woff": "empty",
      ".ttf": "empty",
      ".png": "dataurl",
      ".gif": "dataurl",
    },
  });
  const output = (ext: string) => result.outputFiles.find((file) => file.path.endsWith(ext))?.text ?? "";
  const js = output(".js");
  if (js === "") throw new Error("esbuild produced no script");
  say(`bundled the page with esbuild: ${(js.length / 1e6).toFixed(1)} MB of script`);
  return { js, css: output(".css") };
}

async function servePage(prometheus: string, bundle: { js: string; css: string }): Promise<string> {
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>loading</title><link rel="stylesheet" href="/page.css"></head>
<body style="margin:0"><div id="root"></div><script type="module" src="/page.js"></script></body></html>`;
  const server: Server = createServer((request, response) => {
    const url = request.url ?? "/";
    if (url.startsWith("/api/v1/")) {
      // Same origin for the page: the Prometheus API behind a plain proxy, as Grafana's data source proxy does.
      void fetch(prometheus + url)
        .then((upstream) => {
          response.writeHead(upstream.status, {
            "content-type": upstream.headers.get("content-type") ?? "application/json",
          });
          if (upstream.body) Readable.fromWeb(upstream.body as never).pipe(response as Writable);
          else response.end();
        })
        .catch((error: unknown) => {
          response.writeHead(502).end(String(error));
        });
      return;
    }
    const path = url.replace(/\?.*$/, "");
    const [type, body] =
      path === "/"
        ? ["text/html", html]
        : path === "/page.js"
          ? ["text/javascript", bundle.js]
          : path === "/page.css"
            ? ["text/css", bundle.css]
            : path === "/dashboard.json"
              ? ["application/json", readFileSync(dashboardFile, "utf8")]
              : [undefined, ""];
    if (type === undefined) response.writeHead(404).end();
    else response.writeHead(200, { "content-type": type }).end(body);
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  cleanups.push(() => server.close());
  return `http://127.0.0.1:${port}/`;
}

/** Chromium over the DevTools protocol on a pipe: open the page, wait until it says it has drawn, capture. */
async function screenshot(url: string, height: number): Promise<Buffer> {
  const profile = mkdtempSync(join(tmpdir(), "ksr-dashboard-chromium-"));
  // Chromium may still be writing its profile as it exits.
  cleanups.push(() => rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }));
  const chromium = spawn(
    "chromium",
    [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--hide-scrollbars",
      "--remote-debugging-pipe",
      `--window-size=${width},${height}`,
      `--user-data-dir=${profile}`,
      "about:blank",
    ],
    { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] },
  );
  children.push(chromium);
  chromium.on("error", (error) => fail(`chromium: ${error.message} (apt-get install chromium)`));
  const toBrowser = chromium.stdio[3] as Writable;
  const fromBrowser = chromium.stdio[4] as Readable;
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  const consoleLines: string[] = [];
  let buffered = "";
  fromBrowser.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    let end;
    while ((end = buffered.indexOf("\0")) >= 0) {
      const message = JSON.parse(buffered.slice(0, end)) as {
        id?: number;
        result?: Record<string, unknown>;
        error?: { message: string };
        method?: string;
        params?: { type?: string; args?: { value?: unknown; description?: string }[] };
      };
      buffered = buffered.slice(end + 1);
      if (message.method === "Runtime.consoleAPICalled")
        consoleLines.push(
          `${message.params?.type ?? ""}: ${(message.params?.args ?? []).map((a) => String(a.value ?? a.description)).join(" ")}`,
        );
      const waiter = message.id === undefined ? undefined : pending.get(message.id);
      if (waiter) {
        pending.delete(message.id as number);
        if (message.error) waiter.reject(new Error(message.error.message));
        else waiter.resolve(message.result ?? {});
      }
    }
  });
  const send = (method: string, params: Record<string, unknown> = {}, sessionId?: string) =>
    new Promise<Record<string, unknown>>((resolvePromise, reject) => {
      const id = nextId++;
      pending.set(id, { resolve: resolvePromise, reject });
      toBrowser.write(JSON.stringify({ id, method, params, sessionId }) + "\0");
    });
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = (await send("Target.attachToTarget", { targetId, flatten: true })) as { sessionId: string };
  await send("Runtime.enable", {}, sessionId);
  await send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: false }, sessionId);
  await send("Page.navigate", { url }, sessionId);
  let title = "";
  for (let waited = 0; waited < 120_000; waited += 500) {
    const { result } = (await send("Runtime.evaluate", { expression: "document.title" }, sessionId)) as {
      result: { value: string };
    };
    title = result.value;
    if (title === "rendered" || title.startsWith("failed")) break;
    await sleep(500);
  }
  for (const line of consoleLines) say(`page ${line}`);
  if (title !== "rendered") throw new Error(`the page did not render: ${title}`);
  const { result: empty } = (await send(
    "Runtime.evaluate",
    { expression: "JSON.stringify(window.emptyPanels)" },
    sessionId,
  )) as {
    result: { value: string };
  };
  for (const title of JSON.parse(empty.value) as string[])
    say(`warning: panel "${title}" has no data (a metric the operator does not export, or nothing happened yet)`);
  const { data } = (await send("Page.captureScreenshot", { format: "png" }, sessionId)) as { data: string };
  chromium.kill("SIGTERM");
  return Buffer.from(data, "base64");
}

async function main() {
  const prometheus = args.prometheus?.replace(/\/$/, "") ?? (await startPrometheus());
  await waitForSamples(prometheus);
  const bundle = await bundlePage();
  const page = await servePage(prometheus, bundle);
  const from = args.from ?? dashboard.time.from;
  const query = new URLSearchParams({ from, scrapeInterval: String(SCRAPE_SECONDS) }).toString();
  // The page's height: the dashboard's rows of Grafana's grid (30 px and an 8 px gap) under a header.
  const rows = Math.max(...dashboard.panels.map((p) => p.gridPos.y + p.gridPos.h));
  const height = 48 + rows * 38 + 8;
  say(`rendering ${page}?${query} in headless Chromium at ${width}x${height}`);
  const png = await screenshot(`${page}?${query}`, height);
  mkdirSync(dirname(args.out), { recursive: true });
  writeFileSync(args.out, png);
  say(`wrote ${args.out} (${(png.length / 1024).toFixed(0)} KiB)`);
  if (args.keep) {
    say(`--keep: Prometheus ${prometheus} and the page ${page}?${query} stay up until Ctrl-C`);
    return;
  }
  cleanup();
  process.exit(0);
}

main().catch((error: unknown) => {
  console.error(`dashboard-picture: ${error instanceof Error ? error.message : String(error)}`);
  cleanup();
  process.exit(1);
});
