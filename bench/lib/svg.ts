/**
 * latency.svg: one panel per scenario, latency (log scale) against percentile (p50 … p99.99, on the
 * usual 1/(1−p) log axis), one line per target. Hand-written SVG, no dependency.
 */
import type { Percentiles } from '../proxy/types.js';

export interface PlotSeries {
  label: string;
  latency: Percentiles;
}

export interface PlotPanel {
  title: string;
  series: PlotSeries[];
}

const PCTS: [keyof Percentiles, string, number][] = [
  ['p50', 'p50', 50],
  ['p75', 'p75', 75],
  ['p90', 'p90', 90],
  ['p99', 'p99', 99],
  ['p999', 'p99.9', 99.9],
  ['p9999', 'p99.99', 99.99],
];
const COLORS = ['#222222', '#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

const xOf = (p: number): number => Math.log10(1 / (1 - p / 100));
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(v);
    }
  }
  return ticks;
}

function tickLabel(v: number): string {
  return v >= 1 ? String(Math.round(v)) : String(Number(v.toPrecision(1)));
}

function panel(p: PlotPanel, colorOf: (label: string) => string, x0: number, y0: number, w: number, h: number): string {
  const m = { l: 52, r: 12, t: 26, b: 34 };
  const pw = w - m.l - m.r;
  const ph = h - m.t - m.b;
  const values = p.series.flatMap((s) => PCTS.map(([k]) => s.latency[k])).filter((v) => Number.isFinite(v) && v > 0);
  const out: string[] = [`<g transform="translate(${x0},${y0})">`];
  out.push(`<text x="${m.l}" y="16" font-size="13" font-weight="bold">${esc(p.title)}</text>`);
  if (values.length === 0) {
    out.push(`<text x="${m.l + 10}" y="${m.t + ph / 2}" font-size="12">no data</text></g>`);
    return out.join('\n');
  }
  let lo = 10 ** Math.floor(Math.log10(Math.min(...values)));
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...values)));
  if (hi / lo < 10) hi = lo * 10;
  lo = Math.max(lo, 1e-3);
  const xMax = xOf(99.99);
  const X = (pct: number): number => m.l + ((xOf(pct) - xOf(50)) / (xMax - xOf(50))) * pw;
  const Y = (v: number): number => m.t + ph - ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * ph;
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="#fff" stroke="#999"/>`);
  for (const t of logTicks(lo, hi)) {
    const y = Y(t).toFixed(1);
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.l - 4}" y="${y}" font-size="10" text-anchor="end" dominant-baseline="middle">${tickLabel(t)}</text>`);
  }
  for (const [, name, pct] of PCTS) {
    const x = X(pct).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${m.t}" y2="${m.t + ph}" stroke="#eeeeee"/>`);
    out.push(`<text x="${x}" y="${m.t + ph + 14}" font-size="10" text-anchor="middle">${name}</text>`);
  }
  out.push(
    `<text x="12" y="${m.t + ph / 2}" font-size="10" transform="rotate(-90 12 ${m.t + ph / 2})" text-anchor="middle">latency, ms (log)</text>`,
  );
  for (const s of p.series) {
    const pts = PCTS.filter(([k]) => Number.isFinite(s.latency[k]) && s.latency[k] > 0).map(
      ([k, , pct]) => `${X(pct).toFixed(1)},${Y(Math.max(lo, s.latency[k])).toFixed(1)}`,
    );
    const c = colorOf(s.label);
    out.push(`<polyline fill="none" stroke="${c}" stroke-width="1.8" points="${pts.join(' ')}"><title>${esc(s.label)}</title></polyline>`);
    for (const pt of pts) {
      const [cx, cy] = pt.split(',');
      out.push(`<circle cx="${cx}" cy="${cy}" r="2.5" fill="${c}"/>`);
    }
  }
  out.push('</g>');
  return out.join('\n');
}

export function renderLatencySvg(title: string, panels: PlotPanel[]): string {
  const labels = [...new Set(panels.flatMap((p) => p.series.map((s) => s.label)))];
  const colorOf = (label: string): string => COLORS[labels.indexOf(label) % COLORS.length] as string;
  const cols = panels.length > 1 ? 2 : 1;
  const pw = 460;
  const ph = 250;
  const legendRows = Math.ceil(labels.length / 3);
  const top = 34 + legendRows * 18;
  const width = cols * pw + 20;
  const height = top + Math.ceil(panels.length / cols) * ph + 10;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#fafafa"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  labels.forEach((label, i) => {
    const x = 10 + (i % 3) * 300;
    const y = 40 + Math.floor(i / 3) * 18;
    out.push(`<line x1="${x}" x2="${x + 22}" y1="${y - 4}" y2="${y - 4}" stroke="${colorOf(label)}" stroke-width="3"/>`);
    out.push(`<text x="${x + 28}" y="${y}" font-size="12">${esc(label)}</text>`);
  });
  panels.forEach((p, i) => {
    out.push(panel(p, colorOf, 10 + (i % cols) * pw, top + Math.floor(i / cols) * ph, pw, ph));
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
