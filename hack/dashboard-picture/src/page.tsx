// Renders a Grafana dashboard JSON with Grafana's own panel components (@grafana/ui, @grafana/data),
// fed by a Prometheus HTTP API. What a Grafana server does for a dashboard is done here in the
// small: resolve the template variables, interpolate the queries ($__range, $__rate_interval),
// turn each Prometheus result into the data frames Grafana's Prometheus data source makes, apply
// the panel's transformations and field config, and lay panels out by gridPos. When every panel
// has drawn, the page sets document.title to "rendered" (or "failed: …") for the screenshot taker.
import {
  applyFieldOverrides,
  createTheme,
  type DataFrame,
  dateTime,
  FieldColorModeId,
  FieldConfigOptionsRegistry,
  type FieldConfigPropertyItem,
  type FieldConfigSource,
  FieldType,
  getFieldDisplayValues,
  type GrafanaTheme2,
  type InterpolateFunction,
  standardTransformers,
  standardTransformersRegistry,
  type TimeRange,
  type DataTransformerConfig,
  type DataTransformerInfo,
  transformDataFrame,
  VizOrientation,
  type FieldDisplay,
} from "@grafana/data";
import {
  BigValue,
  BigValueColorMode,
  BigValueGraphMode,
  BigValueTextMode,
  GlobalStyles,
  LegendDisplayMode,
  PanelChrome,
  Table,
  ThemeContext,
  TimeSeries,
  TooltipDisplayMode,
  VizRepeater,
  type VizLegendOptions,
} from "@grafana/ui";
import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { firstValueFrom } from "rxjs";

interface Target {
  refId: string;
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  format?: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  gridPos: { x: number; y: number; w: number; h: number };
  fieldConfig?: FieldConfigSource;
  options?: Record<string, unknown>;
  transformations?: DataTransformerConfig[];
  targets: Target[];
}
interface Variable {
  name: string;
  type: string;
  includeAll?: boolean;
  allValue?: string;
  query?: { query: string } | string;
}
interface Dashboard {
  title: string;
  time: { from: string; to: string };
  templating: { list: Variable[] };
  panels: Panel[];
}
interface PromSeries {
  metric: Record<string, string>;
  values?: [number, string][];
  value?: [number, string];
}

const params = new URLSearchParams(location.search);
const theme = createTheme({ colors: { mode: params.get("theme") === "light" ? "light" : "dark" } });
/** The data source's scrape interval: Grafana's floor for the query step and $__rate_interval. */
const scrapeSeconds = Number(params.get("scrapeInterval") ?? "15");

// Grafana's grid: 24 columns, 30 px rows, 8 px gaps.
const GRID_COLUMNS = 24;
const ROW_HEIGHT = 30;
const GAP = 8;

/** "now-1h" style relative times, as Grafana's time picker reads them. */
function parseRelative(text: string, now: number): number {
  if (text === "now") return now;
  const match = /^now-(\d+)([smhd])$/.exec(text);
  if (!match) throw new Error(`time ${text}: only now and now-N[smhd] are understood`);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[match[2] as "s" | "m" | "h" | "d"];
  return now - Number(match[1]) * unit * 1000;
}

async function prometheus(path: string, query: Record<string, string>): Promise<unknown> {
  const response = await fetch(`/api/v1/${path}?${new URLSearchParams(query).toString()}`);
  const body = (await response.json()) as { status: string; data?: unknown; error?: string };
  if (body.status !== "success")
    throw new Error(`Prometheus ${path} ${query.query ?? ""}: ${body.error ?? body.status}`);
  return body.data;
}

/** A variable's values: all of them (its "All"), from label_values(metric, label) over the range. */
async function resolveVariables(dashboard: Dashboard, range: TimeRange): Promise<Record<string, string>> {
  const values: Record<string, string> = {};
  for (const variable of dashboard.templating.list) {
    if (variable.type !== "query") continue;
    const text = typeof variable.query === "object" ? variable.query.query : (variable.query ?? "");
    const match = /^label_values\((.*),\s*(\w+)\)$/.exec(text);
    if (!match) throw new Error(`variable ${variable.name}: only label_values(…) queries are understood`);
    const [, selector, label] = match as unknown as [string, string, string];
    const series = (await prometheus("series", {
      "match[]": interpolate(selector, values, range),
      start: String(range.from.unix()),
      end: String(range.to.unix()),
    })) as Record<string, string>[];
    const found = [...new Set(series.map((s) => s[label]).filter((v): v is string => v !== undefined))].sort();
    values[variable.name] = variable.includeAll && variable.allValue ? variable.allValue : `(${found.join("|")})`;
    console.log(`variable ${variable.name}: All = ${found.join(", ") || "(none)"}`);
  }
  return values;
}

function stepSeconds(range: TimeRange, width: number): number {
  const seconds = range.to.unix() - range.from.unix();
  return Math.max(scrapeSeconds, Math.ceil(seconds / Math.max(width, 100)));
}

/** Grafana's substitutions for a Prometheus query; $__rate_interval is max(step + scrape, 4 × scrape). */
function interpolate(expr: string, variables: Record<string, string>, range: TimeRange, step = scrapeSeconds): string {
  const rangeSeconds = range.to.unix() - range.from.unix();
  return expr
    .replaceAll("$__rate_interval", `${Math.max(step + scrapeSeconds, 4 * scrapeSeconds)}s`)
    .replaceAll("$__range", `${rangeSeconds}s`)
    .replaceAll("$__interval", `${step}s`)
    .replace(/\$\{?(\w+)\}?/g, (whole, name: string) => variables[name] ?? whole);
}

function legend(format: string | undefined, labels: Record<string, string>): string | undefined {
  if (!format) return undefined;
  return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, name: string) => labels[name] ?? "");
}

/** The frames Grafana's Prometheus data source makes: one per series, or one table for format=table. */
function toFrames(target: Target, series: PromSeries[]): DataFrame[] {
  if (target.format === "table") {
    const labelNames = [...new Set(series.flatMap((s) => Object.keys(s.metric)))]
      .filter((n) => n !== "__name__")
      .sort();
    const rows = series.map((s): [number, string] => s.value ?? s.values?.at(-1) ?? [0, "NaN"]);
    return [
      {
        refId: target.refId,
        length: series.length,
        fields: [
          { name: "Time", type: FieldType.time, config: {}, values: rows.map((r) => r[0] * 1000) },
          ...labelNames.map((name) => ({
            name,
            type: FieldType.string,
            config: {},
            values: series.map((s) => s.metric[name] ?? ""),
          })),
          { name: "Value", type: FieldType.number, config: {}, values: rows.map((r) => Number(r[1])) },
        ],
      },
    ];
  }
  return series.map((s) => {
    const points = s.values ?? (s.value ? [s.value] : []);
    const { __name__: metricName, ...labels } = s.metric;
    return {
      refId: target.refId,
      name: metricName,
      length: points.length,
      fields: [
        { name: "Time", type: FieldType.time, config: {}, values: points.map((p) => p[0] * 1000) },
        {
          name: "Value",
          type: FieldType.number,
          labels,
          config: { displayNameFromDS: legend(target.legendFormat, s.metric) },
          values: points.map((p) => Number(p[1])),
        },
      ],
    };
  });
}

async function queryPanel(panel: Panel, variables: Record<string, string>, range: TimeRange, width: number) {
  const step = stepSeconds(range, width);
  const frames: DataFrame[] = [];
  for (const target of panel.targets) {
    const expr = interpolate(target.expr, variables, range, step);
    const data = target.instant
      ? await prometheus("query", { query: expr, time: String(range.to.unix()) })
      : await prometheus("query_range", {
          query: expr,
          start: String(Math.floor(range.from.unix() / step) * step),
          end: String(Math.ceil(range.to.unix() / step) * step),
          step: String(step),
        });
    const result = (data as { result: PromSeries[] }).result;
    console.log(`panel "${panel.title}" ${target.refId}: ${result.length} series from ${expr}`);
    frames.push(...toFrames(target, result));
  }
  return panel.transformations?.length
    ? firstValueFrom(transformDataFrame(panel.transformations, frames, { interpolate: (value) => value }))
    : frames;
}

/** Grafana's standard field options that our dashboards set, as items of its field config registry. */
function fieldConfigRegistry(): FieldConfigOptionsRegistry {
  const item = (id: string, isCustom = false): FieldConfigPropertyItem => ({
    id: isCustom ? `custom.${id}` : id,
    path: id,
    name: id,
    isCustom,
    process: (value: unknown) => value,
    shouldApply: () => true,
    override: () => null,
    editor: () => null,
  });
  const registry = new FieldConfigOptionsRegistry();
  for (const id of ["unit", "decimals", "min", "max", "thresholds", "mappings", "color", "displayName", "noValue"])
    registry.register(item(id));
  for (const id of [
    "lineWidth",
    "fillOpacity",
    "drawStyle",
    "lineInterpolation",
    "showPoints",
    "pointSize",
    "axisPlacement",
    "spanNulls",
    "gradientMode",
    "axisSoftMin",
    "stacking",
    "hideFrom",
    "align",
    "cellOptions",
    "inspect",
  ])
    registry.register(item(id, true));
  return registry;
}
const registry = fieldConfigRegistry();
// standardTransformers lists some transformers under two names; the registry holds each id once.
standardTransformersRegistry.setInit(() =>
  [...new Map(Object.values(standardTransformers).map((t) => [t.id, t as DataTransformerInfo])).values()].map(
    (transformer) => ({
      id: transformer.id,
      name: transformer.name,
      transformation: () => Promise.resolve(transformer),
      editor: () => null,
      imageDark: "",
      imageLight: "",
    }),
  ),
);

/** Grafana's plugin defaults for each panel type, under the dashboard's own field config. */
function withPanelDefaults(panel: Panel): FieldConfigSource {
  const defaults = panel.fieldConfig?.defaults ?? {};
  const custom =
    panel.type === "timeseries"
      ? {
          drawStyle: "line",
          lineInterpolation: "linear",
          showPoints: "never",
          pointSize: 4,
          axisPlacement: "auto",
          spanNulls: false,
          gradientMode: "none",
          lineWidth: 1,
          fillOpacity: 0,
        }
      : panel.type === "table"
        ? { align: "auto", cellOptions: { type: "auto" }, inspect: false }
        : {};
  return {
    defaults: {
      color: { mode: panel.type === "timeseries" ? FieldColorModeId.PaletteClassic : FieldColorModeId.Thresholds },
      thresholds: {
        mode: "absolute",
        steps: [
          { color: "green", value: -Infinity },
          { color: "red", value: 80 },
        ],
      },
      ...defaults,
      custom: { ...custom, ...(defaults.custom ?? {}) },
    } as FieldConfigSource["defaults"],
    overrides: panel.fieldConfig?.overrides ?? [],
  };
}

function renderPanel(
  panel: Panel,
  frames: DataFrame[],
  range: TimeRange,
  width: number,
  height: number,
  theme2: GrafanaTheme2,
) {
  const replaceVariables: InterpolateFunction = (value) => value;
  const fieldConfig = withPanelDefaults(panel);
  const processed = applyFieldOverrides({
    data: frames,
    fieldConfig,
    fieldConfigRegistry: registry,
    replaceVariables,
    theme: theme2,
    timeZone: "browser",
  });
  const options = panel.options ?? {};
  if (panel.type === "timeseries") {
    const legendOptions = (options.legend ?? {}) as Partial<VizLegendOptions>;
    return (
      <TimeSeries
        frames={processed}
        width={width}
        height={height}
        timeRange={range}
        timeZone="browser"
        legend={{
          showLegend: true,
          displayMode: legendOptions.displayMode ?? LegendDisplayMode.List,
          placement: legendOptions.placement ?? "bottom",
          calcs: legendOptions.calcs ?? [],
        }}
        options={{ tooltip: { mode: TooltipDisplayMode.Multi } }}
      />
    );
  }
  if (panel.type === "stat") {
    const reduceOptions = (options.reduceOptions ?? { calcs: ["lastNotNull"] }) as { calcs: string[] };
    const getValues = (): FieldDisplay[] =>
      getFieldDisplayValues({
        fieldConfig,
        reduceOptions,
        data: processed,
        theme: theme2,
        replaceVariables,
        timeZone: "browser",
      });
    return (
      <VizRepeater<FieldDisplay>
        source={processed}
        getValues={getValues}
        renderCounter={0}
        width={width}
        height={height}
        itemSpacing={3}
        orientation={VizOrientation.Auto}
        renderValue={({ value, width: w, height: h, count }) => (
          <BigValue
            value={value.display}
            count={count}
            width={w}
            height={h}
            theme={theme2}
            colorMode={(options.colorMode as BigValueColorMode | undefined) ?? BigValueColorMode.Value}
            graphMode={BigValueGraphMode.None}
            textMode={(options.textMode as BigValueTextMode | undefined) ?? BigValueTextMode.Auto}
          />
        )}
      />
    );
  }
  if (panel.type === "table") {
    const frame = processed[0];
    if (!frame) return <div>No data</div>;
    return <Table data={frame} width={width} height={height} noHeader={options.showHeader === false} />;
  }
  throw new Error(`panel "${panel.title}": type ${panel.type} is not rendered by this tool`);
}

type Loaded = { panel: Panel; frames: DataFrame[] };

function DashboardGrid({
  dashboard,
  loaded,
  range,
  width,
}: {
  dashboard: Dashboard;
  loaded: Loaded[];
  range: TimeRange;
  width: number;
}) {
  const column = (width - GAP) / GRID_COLUMNS;
  const rows = Math.max(...dashboard.panels.map((p) => p.gridPos.y + p.gridPos.h));
  useEffect(() => {
    // For the screenshot taker: the panels that had nothing to draw.
    (window as { emptyPanels?: string[] }).emptyPanels = loaded
      .filter(({ frames }) => frames.every((frame) => frame.length === 0))
      .map(({ panel }) => panel.title);
    // uPlot draws on the next frames; give it two before saying the page is done.
    requestAnimationFrame(() => requestAnimationFrame(() => (document.title = "rendered")));
  }, []);
  return (
    <div style={{ position: "relative", width, height: rows * (ROW_HEIGHT + GAP) + GAP }}>
      {loaded.map(({ panel, frames }) => {
        const { x, y, w, h } = panel.gridPos;
        const panelWidth = Math.floor(w * column - GAP);
        const panelHeight = h * ROW_HEIGHT + (h - 1) * GAP;
        return (
          <div
            key={panel.id}
            style={{ position: "absolute", left: GAP + x * column, top: GAP + y * (ROW_HEIGHT + GAP) }}
          >
            <PanelChrome title={panel.title} description={panel.description} width={panelWidth} height={panelHeight}>
              {(innerWidth, innerHeight) =>
                frames.length === 0 ? (
                  <div>No data</div>
                ) : (
                  renderPanel(panel, frames, range, innerWidth, innerHeight, theme)
                )
              }
            </PanelChrome>
          </div>
        );
      })}
    </div>
  );
}

function Header({ dashboard, range }: { dashboard: Dashboard; range: TimeRange }) {
  const styles = { padding: `${GAP * 2}px ${GAP}px 0`, color: theme.colors.text.primary, fontSize: 20 };
  return (
    <div style={styles}>
      {dashboard.title}
      <span style={{ fontSize: 13, color: theme.colors.text.secondary, marginLeft: 16 }}>
        {range.from.format("YYYY-MM-DD HH:mm")} to {range.to.format("HH:mm")} · namespace: All · machine: All
      </span>
    </div>
  );
}

function App() {
  const [state, setState] = useState<{ dashboard: Dashboard; loaded: Loaded[]; range: TimeRange } | Error>();
  const width = window.innerWidth;
  useEffect(() => {
    (async () => {
      const dashboard = (await (await fetch("/dashboard.json")).json()) as Dashboard;
      const now = Number(params.get("now") ?? Date.now());
      const from = dateTime(parseRelative(params.get("from") ?? dashboard.time.from, now));
      const to = dateTime(parseRelative(params.get("to") ?? dashboard.time.to, now));
      const range: TimeRange = { from, to, raw: { from, to } };
      const variables = await resolveVariables(dashboard, range);
      const loaded: Loaded[] = [];
      for (const panel of dashboard.panels)
        loaded.push({
          panel,
          frames: await queryPanel(panel, variables, range, (panel.gridPos.w * width) / GRID_COLUMNS),
        });
      setState({ dashboard, loaded, range });
    })().catch((error: unknown) => {
      console.error(error);
      setState(error instanceof Error ? error : new Error(String(error)));
      document.title = `failed: ${String(error)}`;
    });
  }, [width]);
  if (state === undefined) return <div>loading…</div>;
  if (state instanceof Error) return <pre>{state.message}</pre>;
  return (
    <>
      <Header dashboard={state.dashboard} range={state.range} />
      <DashboardGrid dashboard={state.dashboard} loaded={state.loaded} range={state.range} width={width} />
    </>
  );
}

window.addEventListener("error", (event) => (document.title = `failed: ${event.message}`));
const root = document.getElementById("root");
if (!root) throw new Error("no #root element");
createRoot(root).render(
  <StrictMode>
    <ThemeContext.Provider value={theme}>
      <GlobalStyles />
      <App />
    </ThemeContext.Provider>
  </StrictMode>,
);
