// Time series charts with uPlot: a gap where the server did not run (null
// points), wake and suspend markers on the time axis, and sentences of what
// is drawn: one under the chart (for screen readers too, and for anyone who
// wants the numbers) and one for the point under the pointer. The time axis
// starts at the first sample, so a fresh daemon's minutes fill the width.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { clock, number } from './format';

export interface Line {
  label: string;
  values: (number | null)[];
  /** A CSS custom property holding the colour, e.g. --series-1. */
  color: string;
  /** What the number counts, in a sentence: "3 connections", "12.5 tx/s"; `one` for 1 when it differs. */
  unit: string;
  one?: string;
}

export interface Marker {
  /** ms since the epoch */
  at: number;
  kind: 'wake' | 'suspend';
}

/** The shortest time axis, in samples: the first ones span the width as they come, from the left. */
const MIN_SPAN_SAMPLES = 3;
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

function markerPlugin(markers: () => Marker[]): uPlot.Plugin {
  return {
    hooks: {
      draw: (u: uPlot) => {
        const { ctx } = u;
        const { top, height } = u.bbox;
        ctx.save();
        ctx.lineWidth = Math.max(1, devicePixelRatio);
        for (const m of markers()) {
          const x = Math.round(u.valToPos(m.at / 1000, 'x', true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.strokeStyle = cssVar(m.kind === 'wake' ? '--wake' : '--suspend');
          ctx.setLineDash(m.kind === 'wake' ? [] : [4 * devicePixelRatio, 3 * devicePixelRatio]);
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
        }
        ctx.restore();
      },
    },
  };
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function counted(line: Line, v: number): string {
  return `${number(v, 2)} ${v === 1 && line.one ? line.one : line.unit}`;
}

/** "now 3 connections, peak 5", "not running now, peak 40 tx/s", "no connections yet". */
function lineSentence(line: Line, from: number): string {
  const values = line.values.slice(from).filter((v): v is number => v !== null);
  if (values.length === 0) return `no ${line.unit} yet`;
  const last = line.values[line.values.length - 1];
  const peak = Math.max(...values);
  return last === null || last === undefined ? `not running now, peak ${counted(line, peak)}` : `now ${counted(line, last)}, peak ${number(peak, 2)}`;
}

/** Whether the line stops and starts again after `from`: a gap while the server did not run. */
function hasGap(values: (number | null)[], from: number): boolean {
  let seen = false;
  let stopped = false;
  for (const v of values.slice(from)) {
    if (v === null) stopped = seen;
    else if (stopped) return true;
    else seen = true;
  }
  return false;
}

export interface ChartProps {
  title: string;
  /** ms since the epoch, one a sample */
  times: number[];
  lines: Line[];
  markers?: Marker[];
  height?: number;
  /** The index of the first sample to show (a tenant made after the daemon started: its first); default 0. */
  first?: number;
}

export function TimeChart(props: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const readout = useRef<HTMLParagraphElement>(null);
  const plot = useRef<uPlot | null>(null);
  const markers = useRef<Marker[]>(props.markers ?? []);
  markers.current = props.markers ?? [];
  const lines = useRef(props.lines);
  lines.current = props.lines;
  const first = Math.min(Math.max(0, props.first ?? 0), Math.max(0, props.times.length - 1));
  const start = useRef<number | null>(null);
  start.current = props.times.length > 0 ? (props.times[first] as number) / 1000 : null;
  const n = props.times.length;
  const minSpan = useRef(30);
  minSpan.current = MIN_SPAN_SAMPLES * (n >= 2 ? ((props.times[n - 1] as number) - (props.times[0] as number)) / (n - 1) / 1000 : 10);
  const key = props.lines.map((l) => l.label).join('|');

  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const options: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: props.height ?? 180,
      legend: { show: false }, // the sentences below say it
      cursor: { drag: { x: false, y: false } },
      scales: {
        // From the first sample to the newest (at least a few samples' time).
        x: { time: true, range: (_u, min, max) => {
          const end = Number.isFinite(max) ? max : Date.now() / 1000;
          const from = start.current ?? (Number.isFinite(min) ? min : end - minSpan.current);
          return [from, Math.max(end, from + minSpan.current)];
        } },
        y: { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max * 1.1)] } },
      axes: [
        // Ticks on whole seconds at least: samples are seconds apart.
        { stroke: cssVar('--muted'), grid: { stroke: cssVar('--grid') }, ticks: { stroke: cssVar('--grid') }, incrs: TIME_STEPS },
        { stroke: cssVar('--muted'), grid: { stroke: cssVar('--grid') }, ticks: { stroke: cssVar('--grid') }, size: 48 },
      ],
      series: [
        {},
        ...props.lines.map((l) => ({ label: l.label, stroke: cssVar(l.color), width: 2, spanGaps: false, points: { show: false } })),
      ],
      hooks: {
        // The axis drawn, in ms, on the figure: for tests and anyone reading the page.
        setScale: [(u: uPlot, scale: string) => {
          const figure = el.parentElement;
          const { min, max } = u.scales.x ?? {};
          if (scale !== 'x' || !figure || min === undefined || max === undefined) return;
          figure.dataset.from = String(Math.round(min * 1000));
          figure.dataset.to = String(Math.round(max * 1000));
        }],
        setCursor: [(u: uPlot) => {
          const out = readout.current;
          if (!out) return;
          const i = u.cursor.idx;
          const at = i === null || i === undefined ? undefined : u.data[0][i];
          if (i === null || i === undefined || at === undefined) {
            out.textContent = '';
            return;
          }
          const parts = lines.current.map((l, k) => {
            const v = u.data[k + 1]?.[i];
            return v === null || v === undefined ? `${l.label} not running` : counted(l, v);
          });
          out.textContent = `At ${clock(at * 1000)}: ${parts.join(', ')}`;
        }],
      },
      plugins: [markerPlugin(() => markers.current)],
    };
    const u = new uPlot(options, [[]], el);
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height: props.height ?? 180 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, [key]);

  useEffect(() => {
    plot.current?.setData([props.times.map((t) => t / 1000), ...props.lines.map((l) => l.values)] as uPlot.AlignedData);
  });

  const drawn = props.lines.map((l) => l.values.slice(first).filter((v) => v !== null).length);
  const wakes = (props.markers ?? []).filter((m) => m.kind === 'wake').length;
  const suspends = (props.markers ?? []).filter((m) => m.kind === 'suspend').length;
  const since = props.times.length > 0 ? ` since ${clock(props.times[first] as number)}` : '';
  const said = props.lines.map((l) => lineSentence(l, first)).join('; ');
  const sentence = `${said.charAt(0).toUpperCase()}${said.slice(1)}${since}.`;
  const gaps = props.lines.some((l) => hasGap(l.values, first)) ? ' Gaps in the line: not running.' : '';
  const marks = props.markers ? ` ${plural(wakes, 'wake')} (solid lines), ${plural(suspends, 'suspend')} (dashed).` : '';
  return (
    <figure class="chart" data-points={drawn.join(',')}>
      <figcaption>{props.title}</figcaption>
      <div ref={box} class="plot" role="img" aria-label={`${props.title}: ${sentence}`} />
      <p class="chart-readout" ref={readout} aria-hidden="true" />
      <p class="chart-summary">{sentence}{gaps}{marks}</p>
    </figure>
  );
}

/** A small line of the last hour for a table row (SVG; null points leave a gap). */
export function Sparkline(props: { values: (number | null)[]; label: string }) {
  const { values } = props;
  const width = 96;
  const height = 22;
  const max = Math.max(1, ...values.filter((v): v is number => v !== null));
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const parts: string[] = [];
  let pen = false;
  values.forEach((v, i) => {
    if (v === null) {
      pen = false;
      return;
    }
    const x = (i * step).toFixed(1);
    const y = (height - 1 - (v / max) * (height - 2)).toFixed(1);
    parts.push(`${pen ? 'L' : 'M'}${x} ${y}`);
    pen = true;
  });
  const peak = values.some((v) => v !== null) ? max : null;
  return (
    <svg class="spark" width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`${props.label}: ${peak === null ? 'no data' : `peak ${number(peak, 1)}`}`}>
      <path d={parts.join(' ')} />
    </svg>
  );
}
