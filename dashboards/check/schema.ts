// The types the dashboards are checked against: Grafana's published schema
// (@grafana/schema, pinned in package.json), read as JSON. `cargo xtask test` generates
// generated/<dashboard>.ts from each dashboards/*.json, assigning the whole dashboard to
// DashboardJson and each panel again to the type of its plugin, and runs tsc --strict.
import type { Dashboard, DataQuery, FieldConfig, FieldConfigSource, Panel, RowPanel } from '@grafana/schema';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen.js';
import type * as StateTimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen.js';
import type * as Table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen.js';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.js';

/** JSON spells an enum by its value: accept the values wherever the schema names a string enum. */
export type Json<T> = T extends string
  ? `${T}`
  : T extends readonly (infer U)[]
    ? Json<U>[]
    : T extends object
      ? { [K in keyof T]: Json<T[K]> }
      : T;

export type DashboardJson = Json<Dashboard>;

/**
 * A Prometheus query as Grafana saves it. The schema types targets as
 * Record<string, unknown>; these fields are the Prometheus data source's (PromQuery in
 * Grafana's public/app/plugins/datasource/prometheus/dataquery.cue), written out here.
 */
export type PrometheusQuery = Json<DataQuery> & {
  editorMode?: 'code' | 'builder';
  exemplar?: boolean;
  expr: string;
  format?: 'time_series' | 'table' | 'heatmap';
  instant?: boolean;
  interval?: string;
  legendFormat?: string;
  range?: boolean;
};

/** A panel whose options and custom field config are its plugin's. */
type PluginPanel<Type extends string, Options, Custom> = Omit<
  Json<Panel>,
  'type' | 'options' | 'fieldConfig' | 'targets'
> & {
  type: Type;
  options: Json<Options>;
  fieldConfig: {
    defaults: Omit<Json<FieldConfig>, 'custom'> & { custom?: Json<Custom> };
    overrides: Json<FieldConfigSource['overrides']>;
  };
  targets: PrometheusQuery[];
};

export type TimeSeriesPanel = PluginPanel<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>;
export type TablePanel = PluginPanel<'table', Table.Options, Table.FieldConfig>;
export type StatPanel = PluginPanel<'stat', Stat.Options, Record<string, never>>;
export type StateTimelinePanel = PluginPanel<'state-timeline', StateTimeline.Options, StateTimeline.FieldConfig>;
export type RowPanelJson = Json<RowPanel>;
