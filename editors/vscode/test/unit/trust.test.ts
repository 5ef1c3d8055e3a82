import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import {
  RESTRICTED_SETTINGS,
  SERVER_DEFAULTS,
  toLaunchSettings,
  toServerConfig,
  untrustedGetter,
  type SettingScopes,
} from '../../src/settings';

interface ConfigProperty {
  default: unknown;
  markdownDescription?: string;
}

const packageJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as {
  capabilities: { untrustedWorkspaces: { supported: unknown; restrictedConfigurations?: string[] } };
  contributes: { configuration: { properties: Record<string, ConfigProperty> } };
};
const properties = packageJson.contributes.configuration.properties;
const restricted = packageJson.capabilities.untrustedWorkspaces.restrictedConfigurations ?? [];

/**
 * Whether a setting picks a program to run or code or weights to load, read from its
 * name and description, so that a new such setting is caught as well.
 */
function choosesWhatIsLoaded(key: string, property: ConfigProperty): boolean {
  const name = /model|remote|device|path|python|args|command|executable|binary|weights/i;
  const description = /hub id|\.gguf|model directory|own (python )?code|executable|interpreter|arguments/i;
  return name.test(key) || description.test(property.markdownDescription ?? '');
}

describe('untrusted workspaces', () => {
  test('package.json restricts pie.model, pie.trustRemoteCode, pie.device and pie.server.*', () => {
    assert.equal(packageJson.capabilities.untrustedWorkspaces.supported, 'limited');
    for (const key of [
      'pie.model',
      'pie.trustRemoteCode',
      'pie.device',
      'pie.server.path',
      'pie.server.python',
      'pie.server.args',
      'pie.cache.diskDir',
    ]) {
      assert.ok(restricted.includes(key), `${key} missing from restrictedConfigurations`);
    }
  });

  test('every setting that chooses a program, code or weights is restricted', () => {
    const loaders = Object.entries(properties)
      .filter(([key, property]) => choosesWhatIsLoaded(key, property))
      .map(([key]) => key);
    assert.ok(loaders.length >= 6, loaders.join(', ')); // the check itself still finds them
    for (const key of loaders) {
      assert.ok(restricted.includes(key), `${key} picks what is run or loaded but is not in restrictedConfigurations`);
    }
  });

  test('restrictedConfigurations and the extension code name the same declared settings', () => {
    for (const key of restricted) {
      assert.ok(properties[key], `${key} is restricted but not declared`);
    }
    assert.deepEqual([...restricted].sort(), RESTRICTED_SETTINGS.map((k) => `pie.${k}`).sort());
  });

  test('untrusted: restricted settings come from user settings or the default, never the workspace', () => {
    const workspace: Record<string, unknown> = {
      model: 'evil/model-with-code',
      trustRemoteCode: true,
      device: 'cuda:1',
      'server.path': '${workspaceFolder}/evil',
      'server.python': './python',
      'server.args': ['--model', 'evil/other'],
      'completion.maxTokens': 16,
      'trace.verbose': true,
    };
    const user: Record<string, unknown> = { device: 'cpu' };
    const scopes = (key: string): SettingScopes => ({
      defaultValue: properties[`pie.${key}`]?.default,
      globalValue: user[key],
      workspaceValue: workspace[key],
    });
    // What VS Code's get() would merge if it did not withhold workspace values itself.
    const merged = (key: string): unknown => workspace[key] ?? user[key] ?? properties[`pie.${key}`]?.default;
    const get = untrustedGetter(merged, scopes);

    const config = toServerConfig(get);
    assert.equal(config.model, SERVER_DEFAULTS.model);
    assert.equal(config.trustRemoteCode, false);
    assert.equal(config.device, 'cpu'); // the user's own value
    assert.equal(config.completion.maxTokens, 16); // not restricted: the workspace's value
    assert.deepEqual(toLaunchSettings(get), { serverPath: '', python: '', args: [], verbose: true });

    // Trusted (the plain getter), the workspace's values are used.
    const trusted = toServerConfig(merged);
    assert.equal(trusted.model, 'evil/model-with-code');
    assert.equal(trusted.trustRemoteCode, true);
  });

  test('untrusted: an unset restricted setting reads as its default', () => {
    const get = untrustedGetter(
      () => 'from get',
      () => undefined,
    );
    assert.equal(get('model'), undefined);
    assert.equal(get('completion.maxTokens'), 'from get');
    assert.deepEqual(toServerConfig(get).model, SERVER_DEFAULTS.model);
  });
});

describe('toLaunchSettings', () => {
  test('reads pie.server.* and pie.trace.verbose; wrong types count as unset', () => {
    assert.deepEqual(
      toLaunchSettings({ 'server.path': '/x/pie-lsp', 'server.python': 'py', 'server.args': ['-v'], 'trace.verbose': true }),
      { serverPath: '/x/pie-lsp', python: 'py', args: ['-v'], verbose: true },
    );
    assert.deepEqual(toLaunchSettings({ 'server.path': 3, 'server.args': ['a', 1], 'trace.verbose': 'yes' }), {
      serverPath: undefined,
      python: undefined,
      args: ['a'],
      verbose: false,
    });
  });
});
