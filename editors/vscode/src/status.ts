/**
 * The status-bar text and request timing, as pure logic (no `vscode` import).
 */

/** `model` in the `pie/stats` response. */
export interface ModelStats {
  status: 'ready' | 'loading' | 'error';
  id: string | null;
  device: string | null;
  dtype: string | null;
  /** Low-bit linear weights (`int8`, `int4`) or `none`; absent from older servers. */
  quantize?: string;
  error?: string;
}

/** The `pie/stats` response (the parts the extension reads; the rest is shown as is). */
export interface Stats {
  server: { version: string; positionEncoding: string; uptimeSeconds: number };
  model: ModelStats;
  documents: { uri: string; version: number; languageId: string; tokens: number; staleTokens: number; strategy: string }[];
  totals: Record<string, number>;
}

export const STATS_REQUEST = 'pie/stats';

export interface StatusState {
  /** The client: starting (or restarting), running, or stopped after a failure. */
  client: 'starting' | 'running' | 'stopped';
  /** The last `pie/stats` answer, if any. */
  stats?: Stats;
  /** Inline completion requests in flight. */
  busy: number;
  /** Latency of the last completed request. */
  lastLatencyMs?: number;
  /** Why the client stopped, or a failed `pie/stats`. */
  problem?: string;
}

export interface StatusView {
  text: string;
  tooltip: string;
  error: boolean;
}

const SPIN = '$(sync~spin)';

/** What the status-bar item shows for a state. */
export function renderStatus(state: StatusState): StatusView {
  const lines: string[] = [];
  const model = state.stats?.model;
  if (state.stats) {
    lines.push(`pie-lsp ${state.stats.server.version}`);
  }
  if (state.client === 'stopped') {
    lines.push(`Server stopped${state.problem ? `: ${state.problem}` : ''}`, 'Click for stats; use "pie: Restart Server" to start it again');
    return { text: '$(error) pie: stopped', tooltip: lines.join('\n'), error: true };
  }
  if (!model || state.client === 'starting') {
    lines.push('Starting the server…');
    return { text: `${SPIN} pie: starting`, tooltip: lines.join('\n'), error: false };
  }
  const id = model.id ?? 'model';
  if (model.status === 'error') {
    lines.push(`Model ${id} failed to load: ${model.error ?? 'unknown error'}`, 'Click for stats; see "pie: Open Server Log"');
    return { text: '$(error) pie: model error', tooltip: lines.join('\n'), error: true };
  }
  if (model.status === 'loading') {
    lines.push(`Loading model ${id}…`);
    return { text: `${SPIN} pie: loading ${id}`, tooltip: lines.join('\n'), error: false };
  }
  const latency = state.lastLatencyMs === undefined ? undefined : `${Math.round(state.lastLatencyMs)} ms`;
  const weights = model.quantize && model.quantize !== 'none' ? `, ${model.quantize} weights` : '';
  lines.push(`Model: ${id}`, `Device: ${model.device ?? '?'} (${model.dtype ?? '?'}${weights})`);
  if (latency) {
    lines.push(`Last completion: ${latency}`);
  }
  if (state.busy > 0) {
    lines.push('Completing…');
  }
  lines.push('Click for stats');
  const parts = [`pie: ${id} · ${model.device ?? '?'}`];
  if (latency) {
    parts.push(latency);
  }
  const text = (state.busy > 0 ? `${SPIN} ` : '') + parts.join(' · ');
  return { text, tooltip: lines.join('\n'), error: false };
}

/** Counts requests in flight and times them. */
export class RequestTimer {
  busy = 0;
  lastLatencyMs: number | undefined;

  constructor(
    private readonly onChange: () => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Runs a request; its latency is kept unless it was cancelled or failed. */
  async time<T>(request: () => T | PromiseLike<T>, isCancelled: () => boolean): Promise<T> {
    const start = this.now();
    this.busy++;
    this.onChange();
    let ok = false;
    try {
      const result = await request();
      ok = true;
      return result;
    } finally {
      this.busy--;
      if (ok && !isCancelled()) {
        this.lastLatencyMs = this.now() - start;
      }
      this.onChange();
    }
  }
}
