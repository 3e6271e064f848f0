/** Time-series plots (uPlot): one small chart per figure, rebuilt when its data changes. */
import { html } from 'htm/preact';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface Series {
  label: string;
  values: Array<number | null>;
  color: string;
}

export function Chart(props: { title: string; unit: string; times: number[]; series: Series[] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const key = props.series.map((s) => s.label).join('|');
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    plot.current?.destroy();
    plot.current = new uPlot(
      {
        width: Math.max(280, el.clientWidth || 420),
        height: 170,
        series: [{}, ...props.series.map((s) => ({ label: s.label, stroke: s.color, width: 2, spanGaps: true }))],
        axes: [{}, { label: props.unit, size: 60 }],
        legend: { show: true },
      },
      [props.times, ...props.series.map((s) => s.values)] as uPlot.AlignedData,
      el,
    );
    return () => {
      plot.current?.destroy();
      plot.current = null;
    };
  }, [key]);
  useEffect(() => {
    plot.current?.setData([props.times, ...props.series.map((s) => s.values)] as uPlot.AlignedData);
  }, [props.times, props.series]);
  const last = props.series.map((s) => `${s.label} ${fmt(s.values.at(-1))}`).join(', ');
  return html`<figure class="chart">
    <figcaption>${props.title} <span class="muted">(now: ${last || 'no data'})</span></figcaption>
    <div ref=${box} role="img" aria-label=${`${props.title} over the last minutes; latest ${last || 'no data yet'}`}></div>
  </figure>`;
}

function fmt(v: number | null | undefined): string {
  if (v === null || v === undefined) return '–';
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}
