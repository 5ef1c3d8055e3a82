/**
 * Pure settings logic (no `vscode` import, so it is unit-tested under plain Node):
 * the `pie.*` settings -> the server's initializationOptions, and which command
 * starts the server.
 */
import * as path from 'node:path';

/** The server's configuration, nested as `initializationOptions` and `didChangeConfiguration` take it. */
export interface ServerConfig {
  model: string;
  device: string;
  dtype: string;
  quantize: string;
  trustRemoteCode: boolean;
  completion: {
    maxTokens: number;
    temperature: number;
    multiline: string;
    contextTokens: number;
    maxItems: number;
    panelItems: number;
    workspaceTokens: number;
  };
  cache: {
    strategy: string;
    tailTokens: number;
    afterEditTokens: number;
    staleBudget: number;
    confidenceMargin: number;
    gateRefreshTokens: number;
    maxStaleTokens: number;
    idleRefreshMs: number;
    maxDocuments: number;
    maxMemoryMB: number;
    diskMB: number;
    diskDir: string;
  };
}

/** The server's defaults (lsp_server/config.py); package.json declares the same. */
export const SERVER_DEFAULTS: ServerConfig = {
  model: 'default',
  device: 'auto',
  dtype: 'auto',
  quantize: 'auto',
  trustRemoteCode: false,
  completion: {
    maxTokens: 64,
    temperature: 0,
    multiline: 'auto',
    contextTokens: 2048,
    maxItems: 3,
    panelItems: 5,
    workspaceTokens: 0.25,
  },
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
};

/** Reads one setting by its key under `pie` ("model", "completion.maxTokens"); undefined if unset. */
export type SettingsGetter = (key: string) => unknown;

/** A getter, or a flat object of keys under `pie` such as `{"completion.maxTokens": 16}`. */
export type SettingsSource = SettingsGetter | Readonly<Record<string, unknown>>;

function getterOf(source: SettingsSource): SettingsGetter {
  return typeof source === 'function' ? source : (key) => source[key];
}

type Leaf = string | number | boolean;

/** A set value of the default's type, else the default. Ranges are left to the server, which reports them. */
function pick<T extends Leaf>(get: SettingsGetter, key: string, fallback: T): T {
  const value = get(key);
  return typeof value === typeof fallback ? (value as T) : fallback;
}

function section<T extends object>(get: SettingsGetter, prefix: string, defaults: T): T {
  const out: Record<string, Leaf> = {};
  for (const [name, fallback] of Object.entries(defaults) as [string, Leaf][]) {
    out[name] = pick(get, prefix + name, fallback);
  }
  return out as T;
}

/**
 * The server's nested configuration from flat `pie.*` settings. Only server keys are
 * read: `pie.server.*`, `pie.trace.*` and `pie.languages` belong to the extension.
 */
export function toServerConfig(source: SettingsSource): ServerConfig {
  const get = getterOf(source);
  const d = SERVER_DEFAULTS;
  return {
    model: pick(get, 'model', d.model),
    device: pick(get, 'device', d.device),
    dtype: pick(get, 'dtype', d.dtype),
    quantize: pick(get, 'quantize', d.quantize),
    trustRemoteCode: pick(get, 'trustRemoteCode', d.trustRemoteCode),
    completion: section(get, 'completion.', d.completion),
    cache: section(get, 'cache.', d.cache),
  };
}

/**
 * Settings (keys under `pie`) that a workspace may not set until it is trusted: they pick
 * the program that is run (`server.*`: its path, interpreter and arguments, which can
 * name a model or a log file) and the code and weights the server loads (`model`: a hub
 * id, directory or `.gguf`; `trustRemoteCode`: running the model's own Python code;
 * `device`: which accelerator runtime is loaded and holds the weights) and where the
 * server writes (`cache.diskDir`: saved caches). package.json lists
 * the same keys in `capabilities.untrustedWorkspaces.restrictedConfigurations`.
 */
export const RESTRICTED_SETTINGS: readonly string[] = [
  'model',
  'trustRemoteCode',
  'device',
  'server.path',
  'server.python',
  'server.args',
  'cache.diskDir',
];

/** The scopes of one setting, as `WorkspaceConfiguration.inspect` reports them (the ones used here). */
export interface SettingScopes {
  defaultValue?: unknown;
  globalValue?: unknown;
  workspaceValue?: unknown;
  workspaceFolderValue?: unknown;
}

/**
 * The getter to use in an untrusted workspace: a restricted setting comes from the user's
 * settings, else its default, never from the workspace (`.vscode/settings.json` or a
 * `.code-workspace` file); every other setting as `get` reads it. VS Code withholds
 * workspace values of `restrictedConfigurations` in Restricted Mode itself; this does not
 * rely on that.
 */
export function untrustedGetter(get: SettingsGetter, inspect: (key: string) => SettingScopes | undefined): SettingsGetter {
  return (key) => {
    if (!RESTRICTED_SETTINGS.includes(key)) {
      return get(key);
    }
    const scopes = inspect(key);
    return scopes?.globalValue ?? scopes?.defaultValue;
  };
}

/** Settings whose change needs a new server process rather than `didChangeConfiguration`. */
export const RESTART_SECTIONS = ['pie.server', 'pie.trace.verbose', 'pie.languages'] as const;

/** What the extension itself reads to start the server. */
export interface LaunchSettings {
  /** `pie.server.path`: a `pie-lsp` executable. */
  serverPath?: string;
  /** `pie.server.python`: an interpreter with pie-lsp installed (`<python> -m lsp_server`). */
  python?: string;
  /** `pie.server.args`: extra arguments after `serve`. */
  args?: readonly string[];
  /** `pie.trace.verbose`: `-v` for more server logging. */
  verbose?: boolean;
}

function stringOf(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** The launch settings from `pie.*` settings; a value of the wrong type counts as unset. */
export function toLaunchSettings(source: SettingsSource): LaunchSettings {
  const get = getterOf(source);
  const args = get('server.args');
  return {
    serverPath: stringOf(get('server.path')),
    python: stringOf(get('server.python')),
    args: Array.isArray(args) ? args.filter((a): a is string => typeof a === 'string') : undefined,
    verbose: get('trace.verbose') === true,
  };
}

export interface LaunchEnvironment {
  /** Workspace folder paths, first first. */
  workspaceFolders: readonly string[];
  platform: NodeJS.Platform;
  /** Whether a file exists (injected for tests). */
  exists: (file: string) => boolean;
}

export interface ServerCommand {
  command: string;
  args: string[];
  /** Where the command came from, for the log. */
  source: 'pie.server.path' | 'pie.server.python' | 'workspace venv' | 'PATH';
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}

/** `${workspaceFolder}` in a configured path means the first workspace folder. */
function expand(value: string, env: LaunchEnvironment): string {
  const folder = env.workspaceFolders[0];
  return folder === undefined ? value : value.split('${workspaceFolder}').join(folder);
}

/** The venv executable a workspace folder may hold: `.venv/bin/pie-lsp` or `.venv\Scripts\pie-lsp.exe`. */
export function venvExecutable(folder: string, platform: NodeJS.Platform): string {
  return platform === 'win32'
    ? path.win32.join(folder, '.venv', 'Scripts', 'pie-lsp.exe')
    : path.posix.join(folder, '.venv', 'bin', 'pie-lsp');
}

/**
 * The command that starts the server on stdio: `pie.server.path`, else
 * `pie.server.python -m lsp_server`, else the first workspace folder's
 * `.venv` executable that exists, else `pie-lsp` on PATH.
 */
export function resolveServerCommand(settings: LaunchSettings, env: LaunchEnvironment): ServerCommand {
  const serverArgs = ['serve', ...(settings.verbose ? ['-v'] : []), ...(settings.args ?? [])];
  const serverPath = nonEmpty(settings.serverPath);
  if (serverPath !== undefined) {
    return { command: expand(serverPath, env), args: serverArgs, source: 'pie.server.path' };
  }
  const python = nonEmpty(settings.python);
  if (python !== undefined) {
    return { command: expand(python, env), args: ['-m', 'lsp_server', ...serverArgs], source: 'pie.server.python' };
  }
  for (const folder of env.workspaceFolders) {
    const candidate = venvExecutable(folder, env.platform);
    if (env.exists(candidate)) {
      return { command: candidate, args: serverArgs, source: 'workspace venv' };
    }
  }
  return { command: 'pie-lsp', args: serverArgs, source: 'PATH' };
}

/** Document selector entries: file and untitled documents of the configured languages. */
export function documentSelector(
  languages: readonly string[] | undefined,
): { scheme: string; language?: string }[] {
  const list = languages && languages.length > 0 ? languages : ['*'];
  if (list.includes('*')) {
    return [{ scheme: 'file' }, { scheme: 'untitled' }];
  }
  return list.flatMap((language) => [
    { scheme: 'file', language },
    { scheme: 'untitled', language },
  ]);
}
