/**
 * The real pie-lsp server over stdio, spoken to the way VS Code's language client does:
 * utf-16 positions (no `general.positionEncodings`), incremental sync, inline completion,
 * work-done progress, and initializationOptions from the extension's own settings code.
 *
 * Server: $PIE_LSP, else <repo>/.venv/bin/pie-lsp. The first completion loads the model.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
  createMessageConnection,
  type MessageConnection,
} from 'vscode-jsonrpc/node';
import type {
  ClientCapabilities,
  DidChangeTextDocumentParams,
  DidOpenTextDocumentParams,
  InitializeParams,
  InitializeResult,
  InlineCompletionItem,
  InlineCompletionList,
  InlineCompletionParams,
  Position,
  ShowMessageParams,
} from 'vscode-languageserver-protocol';
import { toServerConfig, venvExecutable } from '../../src/settings';
import { PANEL_REQUEST, PanelModel, panelParams, type PanelResult } from '../../src/panel';
import type { Stats } from '../../src/status';

const EXTENSION_ROOT = path.resolve(__dirname, '..', '..', '..');
const SERVER = process.env.PIE_LSP || venvExecutable(path.resolve(EXTENSION_ROOT, '..', '..'), process.platform);
const FIRST_COMPLETION_MS = 120_000;
const REQUEST_MS = 30_000;

const URI = 'file:///tmp/pie-vscode-protocol-test/sample.py';
// An emoji is two UTF-16 code units, a CJK character one: columns differ from code points.
const LINES = [
  '"""Greetings in many scripts. 你好 👋 🎉"""',
  '',
  'GREETINGS = {"zh": "你好", "ja": "こんにちは", "emoji": "👋🌍"}',
  '',
  '',
  'def greet(name: str) -> str:',
  '    """Say hello to ``name`` 😀."""',
  '    return "Hello, " + name + "!"  # 🥧',
];
const TEXT = LINES.join('\n');
/** Typed at the end of the document; the cursor ends after it. */
const TYPED = '\n\n\ndef add(a, b):\n    return ';

/** UTF-16 length, as VS Code counts columns. */
const utf16 = (s: string): number => s.length;

/** What VS Code 1.90's language client announces (the parts the server reads). */
const CAPABILITIES: ClientCapabilities = {
  general: { regularExpressions: { engine: 'ECMAScript', version: 'ES2020' }, markdown: { parser: 'marked', version: '1.1.0' } },
  window: { workDoneProgress: true, showMessage: { messageActionItem: { additionalPropertiesSupport: true } }, showDocument: { support: true } },
  workspace: {
    applyEdit: true,
    configuration: true,
    workspaceFolders: true,
    didChangeConfiguration: { dynamicRegistration: true },
    executeCommand: { dynamicRegistration: true },
  },
  textDocument: {
    synchronization: { dynamicRegistration: true, willSave: true, willSaveWaitUntil: true, didSave: true },
    completion: { dynamicRegistration: true, contextSupport: true, completionItem: { snippetSupport: true } },
    inlineCompletion: { dynamicRegistration: true },
  },
};

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe('pie-lsp over stdio, as VS Code speaks it', { timeout: 300_000 }, () => {
  let proc: ChildProcessWithoutNullStreams;
  let connection: MessageConnection;
  let stderr = '';
  /** Rejects when the server exits before `exit` was sent. */
  let died: Promise<never>;
  let exitCode: Promise<number | null>;
  const messages: ShowMessageParams[] = [];
  const progress: unknown[] = [];
  const synced: { uri: string; version: number }[] = [];

  /** A request that fails with the server's stderr if the server dies first. */
  function request<R>(method: string, params: unknown, ms = REQUEST_MS): Promise<R> {
    const sent = params === undefined ? connection.sendRequest<R>(method) : connection.sendRequest<R>(method, params);
    return withTimeout(Promise.race([sent, died]), ms, method);
  }

  async function waitFor(check: () => boolean, what: string, ms = REQUEST_MS): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${what}`);
      }
      await Promise.race([new Promise((resolve) => setTimeout(resolve, 20)), died]);
    }
  }

  before(() => {
    if (!fs.existsSync(SERVER)) {
      throw new Error(`pie-lsp server not found at ${SERVER}: run \`make setup\` in the repo root or set PIE_LSP`);
    }
    proc = spawn(SERVER, ['serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
    proc.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      if (process.env.PIE_LSP_LOG) {
        process.stderr.write(chunk);
      }
    });
    exitCode = new Promise((resolve, reject) => {
      proc.on('error', reject);
      proc.on('exit', (code) => resolve(code));
    });
    died = exitCode.then((code) => {
      throw new Error(`the server exited (code ${code}) before exit was sent; stderr:\n${stderr.slice(-4000)}`);
    });
    died.catch(() => undefined); // only observed through request()
    exitCode.catch(() => undefined);
    connection = createMessageConnection(new StreamMessageReader(proc.stdout), new StreamMessageWriter(proc.stdin));
    connection.onRequest('window/workDoneProgress/create', () => null);
    connection.onRequest('client/registerCapability', () => null);
    connection.onRequest('workspace/configuration', (params: { items: unknown[] }) => params.items.map(() => null));
    connection.onNotification('$/progress', (params: unknown) => {
      progress.push(params);
    });
    connection.onNotification('window/showMessage', (params: ShowMessageParams) => {
      messages.push(params);
    });
    connection.onNotification('window/logMessage', () => undefined);
    connection.onNotification('$/pie/documentSynced', (params: { uri: string; version: number }) => {
      synced.push(params);
    });
    connection.listen();
  });

  after(() => {
    connection?.dispose();
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill();
    }
  });

  test('initialize with the extension settings (completion.maxTokens 16)', async () => {
    const initializationOptions = toServerConfig({ 'completion.maxTokens': 16 });
    assert.equal(initializationOptions.completion.maxTokens, 16);
    const params: InitializeParams = {
      processId: process.pid,
      clientInfo: { name: 'Visual Studio Code', version: '1.90.0' },
      locale: 'en',
      rootUri: null,
      workspaceFolders: null,
      capabilities: CAPABILITIES,
      initializationOptions,
    };
    const result = await request<InitializeResult>('initialize', params);
    const caps = result.capabilities;
    assert.ok(caps.positionEncoding === undefined || caps.positionEncoding === 'utf-16', `encoding ${caps.positionEncoding}`);
    const sync = caps.textDocumentSync;
    assert.equal(typeof sync === 'object' ? sync.change : sync, 2, 'incremental sync');
    assert.ok(caps.inlineCompletionProvider, 'inlineCompletionProvider');
    assert.ok(caps.executeCommandProvider?.commands.includes('pie.accept'), 'pie.accept command');
    await connection.sendNotification('initialized', {});
  });

  test('didOpen and an incremental didChange across emoji', async () => {
    const open: DidOpenTextDocumentParams = { textDocument: { uri: URI, languageId: 'python', version: 1, text: TEXT } };
    await connection.sendNotification('textDocument/didOpen', open);
    await waitFor(() => synced.some((s) => s.uri === URI && s.version === 1), 'documentSynced v1');

    const first = LINES[0] ?? '';
    const party = first.indexOf('🎉'); // a UTF-16 index, as VS Code sends
    const last = LINES.length - 1;
    const change: DidChangeTextDocumentParams = {
      textDocument: { uri: URI, version: 2 },
      contentChanges: [
        // Replace the whole surrogate pair 🎉 with 🍰.
        { range: { start: { line: 0, character: party }, end: { line: 0, character: party + 2 } }, text: '🍰' },
        // Type a function at the end, after the last line's emoji.
        {
          range: { start: { line: last, character: utf16(LINES[last] ?? '') }, end: { line: last, character: utf16(LINES[last] ?? '') } },
          text: TYPED,
        },
      ],
    };
    await connection.sendNotification('textDocument/didChange', change);
    await waitFor(() => synced.some((s) => s.uri === URI && s.version === 2), 'documentSynced v2');
    assert.deepEqual(
      messages.filter((m) => m.type <= 2),
      [],
      'no warnings or errors (settings and edits accepted)',
    );
  });

  const typedLines = TYPED.split('\n');
  const cursor: Position = { line: LINES.length - 1 + typedLines.length - 1, character: utf16(typedLines.at(-1) ?? '') };
  let accepted: InlineCompletionItem | undefined;

  test('an invoked inline completion at the cursor (loads the model)', { timeout: FIRST_COMPLETION_MS + 10_000 }, async () => {
    const params: InlineCompletionParams = { textDocument: { uri: URI }, position: cursor, context: { triggerKind: 1 } };
    const result = await request<InlineCompletionList | InlineCompletionItem[] | null>('textDocument/inlineCompletion', params, FIRST_COMPLETION_MS);
    const items = Array.isArray(result) ? result : (result?.items ?? []);
    assert.ok(items.length >= 1, `no items: ${JSON.stringify(result)}`);
    for (const item of items) {
      assert.equal(typeof item.insertText, 'string');
      assert.deepEqual(item.range, { start: cursor, end: cursor });
      assert.equal(item.command?.command, 'pie.accept');
      const arg = item.command?.arguments?.[0] as { id?: unknown } | undefined;
      assert.match(String(arg?.id), /^[0-9a-f]+$/);
    }
    accepted = items.find((item) => typeof item.insertText === 'string' && item.insertText.trim() !== '');
    assert.ok(accepted, `every item is empty: ${JSON.stringify(items)}`);
    assert.ok(progress.length > 0, 'model loading reported with $/progress');
  });

  test('accepting runs pie.accept, counted in pie/stats', async () => {
    assert.ok(accepted?.command, 'needs the completion');
    const { command, arguments: args } = accepted.command;
    const result = await request<{ counted: boolean; known: boolean }>('workspace/executeCommand', { command, arguments: args });
    assert.deepEqual(result, { counted: true, known: true });
    const stats = await request<Stats>('pie/stats', undefined);
    assert.equal(stats.totals.accepted, 1);
    assert.equal(stats.model.status, 'ready');
    assert.equal(stats.server.positionEncoding, 'utf-16');
    const doc = stats.documents.find((d) => d.uri === URI);
    assert.equal(doc?.version, 2);
    assert.equal(doc?.languageId, 'python');
  });

  test('a suggestions panel streams drafts under its token, the first the inline one', async () => {
    const params = panelParams(URI, cursor);
    const before = progress.length;
    const result = await request<PanelResult>(PANEL_REQUEST, params);
    assert.ok(result.items.length >= 1 && result.items.length <= 5, JSON.stringify(result));
    assert.equal(result.items[0]?.insertText, accepted?.insertText);
    for (const item of result.items) {
      assert.deepEqual(item.range, { start: cursor, end: cursor });
      assert.equal(typeof item.score, 'number');
      assert.equal(item.command?.command, 'pie.accept');
    }
    const partial = progress
      .slice(before)
      .filter((p): p is { token: string; value: PanelResult } => (p as { token?: unknown }).token === params.partialResultToken);
    const streamed = new Set(partial.flatMap((p) => p.value.items.map((i) => i.insertText)));
    assert.ok(result.items.every((i) => streamed.has(i.insertText)), 'every item came as a partial result first');
    const model = new PanelModel(URI, 'sample.py', cursor, typedLines.at(-1) ?? '');
    model.finish(result);
    assert.equal(model.refusal(0, typedLines.at(-1)), undefined);
  });

  test('bad positions are JSON-RPC errors, and the server goes on', async () => {
    const at = (position: Position): Promise<unknown> =>
      request('textDocument/inlineCompletion', { textDocument: { uri: URI }, position, context: { triggerKind: 1 } });
    const isInvalidParams = (err: unknown): boolean => err instanceof ResponseError && err.code === -32602;
    await assert.rejects(at({ line: 999, character: 0 }), isInvalidParams);
    // Between the two UTF-16 code units of 👋 on line 0.
    await assert.rejects(at({ line: 0, character: (LINES[0] ?? '').indexOf('👋') + 1 }), isInvalidParams);
    const stats = await request<Stats>('pie/stats', undefined);
    assert.equal(stats.model.status, 'ready');
    assert.equal(stats.totals.accepted, 1);
  });

  test('shutdown and exit: the process ends with code 0', async () => {
    assert.equal(await request('shutdown', undefined), null);
    await connection.sendNotification('exit');
    const code = await withTimeout(exitCode, REQUEST_MS, 'process exit');
    assert.equal(code, 0, `exit code; stderr:\n${stderr.slice(-2000)}`);
  });
});
