import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseServerLine } from '../../src/serverLog';

describe('parseServerLine', () => {
  test('a log line: its level, without the timestamp', () => {
    assert.deepEqual(parseServerLine('2026-11-22 01:06:33,553 INFO pie-lsp: pie-lsp 0.1.0 serving on stdio'), {
      level: 'info',
      text: 'pie-lsp: pie-lsp 0.1.0 serving on stdio',
    });
    assert.equal(parseServerLine('2026-11-22 01:06:33,553 WARNING x: y').level, 'warn');
    assert.equal(parseServerLine('2026-11-22 01:06:33,553 ERROR x: y', 'info').level, 'error');
    assert.equal(parseServerLine('2026-11-22 01:06:33,553 CRITICAL x: y').level, 'error');
    assert.equal(parseServerLine('2026-11-22 01:06:33,553 DEBUG x: y').level, 'debug');
  });

  test('other lines keep the previous level', () => {
    assert.deepEqual(parseServerLine('  File "server.py", line 1', 'error'), { level: 'error', text: '  File "server.py", line 1' });
    assert.equal(parseServerLine('usage: pie-lsp [-h]').level, 'info');
  });
});
