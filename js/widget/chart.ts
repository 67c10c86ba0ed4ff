// Vega-Lite specs (built by Altair in the kernel from a release) drawn with the bundled
// vega-embed: no CDN, works offline.
import embed, { type Result } from "vega-embed";

export class Chart {
  private result: Result | null = null;
  private drawn = "";

  constructor(readonly el: HTMLElement) {}

  async draw(spec: Record<string, unknown>, signals: Record<string, unknown> = {}): Promise<void> {
    const key = JSON.stringify(spec);
    if (key === this.drawn) {
      await this.set(signals);
      return;
    }
    this.finalize();
    this.drawn = key;
    if (!spec || Object.keys(spec).length === 0) return;
    const patched = withParams(spec, signals);
    this.result = await embed(this.el, patched as never, {
      actions: { export: true, source: false, compiled: false, editor: false },
      renderer: "svg",
    });
  }

  /** Set Vega signals (the spec's params) and redraw: no data leaves the browser. */
  async set(signals: Record<string, unknown>): Promise<void> {
    if (!this.result) return;
    const view = this.result.view;
    for (const [name, value] of Object.entries(signals)) view.signal(name, value);
    await view.runAsync();
  }

  finalize(): void {
    this.result?.finalize();
    this.result = null;
    this.drawn = "";
  }
}

function withParams(spec: Record<string, unknown>, values: Record<string, unknown>) {
  const params = spec.params as { name: string; value?: unknown }[] | undefined;
  if (!params) return spec;
  return {
    ...spec,
    params: params.map((p) => (p.name in values ? { ...p, value: values[p.name] } : p)),
  };
}
