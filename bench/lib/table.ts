/** Markdown tables and number formatting. Missing figures render as "–". */

export function mdTable(header: string[], rows: string[][], align?: ('l' | 'r')[]): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const auto = (i: number): 'l' | 'r' => (i === 0 || header[i] === 'note' ? 'l' : 'r');
  const sep = header.map((_, i) => ((align?.[i] ?? auto(i)) === 'r' ? '---:' : ':---'));
  return [header, sep, ...rows].map((r) => `| ${r.map(esc).join(' | ')} |`).join('\n');
}

const ok = (n: number | undefined): n is number => n !== undefined && Number.isFinite(n);

export function fmtInt(n: number | undefined): string {
  return ok(n) ? String(Math.round(n)) : '–';
}

/** Milliseconds with 3 significant-ish digits. */
export function fmtMs(n: number | undefined): string {
  if (!ok(n)) return '–';
  if (Math.abs(n) < 10) return n.toFixed(2);
  if (Math.abs(n) < 100) return n.toFixed(1);
  return n.toFixed(0);
}

export function fmtRatio(n: number | undefined): string {
  if (!ok(n)) return '–';
  return n < 10 ? n.toFixed(2) : n.toFixed(1);
}

export function fmtSigned(n: number | undefined, fmt: (x: number) => string): string {
  if (!ok(n)) return '–';
  return `${n >= 0 ? '+' : '−'}${fmt(Math.abs(n))}`;
}
