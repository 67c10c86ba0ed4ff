// The wire format of the widgets: mirrors pdebug_jupyter/widgets/_base.py (Explorer),
// _explorers.py (FairnessExplorer) and _budget.py (BudgetMeter) trait by trait.
import type { AnyModel } from "@anywidget/types";

export interface Option {
  value: unknown;
  label: string;
}

export interface Control {
  name: string;
  label: string;
  type: "select" | "multiselect";
  options: Option[];
  value: unknown;
}

export interface Cost {
  epsilon?: number;
  cached?: boolean;
  affordable?: boolean;
  cells?: number;
  noise_scale?: number;
  threshold?: number;
  remaining?: number;
  error?: { code: string; message: string };
}

export interface Status {
  state?: "idle" | "running" | "done" | "error";
  code?: string;
  message?: string;
}

export interface ReleaseSummary {
  release_id?: string;
  kind?: string;
  epsilon?: number;
  cached?: boolean;
  threshold?: number;
  suppressed?: number;
  cells?: number;
  user?: string;
  created_at?: string;
  query_hash?: string;
  synthetic?: boolean;
}

export interface Table {
  columns?: string[];
  rows?: unknown[][];
}

export interface Gap {
  threshold: number;
  metric: string;
  value: number | null;
  low: number | null;
  high: number | null;
}

export interface ExplorerState {
  widget: string;
  dataset_name: string;
  badge: string;
  controls: Control[];
  params: Record<string, unknown>;
  epsilon: number;
  cost: Cost;
  status: Status;
  release: ReleaseSummary;
  spec: Record<string, unknown>;
  table: Table;
  // FairnessExplorer only
  thresholds: number[];
  threshold: number;
  rate_sets: Record<string, string>;
  rates: string;
  gaps: Gap[];
}

export interface BudgetRow {
  name: string;
  limit?: number;
  spent?: number;
  remaining?: number;
}

export interface BudgetState {
  widget: string;
  datasets: BudgetRow[];
  user: { name?: string; role?: string };
  status: Status;
}

export type ExplorerModel = AnyModel<ExplorerState>;
export type BudgetModel = AnyModel<BudgetState>;
