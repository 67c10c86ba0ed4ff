// The fairness threshold slider and metric switch: Vega signals over the one released
// cube's views, computed in the kernel once per release. Moving them sends nothing to the
// service and spends nothing; the chosen threshold syncs back to the kernel when let go.
import type { Chart } from "./chart";
import { fmt, h } from "./dom";
import type { ExplorerModel, Gap } from "./model";

const GAP_TITLES: Record<string, string> = {
  demographic_parity_difference: "demographic parity difference",
  equalized_odds_difference: "equalized odds difference",
};

export class FairnessControls {
  readonly el: HTMLElement;
  private readonly slider: HTMLInputElement;
  private readonly value: HTMLElement;
  private readonly rates: HTMLSelectElement;
  private readonly gaps: HTMLElement;
  /** Milliseconds the last slider move took to redraw (read by the browser benchmark). */
  lastUpdateMs = 0;

  constructor(private readonly model: ExplorerModel, private readonly chart: Chart) {
    this.slider = h("input", { class: "pdebug-threshold", type: "range", min: "0", step: "1",
      "aria-label": "threshold" });
    this.value = h("output", { class: "pdebug-threshold-value" });
    this.rates = h("select", { class: "pdebug-rates", "aria-label": "metric" });
    this.gaps = h("div", { class: "pdebug-gaps" });
    this.el = h("div", { class: "pdebug-fairness-controls" },
      h("label", {}, "threshold ", this.slider, " ", this.value),
      h("label", {}, "show ", this.rates),
      this.gaps);
    this.slider.addEventListener("input", () => void this.move(false));
    this.slider.addEventListener("change", () => void this.move(true));
    this.rates.addEventListener("change", () => {
      void this.chart.set({ rates: this.rates.value });
      this.model.set("rates", this.rates.value);
      this.model.save_changes();
    });
  }

  signals(): Record<string, unknown> {
    return { threshold: this.model.get("threshold"), rates: this.model.get("rates") };
  }

  /** Sync the controls with the model after a (new) release was drawn. */
  update(): void {
    const thresholds = this.model.get("thresholds") ?? [];
    this.el.hidden = thresholds.length === 0;
    this.slider.max = String(Math.max(thresholds.length - 1, 0));
    this.slider.value = String(Math.max(thresholds.indexOf(this.model.get("threshold")), 0));
    this.rates.replaceChildren(...Object.entries(this.model.get("rate_sets") ?? {}).map(
      ([label, value]) => {
        const option = h("option", { value }, label);
        option.selected = value === this.model.get("rates");
        return option;
      }));
    this.describe(this.model.get("threshold"));
  }

  private async move(commit: boolean): Promise<void> {
    const threshold = this.model.get("thresholds")[Number(this.slider.value)];
    const start = performance.now();
    await this.chart.set({ threshold });
    this.describe(threshold);
    this.lastUpdateMs = performance.now() - start;
    this.el.dataset.lastUpdateMs = this.lastUpdateMs.toFixed(3);
    if (commit) {
      this.model.set("threshold", threshold);
      this.model.save_changes();
    }
  }

  private describe(threshold: number): void {
    this.value.textContent = fmt(threshold, 2);
    const rows = (this.model.get("gaps") ?? []).filter((g: Gap) => g.threshold === threshold);
    this.gaps.replaceChildren(...rows.map((g: Gap) =>
      h("div", { "data-metric": g.metric },
        `${GAP_TITLES[g.metric] ?? g.metric}: ${fmt(g.value)} ` +
        `(90% interval ${fmt(g.low)}–${fmt(g.high)})`)));
  }
}
