// An explorer: pickers from the public schema, a free cost preview, an explicit Run, then
// the chart with intervals, a result table and where the release came from.
import { Chart } from "./chart";
import { clear, fmt, h } from "./dom";
import { FairnessControls } from "./fairness";
import type { Control, ExplorerModel } from "./model";

const TITLES: Record<string, string> = {
  calibration: "Calibration",
  fairness: "Fairness",
  drift: "Drift",
  cohorts: "Error cohorts",
};

export function renderExplorer(model: ExplorerModel, el: HTMLElement): () => void {
  const view = model.get("widget");
  const badge = h("span", { class: "pdebug-badge pdebug-data-badge" });
  const spent = h("span", { class: "pdebug-badge pdebug-spent-badge" });
  const controls = h("div", { class: "pdebug-controls" });
  const epsilon = h("input", {
    class: "pdebug-epsilon", type: "number", min: "0.001", step: "0.05", "aria-label": "epsilon",
  });
  const run = h("button", { class: "pdebug-run", type: "button" });
  const cost = h("span", { class: "pdebug-cost" });
  const status = h("div", { class: "pdebug-status", role: "status" });
  const chartEl = h("div", { class: "pdebug-chart" });
  const table = h("div", { class: "pdebug-table" });
  const footer = h("div", { class: "pdebug-release" });
  const chart = new Chart(chartEl);
  const fairness = view === "fairness" ? new FairnessControls(model, chart) : null;

  el.append(h("div", { class: `pdebug-widget pdebug-${view}` },
    h("div", { class: "pdebug-header" },
      h("strong", {}, `${TITLES[view] ?? view} · ${model.get("dataset_name")}`), badge, spent),
    controls,
    h("div", { class: "pdebug-actions" },
      h("label", {}, "ε ", epsilon), run, cost),
    status,
    fairness?.el ?? null,
    chartEl,
    table,
    footer,
  ));

  epsilon.addEventListener("change", () => {
    const value = Number(epsilon.value);
    if (Number.isFinite(value) && value > 0) {
      model.set("epsilon", value);
      model.save_changes();
    }
  });
  run.addEventListener("click", () => {
    run.disabled = true;
    status.dataset.state = "running";
    status.textContent = "asking the privacy service…";
    model.send({ type: "run" });
  });

  const drawControls = () => {
    clear(controls);
    const params = model.get("params");
    for (const control of model.get("controls")) {
      controls.append(picker(control, params[control.name], (value) => {
        model.set("params", { ...model.get("params"), [control.name]: value });
        model.save_changes();
      }));
    }
  };
  const drawCost = () => {
    const c = model.get("cost");
    epsilon.value = String(model.get("epsilon"));
    const running = model.get("status").state === "running";
    if (c.error) {
      run.disabled = true;
      run.textContent = "Run";
      cost.dataset.state = "error";
      cost.textContent = `cannot run: ${c.error.message}`;
      return;
    }
    cost.dataset.state = c.affordable === false ? "short" : "ok";
    const price = c.cached ? "free: cached" : `costs ε=${fmt(c.epsilon, 3)}`;
    run.textContent = `Run (${price})`;
    run.disabled = running || c.affordable === false || c.epsilon === undefined;
    const left = c.remaining === undefined ? "" : ` · ε ${fmt(c.remaining, 3)} left`;
    const noise = c.noise_scale === undefined ? "" : ` · noise scale ${fmt(c.noise_scale, 1)}`;
    const short = c.affordable === false ? " · not enough budget left" : "";
    cost.textContent = `${c.cells ?? "?"} cells${noise}${left}${short}`;
  };
  const drawStatus = () => {
    const s = model.get("status");
    status.dataset.state = s.state ?? "idle";
    status.textContent = s.state === "error" ? `refused: ${s.message}` : s.message ?? "";
    drawCost();
  };
  const drawBadges = () => {
    const b = model.get("badge");
    badge.textContent = b;
    badge.dataset.kind = b.startsWith("synthetic") ? "synthetic" : "private";
    const r = model.get("release");
    spent.textContent = r.release_id
      ? (r.cached ? "ε 0 spent (cached)" : `ε ${fmt(r.epsilon, 3)} spent`) : "nothing spent yet";
  };
  const drawRelease = () => {
    drawBadges();
    const r = model.get("release");
    clear(footer);
    if (!r.release_id) return;
    const hidden = r.suppressed
      ? `${r.suppressed} of ${r.cells} cells suppressed (noisy count below the minimum cohort ` +
        `size ${r.threshold}); shown as grey crosses`
      : "no cell suppressed";
    footer.append(
      h("div", {}, `released by ${r.user} at ${r.created_at} · ε ${fmt(r.epsilon, 3)}` +
        `${r.cached ? " (served from the cache, free)" : ""}${r.synthetic ? " · synthetic data" : ""}`),
      h("div", { class: "pdebug-suppressed" }, hidden),
      h("div", { class: "pdebug-ids" }, `release ${r.release_id} · query ${String(r.query_hash).slice(0, 12)}`),
    );
  };
  const drawTable = () => {
    const t = model.get("table");
    clear(table);
    if (!t.columns || !t.rows || t.rows.length === 0) return;
    const head = h("tr", {}, ...t.columns.map((c) => h("th", {}, c)));
    const body = t.rows.map((row) => h("tr", {}, ...row.map((v) => h("td", {}, fmt(v, 4)))));
    table.append(h("table", {}, h("thead", {}, head), h("tbody", {}, ...body)));
  };
  const drawChart = async () => {
    const signals = fairness ? fairness.signals() : {};
    try {
      await chart.draw(model.get("spec"), signals);
      chartEl.dataset.drawn = model.get("release").release_id ?? "";
    } catch (err) {
      status.dataset.state = "error";
      status.textContent = `the chart could not be drawn: ${String(err)}`;
    }
    fairness?.update();
  };

  const handlers: [string, () => void][] = [
    ["change:controls", drawControls], ["change:params", drawControls],
    ["change:cost", drawCost], ["change:epsilon", drawCost], ["change:status", drawStatus],
    ["change:release", drawRelease], ["change:badge", drawBadges],
    ["change:table", drawTable], ["change:spec", () => void drawChart()],
  ];
  for (const [event, handler] of handlers) model.on(event, handler);
  drawControls();
  drawStatus();
  drawRelease();
  drawTable();
  void drawChart();
  return () => {
    for (const [event, handler] of handlers) model.off(event as never, handler);
    chart.finalize();
  };
}

function picker(control: Control, value: unknown, set: (value: unknown) => void): HTMLElement {
  const id = `pdebug-${control.name}-${Math.random().toString(36).slice(2, 8)}`;
  if (control.type === "multiselect") {
    const chosen = new Set((value as unknown[] | null) ?? []);
    const boxes = control.options.map((o) => {
      const box = h("input", { type: "checkbox", value: String(o.value) });
      box.checked = chosen.has(o.value);
      box.addEventListener("change", () => {
        set(control.options.filter((_, i) => boxes[i].checked).map((x) => x.value));
      });
      return box;
    });
    return h("fieldset", { class: "pdebug-picker", "data-name": control.name },
      h("legend", {}, control.label),
      ...control.options.map((o, i) => h("label", {}, boxes[i], ` ${o.label}`)));
  }
  const select = h("select", { id, "data-name": control.name });
  control.options.forEach((o, i) => {
    const option = h("option", { value: String(i) }, o.label);
    option.selected = o.value === value;
    select.append(option);
  });
  select.addEventListener("change", () => set(control.options[Number(select.value)].value));
  return h("label", { class: "pdebug-picker", for: id }, `${control.label} `, select);
}
