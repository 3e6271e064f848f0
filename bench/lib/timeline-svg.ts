/**
 * A time-series plot (hand-written SVG, no dependency): step lines of several series against seconds, one
 * panel, with vertical markers (e.g. "load ×10"). Used for autoscale.svg: replicas over time under a step.
 */

export interface TimeSeries {
  label: string;
  color: string;
  /** [seconds, value] points in time order; drawn as steps (the value holds until the next point). */
  points: Array<[number, number]>;
  dashed?: boolean;
}

export interface TimelinePlot {
  title: string;
  yLabel: string;
  series: TimeSeries[];
  markers?: Array<{ at: number; label: string }>;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceStep(range: number, ticks: number): number {
  const raw = range / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

export function renderTimeline(p: TimelinePlot, width = 860, height = 360): string {
  const m = { l: 52, r: 150, t: 30, b: 40 };
  const pw = width - m.l - m.r;
  const ph = height - m.t - m.b;
  const all = p.series.flatMap((s) => s.points);
  const tMax = Math.max(1, ...all.map(([t]) => t));
  const yMax = Math.max(1, ...all.map(([, v]) => v)) * 1.1;
  const x = (t: number) => m.l + (t / tMax) * pw;
  const y = (v: number) => m.t + ph - (v / yMax) * ph;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${m.l}" y="18" font-size="13" font-weight="bold">${esc(p.title)}</text>`,
  ];
  const yStep = niceStep(yMax, 6);
  for (let v = 0; v <= yMax; v += yStep) {
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y(v)}" y2="${y(v)}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${Math.round(v * 10) / 10}</text>`);
  }
  const tStep = niceStep(tMax, 10);
  for (let t = 0; t <= tMax; t += tStep) {
    out.push(`<line x1="${x(t)}" x2="${x(t)}" y1="${m.t + ph}" y2="${m.t + ph + 4}" stroke="#444"/>`);
    out.push(`<text x="${x(t)}" y="${m.t + ph + 16}" text-anchor="middle">${Math.round(t)}</text>`);
  }
  out.push(`<text x="${m.l + pw / 2}" y="${height - 6}" text-anchor="middle">seconds</text>`);
  out.push(`<text transform="translate(14,${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(p.yLabel)}</text>`);
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  for (const mk of p.markers ?? []) {
    out.push(`<line x1="${x(mk.at)}" x2="${x(mk.at)}" y1="${m.t}" y2="${m.t + ph}" stroke="#999" stroke-dasharray="3,3"/>`);
    out.push(`<text x="${x(mk.at) + 3}" y="${m.t + 12}" fill="#666">${esc(mk.label)}</text>`);
  }
  p.series.forEach((s, i) => {
    if (s.points.length > 0) {
      const d: string[] = [];
      s.points.forEach(([t, v], j) => {
        if (j === 0) d.push(`M${x(t).toFixed(1)},${y(v).toFixed(1)}`);
        else d.push(`H${x(t).toFixed(1)}V${y(v).toFixed(1)}`);
      });
      const dash = s.dashed ? ' stroke-dasharray="5,3"' : '';
      out.push(`<path d="${d.join('')}" fill="none" stroke="${s.color}" stroke-width="1.8"${dash}/>`);
    }
    const ly = m.t + 14 + i * 16;
    out.push(`<line x1="${m.l + pw + 10}" x2="${m.l + pw + 28}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"/>`);
    out.push(`<text x="${m.l + pw + 32}" y="${ly}">${esc(s.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
