// The Privacy side panel (JupyterLab 4 and Notebook 7): who the service knows you as, the
// budget left on each dataset, recent releases and, for owners and auditors, the audit log.
// Everything comes through the server extension under {baseUrl}pdebug/ (pdebug_jupyter/server),
// which holds the service token; the browser never talks to the service itself.
// Data from the service is put on the page with textContent only, never as HTML.

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin,
} from "@jupyterlab/application";
import { ICommandPalette } from "@jupyterlab/apputils";
import { URLExt } from "@jupyterlab/coreutils";
import { ServerConnection } from "@jupyterlab/services";
import { LabIcon, refreshIcon } from "@jupyterlab/ui-components";
import { Widget } from "@lumino/widgets";

const PANEL_ID = "pdebug-privacy-panel";
const POLL_MS = 5000;
const RELEASE_ROWS = 10;
const AUDIT_ROWS = 20;

// ---- wire types: mirror pdebug_jupyter/server/handlers.py and the service's JSON ------------

interface Me {
  user: string;
  role: string;
  permissions: string[];
  service_url: string;
}

interface Budget {
  limit: number;
  spent: number;
  remaining: number;
  dataset_limit: number;
  dataset_spent: number;
}

interface DatasetInfo {
  name: string;
  description: string;
  synthetic: boolean;
  budget: Budget;
}

interface ReleaseRow {
  release_id: string;
  dataset: string;
  user: string;
  purpose: string;
  kind: string;
  epsilon: number;
  created_at: string;
}

interface AuditRow {
  seq: number;
  at: string;
  user: string;
  purpose: string;
  dataset: string;
  action: string;
  query: string;
  epsilon: number;
  outcome: string;
  detail: string;
}

interface AuditReply {
  audit: AuditRow[];
  chain: { ok: boolean; rows: number; first_bad_seq: number | null };
}

/** A refusal or failure, from the service (passed on by the proxy) or from Jupyter itself. */
export class PanelError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** GET {baseUrl}pdebug/{path}: the one request helper of the panel. */
export async function requestAPI<T>(
  path: string,
  params: Record<string, string | number> = {},
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url =
    URLExt.join(settings.baseUrl, "pdebug", path) +
    URLExt.objectToQueryString(params);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, {}, settings);
  } catch {
    throw new PanelError(0, "jupyter_unreachable", "The Jupyter server cannot be reached.");
  }
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const err = (body as { error?: { code?: string; message?: string } } | null)?.error;
    if (err?.code && err.message) {
      throw new PanelError(response.status, err.code, err.message);
    }
    if (response.status === 404) {
      throw new PanelError(404, "no_extension",
        "The pdebug_jupyter server extension is not enabled on this Jupyter server.");
    }
    throw new PanelError(response.status, `http_${response.status}`,
      `The Jupyter server answered ${response.status} ${response.statusText}.`);
  }
  return body as T;
}

// ---- small DOM helpers: text only -------------------------------------------------------------

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = "",
  text = "",
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

function eps(value: number): string {
  return String(Number(value.toFixed(4)));
}

/** A short local time (the date too when it is not today); the full ISO time as a tooltip. */
function when(iso: string): HTMLTableCellElement {
  const at = new Date(iso);
  let text = iso;
  if (!Number.isNaN(at.getTime())) {
    text = at.toDateString() === new Date().toDateString()
      ? at.toLocaleTimeString()
      : at.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit",
        minute: "2-digit" });
  }
  const td = el("td", "pdebug-when", text);
  td.title = iso;
  return td;
}

/** A table in a box that scrolls sideways when the side panel is narrow. */
function table(headers: string[], rows: HTMLTableRowElement[]): HTMLElement {
  const box = el("div", "pdebug-scroll");
  const t = el("table", "pdebug-table");
  const head = t.createTHead().insertRow();
  for (const h of headers) head.appendChild(el("th", "", h));
  const body = t.createTBody();
  for (const r of rows) body.appendChild(r);
  box.appendChild(t);
  return box;
}

function row(className: string, cells: (string | HTMLTableCellElement)[]): HTMLTableRowElement {
  const tr = el("tr", className);
  for (const c of cells) tr.appendChild(typeof c === "string" ? el("td", "", c) : c);
  return tr;
}

const shieldIcon = new LabIcon({
  name: "pdebug-jupyter:shield",
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
    '<path class="jp-icon3" fill="#616161" d="M12 1.5 3.5 5v6.2c0 5.1 3.6 9.8 8.5 11.3 ' +
    "4.9-1.5 8.5-6.2 8.5-11.3V5L12 1.5zm-1.4 15.3-4-4 1.4-1.4 2.6 2.6 5.4-5.4 1.4 1.4-6.8 " +
    '6.8z"/></svg>',
});

// ---- the panel --------------------------------------------------------------------------------

export class PrivacyPanel extends Widget {
  private readonly message = el("div", "pdebug-message");
  private readonly identity = el("section", "pdebug-identity");
  private readonly datasets = el("section", "pdebug-datasets");
  private readonly releases = el("section", "pdebug-releases");
  private readonly audit = el("section", "pdebug-audit");
  private readonly updated = el("div", "pdebug-updated");
  private timer: number | undefined;
  private busy = false;

  constructor() {
    super();
    this.id = PANEL_ID;
    this.addClass("pdebug-panel");
    this.title.icon = shieldIcon;
    this.title.caption = "Privacy: budget, releases and audit";

    const header = el("div", "pdebug-header");
    header.appendChild(el("h2", "pdebug-title", "Privacy"));
    const refresh = el("button", "pdebug-refresh jp-Button jp-mod-minimal");
    refresh.type = "button";
    refresh.title = "Refresh";
    refresh.setAttribute("aria-label", "Refresh");
    refresh.appendChild(refreshIcon.element({ tag: "span" }));
    refresh.addEventListener("click", () => void this.refresh());
    header.appendChild(refresh);

    this.message.hidden = true;
    this.message.setAttribute("role", "status");
    this.node.append(header, this.message, this.identity, this.datasets, this.releases,
      this.audit, this.updated);
  }

  /** Read everything again; a refresh already under way is not doubled. */
  async refresh(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    this.node.dataset.state = "loading";
    try {
      await this.load();
    } finally {
      this.busy = false;
    }
  }

  private async load(): Promise<void> {
    let me: Me;
    try {
      me = await requestAPI<Me>("me");
    } catch (e) {
      this.showProblem(e);
      return;
    }
    this.message.hidden = true;
    this.renderIdentity(me);
    const can = new Set(me.permissions);
    // each part asks only when the role may read it; one failing part leaves the others
    await Promise.all([
      this.part(this.datasets, can.has("read_schema"), () => this.loadDatasets()),
      this.part(this.releases, can.has("read_releases"), () => this.loadReleases()),
      this.part(this.audit, can.has("read_audit"), () => this.loadAudit()),
    ]);
    this.node.dataset.state = "ready";
    // a counter a test (or a person with devtools) can wait on after spending budget
    this.node.dataset.loads = String(Number(this.node.dataset.loads ?? "0") + 1);
    this.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  private async part(section: HTMLElement, allowed: boolean,
    load: () => Promise<HTMLElement[]>): Promise<void> {
    section.hidden = !allowed;
    if (!allowed) return;
    try {
      section.replaceChildren(...(await load()));
    } catch (e) {
      const heading = section.querySelector("h3");
      const text = e instanceof PanelError ? e.message : String(e);
      section.replaceChildren(...(heading ? [heading] : []), el("p", "pdebug-error", text));
    }
  }

  private showProblem(e: unknown): void {
    const problem = e instanceof PanelError ? e
      : new PanelError(0, "error", String(e));
    this.node.dataset.state = "error";
    this.message.hidden = false;
    this.message.dataset.code = problem.code;
    this.message.textContent = problem.message;
    for (const s of [this.identity, this.datasets, this.releases, this.audit]) {
      s.hidden = true;
    }
    this.updated.textContent = `Tried ${new Date().toLocaleTimeString()}; ` +
      `trying again every ${POLL_MS / 1000} s while this panel is open.`;
  }

  private renderIdentity(me: Me): void {
    this.identity.hidden = false;
    const who = el("div", "pdebug-who");
    who.append(el("span", "pdebug-user", me.user), " ");
    const role = el("span", "pdebug-role", me.role);
    role.dataset.role = me.role;
    who.appendChild(role);
    this.identity.replaceChildren(who,
      el("div", "pdebug-service", `Service: ${me.service_url}`));
  }

  private async loadDatasets(): Promise<HTMLElement[]> {
    const reply = await requestAPI<{ datasets: DatasetInfo[] }>("datasets");
    const out: HTMLElement[] = [el("h3", "", "Budget per dataset (ε)")];
    for (const ds of reply.datasets) out.push(budgetRow(ds));
    return out;
  }

  private async loadReleases(): Promise<HTMLElement[]> {
    const reply = await requestAPI<{ releases: ReleaseRow[] }>("releases",
      { limit: RELEASE_ROWS });
    const rows = reply.releases.map((r) => {
      const tr = row("pdebug-release-row",
        [r.kind, eps(r.epsilon), r.user, when(r.created_at), r.dataset]);
      tr.dataset.releaseId = r.release_id;
      tr.title = r.purpose ? `Purpose: ${r.purpose}` : "";
      return tr;
    });
    return [
      el("h3", "", "Recent releases"),
      rows.length ? table(["kind", "ε", "who", "when", "dataset"], rows)
        : el("p", "pdebug-empty", "No releases yet."),
    ];
  }

  private async loadAudit(): Promise<HTMLElement[]> {
    const reply = await requestAPI<AuditReply>("audit", { limit: AUDIT_ROWS });
    const chain = el("div", "pdebug-audit-chain", reply.chain.ok
      ? `Hash chain intact (${reply.chain.rows} rows)`
      : `Hash chain broken at row ${reply.chain.first_bad_seq}`);
    chain.dataset.ok = String(reply.chain.ok);
    const rows = reply.audit.slice().reverse().map((a) => {
      const outcome = el("td", "pdebug-outcome", a.outcome);
      outcome.title = a.detail;
      const tr = row("pdebug-audit-row", [String(a.seq), outcome, eps(a.epsilon), a.user,
        when(a.at), a.action, a.dataset]);
      tr.dataset.seq = String(a.seq);
      tr.dataset.outcome = a.outcome;
      tr.title = [a.purpose && `Purpose: ${a.purpose}`, a.query && `Query: ${a.query}`]
        .filter(Boolean).join("\n");
      return tr;
    });
    return [
      el("h3", "", "Audit log"),
      chain,
      rows.length
        ? table(["#", "outcome", "ε", "who", "when", "action", "dataset"], rows)
        : el("p", "pdebug-empty", "The audit log is empty."),
    ];
  }

  private startPolling(): void {
    if (this.timer !== undefined) return;
    void this.refresh();
    this.timer = window.setInterval(() => {
      if (document.visibilityState === "visible") void this.refresh();
    }, POLL_MS);
  }

  private stopPolling(): void {
    window.clearInterval(this.timer);
    this.timer = undefined;
  }

  // poll only while the panel is shown: a closed side panel costs the service nothing
  protected onAfterShow(): void {
    this.startPolling();
  }

  protected onAfterAttach(): void {
    if (this.isVisible) this.startPolling();
  }

  protected onAfterHide(): void {
    this.stopPolling();
  }

  protected onBeforeDetach(): void {
    this.stopPolling();
  }

  dispose(): void {
    this.stopPolling();
    super.dispose();
  }
}

/** One dataset: a bar of the user's spent budget and the numbers, as data attributes too. */
function budgetRow(ds: DatasetInfo): HTMLElement {
  const b = ds.budget;
  const item = el("div", "pdebug-budget-row");
  item.dataset.dataset = ds.name;
  item.dataset.spent = String(b.spent);
  item.dataset.remaining = String(b.remaining);
  item.dataset.limit = String(b.limit);

  const name = el("div", "pdebug-budget-name", ds.name);
  if (ds.synthetic) name.appendChild(el("span", "pdebug-synthetic", "synthetic"));
  if (ds.description) name.title = ds.description;

  const bar = el("div", "pdebug-bar");
  bar.setAttribute("role", "meter");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", String(b.limit));
  bar.setAttribute("aria-valuenow", String(b.spent));
  bar.setAttribute("aria-label", `budget spent on ${ds.name}`);
  const fill = el("div", "pdebug-bar-spent");
  const share = b.limit > 0 ? Math.min(1, b.spent / b.limit) : 1;
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  if (b.remaining <= 0) fill.classList.add("pdebug-exhausted");
  bar.appendChild(fill);

  const numbers = el("div", "pdebug-budget-numbers");
  numbers.append(el("span", "pdebug-spent", eps(b.spent)), " of ",
    el("span", "pdebug-limit", eps(b.limit)), " spent, ",
    el("span", "pdebug-remaining", eps(b.remaining)), " left");
  item.append(name, bar, numbers);
  // the dataset-wide cap can bind before the user's own limit does: say so when it does
  if (b.remaining < b.limit - b.spent - 1e-9) {
    item.appendChild(el("div", "pdebug-cap",
      `All users together have spent ${eps(b.dataset_spent)} of the dataset's ` +
      `${eps(b.dataset_limit)}.`));
  }
  return item;
}

const OPEN_COMMAND = "pdebug:open-privacy-panel";

const plugin: JupyterFrontEndPlugin<void> = {
  id: "pdebug-jupyter:privacy-panel",
  description: "A Privacy side panel: identity, budget per dataset, releases and audit log.",
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null): void => {
    const panel = new PrivacyPanel();
    // both JupyterLab's and Notebook 7's shells have left and right side panels
    app.shell.add(panel, "right", { rank: 900 });
    restorer?.add(panel, PANEL_ID);
    app.commands.addCommand(OPEN_COMMAND, {
      label: "Show the Privacy Panel",
      caption: "Budget left per dataset, recent releases and the audit log",
      execute: () => app.shell.activateById(PANEL_ID),
    });
    palette?.addItem({ command: OPEN_COMMAND, category: "Privacy" });
  },
};

export default plugin;
