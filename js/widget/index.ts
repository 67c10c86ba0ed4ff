// The one ESM module every pdebug widget loads (anywidget's render contract).
import type { RenderProps } from "@anywidget/types";
import "./widget.css";
import { renderBudget } from "./budget";
import { renderExplorer } from "./explorer";
import type { BudgetModel, ExplorerModel } from "./model";

function render({ model, el }: RenderProps): () => void {
  if (model.get("widget") === "budget") return renderBudget(model as BudgetModel, el);
  return renderExplorer(model as ExplorerModel, el);
}

export default { render };
