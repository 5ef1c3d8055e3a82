import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import {
  SERVER_DEFAULTS,
  documentSelector,
  resolveServerCommand,
  toServerConfig,
  venvExecutable,
  type LaunchEnvironment,
} from '../../src/settings';

interface ConfigProperty {
  type: string;
  default: unknown;
  enum?: string[];
  minimum?: number;
  maximum?: number;
}

const packageJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as {
  contributes: { configuration: { properties: Record<string, ConfigProperty> } };
};
const properties = packageJson.contributes.configuration.properties;

/** Flat `{ "completion.maxTokens": 64, ... }` from a nested config. */
function flatten(obj: object, prefix = ''): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(obj)) {
    if (value !== null && typeof value === 'object') {
      Object.assign(out, flatten(value as object, `${prefix}${key}.`));
    } else {
      out[prefix + key] = value;
    }
  }
  return out;
}

describe('toServerConfig', () => {
  test('no settings give the server defaults', () => {
    assert.deepEqual(toServerConfig({}), SERVER_DEFAULTS);
    assert.deepEqual(toServerConfig(() => undefined), SERVER_DEFAULTS);
  });

  test('the exact nested shape the server takes', () => {
    assert.deepEqual(toServerConfig({}), {
      model: 'default',
      device: 'auto',
      dtype: 'auto',
      quantize: 'auto',
      trustRemoteCode: false,
      completion: { maxTokens: 64, temperature: 0, multiline: 'auto', contextTokens: 2048, maxItems: 3, panelItems: 5, workspaceTokens: 0.25 },
      cache: {
        strategy: 'pie',
        tailTokens: 32,
        afterEditTokens: 32,
        staleBudget: 512,
        confidenceMargin: 0.05,
        gateRefreshTokens: 128,
        maxStaleTokens: -1,
        idleRefreshMs: 800,
        maxDocuments: 8,
        maxMemoryMB: 2048,
        diskMB: 2048,
        diskDir: '',
      },
    });
  });

  test('set values are nested under their section', () => {
    const config = toServerConfig({
      model: 'qwen2.5-coder-0.5b',
      device: 'cuda:1',
      trustRemoteCode: true,
      'completion.maxTokens': 16,
      'completion.temperature': 0.2,
      'completion.multiline': 'never',
      'cache.strategy': 'prefix',
      'cache.maxStaleTokens': 0,
    });
    assert.equal(config.model, 'qwen2.5-coder-0.5b');
    assert.equal(config.device, 'cuda:1');
    assert.equal(config.trustRemoteCode, true);
    assert.deepEqual(config.completion, { ...SERVER_DEFAULTS.completion, maxTokens: 16, temperature: 0.2, multiline: 'never' });
    assert.deepEqual(config.cache, { ...SERVER_DEFAULTS.cache, strategy: 'prefix', maxStaleTokens: 0 });
  });

  test('a getter is read with keys under pie', () => {
    const seen: string[] = [];
    toServerConfig((key) => {
      seen.push(key);
      return undefined;
    });
    assert.deepEqual(seen.sort(), Object.keys(flatten(SERVER_DEFAULTS)).sort());
    assert.ok(seen.includes('completion.maxTokens') && seen.includes('cache.maxMemoryMB'));
  });

  test('extension-only settings never reach the server', () => {
    const config = toServerConfig({
      'server.path': '/x/pie-lsp',
      'server.python': 'python3',
      'server.args': ['-v'],
      'trace.verbose': true,
      'trace.server': 'verbose',
      languages: ['python'],
    });
    assert.deepEqual(config, SERVER_DEFAULTS);
  });

  test('a value of the wrong type falls back to the default; ranges are left to the server', () => {
    const config = toServerConfig({ 'completion.maxTokens': '16', trustRemoteCode: 'yes', 'cache.tailTokens': 99999 });
    assert.equal(config.completion.maxTokens, 64);
    assert.equal(config.trustRemoteCode, false);
    assert.equal(config.cache.tailTokens, 99999);
  });

  test('package.json declares every server setting with the server default', () => {
    const flat = flatten(SERVER_DEFAULTS);
    for (const [key, value] of Object.entries(flat)) {
      const property = properties[`pie.${key}`];
      assert.ok(property, `pie.${key} missing from package.json`);
      assert.deepEqual(property.default, value, `pie.${key} default`);
      const expected = typeof value === 'number' ? (Number.isInteger(value) && !['completion.temperature', 'cache.confidenceMargin'].includes(key) ? 'integer' : 'number') : typeof value;
      assert.equal(property.type, expected, `pie.${key} type`);
    }
    const serverKeys = Object.keys(properties).filter(
      (k) => !k.startsWith('pie.server.') && !k.startsWith('pie.trace.') && k !== 'pie.languages',
    );
    assert.deepEqual(serverKeys.sort(), Object.keys(flat).map((k) => `pie.${k}`).sort());
  });

  test('package.json ranges and choices match the server', () => {
    const ranges: Record<string, [number, number]> = {
      'completion.maxTokens': [1, 1024],
      'completion.temperature': [0, 2],
      'completion.contextTokens': [64, 131072],
      'completion.maxItems': [1, 8],
      'completion.panelItems': [1, 10],
      'completion.workspaceTokens': [0, 0.75],
      'cache.tailTokens': [1, 4096],
      'cache.afterEditTokens': [0, 4096],
      'cache.staleBudget': [0, 1048576],
      'cache.confidenceMargin': [0, 20],
      'cache.gateRefreshTokens': [-1, 1048576],
      'cache.maxStaleTokens': [-1, 1048576],
      'cache.idleRefreshMs': [0, 600000],
      'cache.maxDocuments': [1, 256],
      'cache.maxMemoryMB': [16, 1048576],
      'cache.diskMB': [0, 4194304],
    };
    for (const [key, [min, max]] of Object.entries(ranges)) {
      assert.equal(properties[`pie.${key}`]?.minimum, min, `pie.${key} minimum`);
      assert.equal(properties[`pie.${key}`]?.maximum, max, `pie.${key} maximum`);
    }
    assert.deepEqual(properties['pie.dtype']?.enum, ['auto', 'float32', 'float16', 'bfloat16']);
    assert.deepEqual(properties['pie.quantize']?.enum, ['auto', 'none', 'int8', 'int4']);
    assert.deepEqual(properties['pie.completion.multiline']?.enum, ['auto', 'always', 'never']);
    assert.deepEqual(properties['pie.cache.strategy']?.enum, ['pie', 'prefix', 'recompute']);
    const device = new RegExp((properties['pie.device'] as ConfigProperty & { pattern: string }).pattern);
    for (const ok of ['auto', 'cpu', 'cuda', 'cuda:0', 'cuda:12', 'mps']) {
      assert.ok(device.test(ok), ok);
    }
    for (const bad of ['gpu', 'cuda:', 'cuda:x', 'CPU', ' cpu']) {
      assert.ok(!device.test(bad), bad);
    }
  });
});

describe('resolveServerCommand', () => {
  function env(overrides: Partial<LaunchEnvironment> & { files?: string[] } = {}): LaunchEnvironment {
    const files = new Set(overrides.files ?? []);
    return {
      workspaceFolders: overrides.workspaceFolders ?? ['/ws'],
      platform: overrides.platform ?? 'linux',
      exists: overrides.exists ?? ((file) => files.has(file)),
    };
  }

  test('pie.server.path wins, with serve and the extra args', () => {
    const cmd = resolveServerCommand(
      { serverPath: '/opt/pie/bin/pie-lsp', python: '/usr/bin/python3', args: ['--log-file', '/tmp/pie.log'] },
      env({ files: ['/ws/.venv/bin/pie-lsp'] }),
    );
    assert.deepEqual(cmd, {
      command: '/opt/pie/bin/pie-lsp',
      args: ['serve', '--log-file', '/tmp/pie.log'],
      source: 'pie.server.path',
    });
  });

  test('pie.server.python runs the module', () => {
    const cmd = resolveServerCommand({ python: '/usr/bin/python3', serverPath: '  ' }, env());
    assert.deepEqual(cmd, { command: '/usr/bin/python3', args: ['-m', 'lsp_server', 'serve'], source: 'pie.server.python' });
  });

  test('verbose adds -v before the extra args', () => {
    assert.deepEqual(resolveServerCommand({ verbose: true, args: ['--device', 'cpu'] }, env()).args, [
      'serve',
      '-v',
      '--device',
      'cpu',
    ]);
    assert.deepEqual(resolveServerCommand({ python: 'py', verbose: true }, env()).args, ['-m', 'lsp_server', 'serve', '-v']);
  });

  test('${workspaceFolder} is the first workspace folder', () => {
    const cmd = resolveServerCommand({ serverPath: '${workspaceFolder}/tools/pie-lsp' }, env({ workspaceFolders: ['/a', '/b'] }));
    assert.equal(cmd.command, '/a/tools/pie-lsp');
  });

  test('the first workspace folder with a venv executable', () => {
    const cmd = resolveServerCommand({}, env({ workspaceFolders: ['/a', '/b', '/c'], files: ['/b/.venv/bin/pie-lsp', '/c/.venv/bin/pie-lsp'] }));
    assert.deepEqual(cmd, { command: '/b/.venv/bin/pie-lsp', args: ['serve'], source: 'workspace venv' });
  });

  test('Windows looks for .venv\\Scripts\\pie-lsp.exe', () => {
    const exe = 'C:\\ws\\.venv\\Scripts\\pie-lsp.exe';
    assert.equal(venvExecutable('C:\\ws', 'win32'), exe);
    const cmd = resolveServerCommand({}, env({ workspaceFolders: ['C:\\ws'], platform: 'win32', files: [exe] }));
    assert.equal(cmd.command, exe);
    const posixOnly = resolveServerCommand({}, env({ workspaceFolders: ['C:\\ws'], platform: 'win32', files: ['C:\\ws/.venv/bin/pie-lsp'] }));
    assert.equal(posixOnly.command, 'pie-lsp');
  });

  test('pie-lsp on PATH when nothing else is found', () => {
    assert.deepEqual(resolveServerCommand({}, env()), { command: 'pie-lsp', args: ['serve'], source: 'PATH' });
    assert.deepEqual(resolveServerCommand({}, env({ workspaceFolders: [] })).source, 'PATH');
  });
});

describe('documentSelector', () => {
  test('all file and untitled documents by default', () => {
    const all = [{ scheme: 'file' }, { scheme: 'untitled' }];
    assert.deepEqual(documentSelector(undefined), all);
    assert.deepEqual(documentSelector([]), all);
    assert.deepEqual(documentSelector(['*']), all);
    assert.deepEqual(documentSelector(['python', '*']), all);
  });

  test('listed languages only', () => {
    assert.deepEqual(documentSelector(['python', 'rust']), [
      { scheme: 'file', language: 'python' },
      { scheme: 'untitled', language: 'python' },
      { scheme: 'file', language: 'rust' },
      { scheme: 'untitled', language: 'rust' },
    ]);
  });
});
