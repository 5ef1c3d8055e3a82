import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RequestTimer, renderStatus, type ModelStats, type Stats } from '../../src/status';

function stats(model: Partial<ModelStats>): Stats {
  return {
    server: { version: '0.1.0', positionEncoding: 'utf-16', uptimeSeconds: 1 },
    model: { status: 'ready', id: 'default', device: 'cpu', dtype: 'float32', ...model },
    documents: [],
    totals: {},
  };
}

describe('renderStatus', () => {
  test('starting before the first stats', () => {
    const view = renderStatus({ client: 'starting', busy: 0 });
    assert.equal(view.text, '$(sync~spin) pie: starting');
    assert.equal(view.error, false);
  });

  test('loading the model', () => {
    const view = renderStatus({ client: 'running', busy: 0, stats: stats({ status: 'loading', device: null, dtype: null }) });
    assert.equal(view.text, '$(sync~spin) pie: loading default');
  });

  test('ready: model and device, then the last latency', () => {
    assert.equal(renderStatus({ client: 'running', busy: 0, stats: stats({}) }).text, 'pie: default · cpu');
    const view = renderStatus({ client: 'running', busy: 0, stats: stats({}), lastLatencyMs: 311.6 });
    assert.equal(view.text, 'pie: default · cpu · 312 ms');
    assert.match(view.tooltip, /Last completion: 312 ms/);
    assert.match(view.tooltip, /Device: cpu \(float32\)/);
    const lowBit = renderStatus({ client: 'running', busy: 0, stats: stats({ quantize: 'int4' }) });
    assert.match(lowBit.tooltip, /Device: cpu \(float32, int4 weights\)/);
    assert.match(view.tooltip, /pie-lsp 0\.1\.0/);
  });

  test('busy spins', () => {
    const view = renderStatus({ client: 'running', busy: 1, stats: stats({}), lastLatencyMs: 40 });
    assert.equal(view.text, '$(sync~spin) pie: default · cpu · 40 ms');
  });

  test('a model error shows its message', () => {
    const view = renderStatus({ client: 'running', busy: 0, stats: stats({ status: 'error', error: 'no such file: x.gguf' }) });
    assert.equal(view.text, '$(error) pie: model error');
    assert.equal(view.error, true);
    assert.match(view.tooltip, /no such file: x\.gguf/);
  });

  test('a stopped client', () => {
    const view = renderStatus({ client: 'stopped', busy: 0, problem: 'spawn pie-lsp ENOENT' });
    assert.equal(view.text, '$(error) pie: stopped');
    assert.equal(view.error, true);
    assert.match(view.tooltip, /ENOENT/);
  });
});

describe('RequestTimer', () => {
  test('busy while in flight, latency when done', async () => {
    let clock = 100;
    let changes = 0;
    const timer = new RequestTimer(
      () => changes++,
      () => clock,
    );
    let finish: (value: string) => void = () => undefined;
    const running = timer.time(
      () =>
        new Promise<string>((resolve) => {
          finish = resolve;
        }),
      () => false,
    );
    assert.equal(timer.busy, 1);
    clock = 412;
    finish('ok');
    assert.equal(await running, 'ok');
    assert.equal(timer.busy, 0);
    assert.equal(timer.lastLatencyMs, 312);
    assert.equal(changes, 2);
  });

  test('cancelled or failed requests keep the previous latency', async () => {
    let clock = 0;
    const timer = new RequestTimer(
      () => undefined,
      () => (clock += 10),
    );
    await timer.time(() => 'a', () => false);
    assert.equal(timer.lastLatencyMs, 10);
    await timer.time(() => 'b', () => true);
    assert.equal(timer.lastLatencyMs, 10);
    await assert.rejects(
      timer.time(() => Promise.reject(new Error('boom')), () => false),
      /boom/,
    );
    assert.equal(timer.lastLatencyMs, 10);
    assert.equal(timer.busy, 0);
  });
});
