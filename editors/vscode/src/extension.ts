import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import type { Readable } from 'node:stream';
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  LanguageClient,
  type LanguageClientOptions,
  ProgressType,
  type ServerOptions,
  State,
} from 'vscode-languageclient/node';
import { PANEL_REQUEST, PanelModel, panelParams, type PanelResult } from './panel';
import { parseServerLine, type LogLevel } from './serverLog';
import {
  RESTART_SECTIONS,
  documentSelector,
  resolveServerCommand,
  toLaunchSettings,
  toServerConfig,
  untrustedGetter,
  type ServerConfig,
  type SettingsGetter,
} from './settings';
import { RequestTimer, STATS_REQUEST, renderStatus, type Stats, type StatusState } from './status';

const SECTION = 'pie';
/** Settings the server takes; a change is sent with `workspace/didChangeConfiguration`. */
const SERVER_SECTIONS = ['model', 'device', 'dtype', 'quantize', 'trustRemoteCode', 'completion', 'cache'].map((s) => `${SECTION}.${s}`);
const DOCUMENT_SYNCED = '$/pie/documentSynced';
const POLL_MS = 1000;

let extension: PieExtension | undefined;

export function activate(context: vscode.ExtensionContext): void {
  extension = new PieExtension();
  context.subscriptions.push(extension);
  void extension.enqueue(() => extension?.start());
}

export async function deactivate(): Promise<void> {
  await extension?.stop();
  extension = undefined;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Server output into the log channel, at each line's level. */
function pipeServerOutput(input: Readable, channel: vscode.LogOutputChannel): void {
  let level: LogLevel = 'info';
  readline.createInterface({ input, crlfDelay: Infinity }).on('line', (raw: string) => {
    const line = parseServerLine(raw, level);
    level = line.level;
    channel[line.level](line.text);
  });
}

/** `pie.*` settings; in an untrusted workspace the restricted ones from user settings only. */
function settings(): SettingsGetter {
  const cfg = vscode.workspace.getConfiguration(SECTION);
  const get: SettingsGetter = (key) => cfg.get(key);
  return vscode.workspace.isTrusted ? get : untrustedGetter(get, (key) => cfg.inspect(key));
}

function serverConfig(): ServerConfig {
  return toServerConfig(settings());
}

class PieExtension implements vscode.Disposable {
  /** The language client's channel: its log and the server's stderr. Kept across restarts. */
  private readonly log = vscode.window.createOutputChannel('pie-lsp', { log: true });
  private readonly statsChannel = vscode.window.createOutputChannel('pie-lsp stats', 'json');
  private readonly item = vscode.window.createStatusBarItem('pie.status', vscode.StatusBarAlignment.Right, 100);
  private readonly timer = new RequestTimer(() => this.render());
  private readonly disposables: vscode.Disposable[] = [];
  private client: LanguageClient | undefined;
  private state: StatusState = { client: 'starting', busy: 0 };
  private pollTimer: NodeJS.Timeout | undefined;
  private pollGeneration = 0;
  /** Starts, stops and restarts run one at a time, in order. */
  private queue: Promise<void> = Promise.resolve();
  /** The suggestions panel (one at a time), what it shows and the editor it is for. */
  private panel: { view: vscode.WebviewPanel; model: PanelModel; editor: vscode.TextEditor } | undefined;

  constructor() {
    this.item.name = 'pie-lsp';
    this.item.command = 'pie.showStats';
    this.render();
    this.item.show();
    this.disposables.push(
      this.log,
      this.statsChannel,
      this.item,
      vscode.commands.registerCommand('pie.restartServer', () => this.enqueue(() => this.restart())),
      vscode.commands.registerCommand('pie.showStats', () => this.showStats()),
      vscode.commands.registerCommand('pie.openLog', () => this.log.show(true)),
      vscode.commands.registerCommand('pie.openPanel', () => this.openPanel()),
      vscode.workspace.onDidChangeConfiguration((e) => this.onConfigurationChanged(e)),
      vscode.workspace.onDidGrantWorkspaceTrust(() => this.enqueue(() => this.restart())),
    );
  }

  enqueue(task: () => Promise<void> | undefined): Promise<void> {
    this.queue = this.queue.then(task).catch((err: unknown) => this.log.error(message(err)));
    return this.queue;
  }

  async start(): Promise<void> {
    const cfg = vscode.workspace.getConfiguration(SECTION);
    const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file').map((f) => f.uri.fsPath);
    const server = resolveServerCommand(
      toLaunchSettings(settings()),
      // A workspace's own .venv is only run in a trusted workspace.
      { workspaceFolders: vscode.workspace.isTrusted ? folders : [], platform: process.platform, exists: fs.existsSync },
    );
    this.log.info(`starting ${[server.command, ...server.args].join(' ')} (from ${server.source})`);
    const serverOptions: ServerOptions = {
      command: server.command,
      args: server.args, // stdio; a `transport` here would add a --stdio the server rejects
      options: { cwd: folders[0] },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: documentSelector(cfg.get<string[]>('languages')),
      outputChannel: this.log,
      stdioOptions: { stdout: pipeServerOutput, stderr: pipeServerOutput },
      initializationOptions: serverConfig, // read again at each (re)start
      middleware: {
        provideInlineCompletionItems: (document, position, context, token, next) =>
          this.timer.time(() => next(document, position, context, token), () => token.isCancellationRequested),
        // The server also offers textDocument/completion, but VS Code asks for it while
        // typing alongside inline completions, and the server runs one completion per
        // document at a time: a list request would cancel the inline one. Inline only.
        provideCompletionItem: () => undefined,
      },
    };
    const client = new LanguageClient(SECTION, 'pie-lsp', serverOptions, clientOptions);
    client.onNotification(DOCUMENT_SYNCED, () => undefined);
    client.onDidChangeState(({ newState }) => {
      if (client !== this.client) {
        return;
      }
      if (newState === State.Running) {
        this.state = { ...this.state, client: 'running', problem: undefined };
        this.pollStats(client);
      } else {
        this.state = { ...this.state, client: newState === State.Starting ? 'starting' : 'stopped' };
      }
      this.render();
    });
    this.client = client;
    this.state = { client: 'starting', busy: 0 };
    this.render();
    try {
      await client.start();
    } catch (err) {
      this.state = { ...this.state, client: 'stopped', problem: message(err) };
      this.render();
      const hint = server.source === 'PATH' ? ' Set pie.server.path or pie.server.python.' : '';
      void vscode.window
        .showErrorMessage(`pie-lsp: could not start ${server.command}: ${message(err)}.${hint}`, 'Open Settings', 'Open Log')
        .then((choice) => {
          if (choice === 'Open Settings') {
            void vscode.commands.executeCommand('workbench.action.openSettings', 'pie.server');
          } else if (choice === 'Open Log') {
            this.log.show(true);
          }
        });
    }
  }

  async stop(): Promise<void> {
    this.stopPolling();
    const client = this.client;
    this.client = undefined;
    if (client) {
      try {
        await client.dispose();
      } catch (err) {
        this.log.warn(`stopping the client: ${message(err)}`);
      }
    }
  }

  private async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  private onConfigurationChanged(e: vscode.ConfigurationChangeEvent): void {
    if (RESTART_SECTIONS.some((s) => e.affectsConfiguration(s))) {
      void this.enqueue(() => this.restart());
      return;
    }
    const client = this.client;
    if (!SERVER_SECTIONS.some((s) => e.affectsConfiguration(s)) || !client?.isRunning()) {
      return;
    }
    void client
      .sendNotification(DidChangeConfigurationNotification.type, { settings: { [SECTION]: serverConfig() } })
      .then(() => this.pollStats(client)) // a model change reloads it
      .catch((err: unknown) => this.log.error(`didChangeConfiguration: ${message(err)}`));
  }

  /** Asks `pie/stats` every second until the model is ready or failed; a new call replaces the old. */
  private pollStats(client: LanguageClient): void {
    this.stopPolling();
    const generation = this.pollGeneration;
    const current = (): boolean => generation === this.pollGeneration && client === this.client && client.isRunning();
    const tick = async (): Promise<void> => {
      if (!current()) {
        return;
      }
      let again = true;
      try {
        const stats = await client.sendRequest<Stats>(STATS_REQUEST);
        this.state = { ...this.state, stats, problem: undefined };
        again = stats.model.status === 'loading';
      } catch (err) {
        this.state = { ...this.state, problem: message(err) };
      }
      if (!current()) {
        return;
      }
      this.render();
      if (again) {
        this.pollTimer = setTimeout(() => void tick(), POLL_MS);
      }
    };
    void tick();
  }

  private stopPolling(): void {
    this.pollGeneration++;
    clearTimeout(this.pollTimer);
    this.pollTimer = undefined;
  }

  private async showStats(): Promise<void> {
    const client = this.client;
    if (!client?.isRunning()) {
      const choice = await vscode.window.showWarningMessage('pie-lsp: the server is not running.', 'Restart Server', 'Open Log');
      if (choice === 'Restart Server') {
        await this.enqueue(() => this.restart());
      } else if (choice === 'Open Log') {
        this.log.show(true);
      }
      return;
    }
    try {
      const stats = await client.sendRequest<Stats>(STATS_REQUEST);
      this.state = { ...this.state, stats };
      this.render();
      this.statsChannel.replace(`${JSON.stringify(stats, null, 2)}\n`);
      this.statsChannel.show(true);
    } catch (err) {
      void vscode.window.showErrorMessage(`pie-lsp: pie/stats failed: ${message(err)}`);
    }
  }

  /** `pie: Open Completions Panel`: drafts for the cursor, streamed into a webview beside the editor. */
  private async openPanel(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const client = this.client;
    if (!editor || !client?.isRunning()) {
      void vscode.window.showWarningMessage('pie-lsp: the panel needs a running server and a file it serves.');
      return;
    }
    const doc = editor.document;
    const at = editor.selection.active;
    const model = new PanelModel(
      client.code2ProtocolConverter.asUri(doc.uri),
      path.basename(doc.fileName),
      { line: at.line, character: at.character },
      doc.lineAt(at.line).text,
    );
    const view = this.panel?.view ?? this.createPanelView();
    this.panel = { view, model, editor };
    this.renderPanel();
    const params = panelParams(model.uri, model.position);
    const partial = client.onProgress(new ProgressType<PanelResult>(), params.partialResultToken, (value) => {
      model.addPartial(value.items);
      this.renderPanel(model);
    });
    try {
      model.finish(await client.sendRequest<PanelResult>(PANEL_REQUEST, params));
    } catch (err) {
      model.fail(message(err));
    } finally {
      partial.dispose();
    }
    this.renderPanel(model);
  }

  private createPanelView(): vscode.WebviewPanel {
    const view = vscode.window.createWebviewPanel(
      'pie.panel',
      'pie suggestions',
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
      { enableScripts: true },
    );
    view.webview.onDidReceiveMessage((msg: { accept?: number }) => {
      if (typeof msg.accept === 'number') {
        void this.acceptDraft(msg.accept);
      }
    });
    view.onDidDispose(() => {
      this.panel = undefined;
    });
    return view;
  }

  /** Redraw the panel (only if it still shows `model`, when given). */
  private renderPanel(model?: PanelModel): void {
    const panel = this.panel;
    if (panel && (!model || panel.model === model)) {
      panel.view.webview.html = panel.model.html(crypto.randomBytes(16).toString('base64'));
    }
  }

  /** Insert draft `index` at the panel's position (refused if that line changed), then close the panel. */
  private async acceptDraft(index: number): Promise<void> {
    const panel = this.panel;
    if (!panel) {
      return;
    }
    const { model, editor } = panel;
    const doc = editor.document;
    const line = model.position.line < doc.lineCount ? doc.lineAt(model.position.line).text : undefined;
    const refusal = doc.isClosed ? 'the file was closed' : model.refusal(index, line);
    if (refusal) {
      void vscode.window.showWarningMessage(`pie-lsp: ${refusal}`);
      return;
    }
    const item = model.items[index];
    if (!item) {
      return;
    }
    const where = new vscode.Position(model.position.line, model.position.character);
    const target = await vscode.window.showTextDocument(doc, editor.viewColumn);
    if (!(await target.edit((b) => b.insert(where, item.insertText)))) {
      void vscode.window.showWarningMessage('pie-lsp: the draft could not be inserted');
      return;
    }
    if (item.command) {
      void vscode.commands.executeCommand(item.command.command, ...(item.command.arguments ?? []));
    }
    panel.view.dispose();
  }

  private render(): void {
    const view = renderStatus({ ...this.state, busy: this.timer.busy, lastLatencyMs: this.timer.lastLatencyMs });
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  }

  dispose(): void {
    this.stopPolling();
    this.panel?.view.dispose();
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}
