// Time series charts with uPlot: a gap where the server did not run (null
// points), wake and suspend markers on the time axis, and a text summary of
// what is drawn (for screen readers, and for anyone who wants the numbers).
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { clock, number } from './format';

export interface Line {
  label: string;
  values: (number | null)[];
  /** A CSS custom property holding the colour, e.g. --series-1. */
  color: string;
  unit?: string;
}

export interface Marker {
  /** ms since the epoch */
  at: number;
  kind: 'wake' | 'suspend';
}

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

function summary(line: Line): string {
  const values = line.values.filter((v): v is number => v !== null);
  if (values.length === 0) return `${line.label}: no data`;
  const last = line.values[line.values.length - 1];
  return `${line.label}: now ${last === null || last === undefined ? 'not running' : number(last, 2)}, peak ${number(Math.max(...values), 2)}${line.unit ? ` ${line.unit}` : ''}`;
}

export function TimeChart(props: { title: string; times: number[]; lines: Line[]; markers?: Marker[]; height?: number; /** seconds the x axis spans, ending at the newest sample */ span: number }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const markers = useRef<Marker[]>(props.markers ?? []);
  markers.current = props.markers ?? [];
  const span = useRef(props.span);
  span.current = props.span;
  const key = props.lines.map((l) => l.label).join('|');

  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const options: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: props.height ?? 180,
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        // Always the whole hour (or day) ending now, however few samples there are yet.
        x: { time: true, range: (_u, _min, max) => { const end = Number.isFinite(max) ? max : Date.now() / 1000; return [end - span.current, end]; } },
        y: { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max * 1.1)] } },
      axes: [
        { stroke: cssVar('--muted'), grid: { stroke: cssVar('--grid') }, ticks: { stroke: cssVar('--grid') } },
        { stroke: cssVar('--muted'), grid: { stroke: cssVar('--grid') }, ticks: { stroke: cssVar('--grid') }, size: 48 },
      ],
      series: [
        { value: (_u, v) => (v === null ? '—' : clock(v * 1000)) },
        ...props.lines.map((l) => ({ label: l.label, stroke: cssVar(l.color), width: 2, spanGaps: false, points: { show: false }, value: (_u: uPlot, v: number | null) => (v === null ? '—' : number(v, 2)) })),
      ],
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

  const drawn = props.lines.map((l) => l.values.filter((v) => v !== null).length);
  const wakes = (props.markers ?? []).filter((m) => m.kind === 'wake').length;
  const suspends = (props.markers ?? []).filter((m) => m.kind === 'suspend').length;
  return (
    <figure class="chart" data-points={drawn.join(',')}>
      <figcaption>{props.title}</figcaption>
      <div ref={box} class="plot" role="img" aria-label={props.lines.map(summary).join('; ')} />
      <p class="chart-summary">
        {props.lines.map(summary).join(' · ')}
        {props.markers ? ` · ${wakes} wake${wakes === 1 ? '' : 's'} (solid line), ${suspends} suspend${suspends === 1 ? '' : 's'} (dashed)` : ''}
      </p>
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
