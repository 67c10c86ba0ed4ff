// BudgetMeter: spent and left per dataset for the connected user.
import { clear, fmt, h } from "./dom";
import type { BudgetModel } from "./model";

export function renderBudget(model: BudgetModel, el: HTMLElement): () => void {
  const who = h("div", { class: "pdebug-who" });
  const rows = h("div", { class: "pdebug-budget-rows" });
  const status = h("div", { class: "pdebug-status", role: "status" });
  const refresh = h("button", { type: "button", class: "pdebug-refresh" }, "Refresh");
  refresh.addEventListener("click", () => model.send({ type: "refresh" }));
  el.append(h("div", { class: "pdebug-widget pdebug-budget" },
    h("div", { class: "pdebug-header" }, h("strong", {}, "Privacy budget"), refresh),
    who, rows, status));

  const draw = () => {
    const user = model.get("user");
    who.textContent = user.name ? `${user.name} (${user.role})` : "";
    const s = model.get("status");
    status.dataset.state = s.state ?? "idle";
    status.textContent = s.state === "error" ? `unavailable: ${s.message}` : "";
    clear(rows);
    for (const d of model.get("datasets")) {
      const limit = d.limit ?? 0;
      const share = limit > 0 ? Math.min((d.spent ?? 0) / limit, 1) : 0;
      const bar = h("div", { class: "pdebug-bar" });
      bar.style.setProperty("--spent", `${(share * 100).toFixed(1)}%`);
      rows.append(h("div", { class: "pdebug-budget-row", "data-dataset": d.name },
        h("span", { class: "pdebug-name" }, d.name), bar,
        h("span", { class: "pdebug-numbers" },
          `ε ${fmt(d.spent, 3)} of ${fmt(limit, 3)} spent · ${fmt(d.remaining, 3)} left`)));
    }
  };
  const events = ["change:datasets", "change:user", "change:status"];
  for (const e of events) model.on(e, draw);
  draw();
  return () => { for (const e of events) model.off(e as never, draw); };
}
