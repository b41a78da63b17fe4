// Hand-written SVG charts: a series chart with a legend and a horizontal bar chart. The
// viewBox has a fixed aspect ratio, so the chart's box is the same before and after data.
import { number } from "./ui";

export interface Series {
  label: string;
  values: number[];
}

const PAD = { left: 52, right: 12, top: 12, bottom: 28 };
// A phone gets a narrower drawing rather than the wide one shrunk, so labels stay legible.
const narrow = matchMedia("(max-width: 720px)");

export function color(index: number): string {
  return `var(--c${index % 8})`;
}

/** A "nice" axis maximum: 1, 2 or 5 times a power of ten at or above `max`. */
function niceMax(max: number): number {
  if (max <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((step) => step * power).find((candidate) => candidate >= max) ?? max;
}

export function SeriesChart({ labels, series, title }: { labels: string[]; series: Series[]; title: string }) {
  const [WIDTH, HEIGHT] = narrow.matches ? [400, 240] : [800, 260];
  const max = niceMax(Math.max(0, ...series.flatMap((line) => line.values)));
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const x = (index: number) => PAD.left + (labels.length <= 1 ? plotWidth / 2 : (index * plotWidth) / (labels.length - 1));
  const y = (value: number) => PAD.top + plotHeight - (value / max) * plotHeight;
  const ticks = [0, max / 2, max];
  const shown = labels.length <= 1 ? [0] : [0, Math.floor((labels.length - 1) / 2), labels.length - 1];
  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} style={{ aspectRatio: `${WIDTH} / ${HEIGHT}` }} role="img" aria-label={title}>
        {ticks.map((tick) => (
          <g class="tick">
            <line x1={PAD.left} x2={WIDTH - PAD.right} y1={y(tick)} y2={y(tick)} />
            <text x={PAD.left - 6} y={y(tick) + 4} text-anchor="end">
              {number.format(tick)}
            </text>
          </g>
        ))}
        {shown.map((index) => (
          <text class="axis" x={x(index)} y={HEIGHT - 8} text-anchor={index === 0 ? "start" : index === labels.length - 1 ? "end" : "middle"}>
            {labels[index]}
          </text>
        ))}
        {series.map((line, lineIndex) => (
          <g stroke={color(lineIndex)} fill={color(lineIndex)}>
            <polyline fill="none" stroke-width="2" points={line.values.map((value, index) => `${x(index)},${y(value)}`).join(" ")} />
            {line.values.length <= 60 &&
              line.values.map((value, index) => (
                <circle cx={x(index)} cy={y(value)} r="3">
                  <title>{`${line.label} · ${labels[index]}: ${number.format(value)}`}</title>
                </circle>
              ))}
          </g>
        ))}
      </svg>
      <figcaption class="legend" data-testid="legend">
        {series.map((line, index) => (
          <span>
            <i style={{ background: color(index) }} />
            {line.label}
          </span>
        ))}
      </figcaption>
    </figure>
  );
}

export interface Bar {
  label: string;
  value: number;
  note?: string;
}

export function BarChart({ bars, title }: { bars: Bar[]; title: string }) {
  const max = Math.max(1, ...bars.map((bar) => bar.value));
  return (
    <figure class="bars" role="img" aria-label={title}>
      {bars.map((bar, index) => (
        <div class="bar-row">
          <span class="bar-label">{`${index + 1}. ${bar.label}`}</span>
          <span class="bar-track">
            <span class="bar-fill" style={{ width: `${(bar.value / max) * 100}%`, background: color(0) }} />
          </span>
          <span class="bar-value">
            {number.format(bar.value)}
            {bar.note && <small> {bar.note}</small>}
          </span>
        </div>
      ))}
    </figure>
  );
}
