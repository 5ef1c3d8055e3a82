/**
 * The suggestions panel's model, free of the VS Code API (unit-tested with node --test):
 * the `pie/panelCompletion` request, drafts as they stream in and as finally ranked,
 * the page the webview shows, and whether a draft may still be inserted.
 */

export const PANEL_REQUEST = 'pie/panelCompletion';

export interface PanelPosition {
  line: number;
  character: number;
}

/** One item of the server's answer (see the server's lsp_server/panel.py). */
export interface PanelItem {
  insertText: string;
  range: { start: PanelPosition; end: PanelPosition };
  score: number;
  syntaxValid: boolean | null;
  command?: { title: string; command: string; arguments?: unknown[] };
}

export interface PanelResult {
  items: PanelItem[];
}

export interface PanelParams {
  textDocument: { uri: string };
  position: PanelPosition;
  count?: number;
  partialResultToken: string;
}

let sequence = 0;

/** Parameters for a panel request at `position`, with a fresh partial-result token. */
export function panelParams(uri: string, position: PanelPosition, count?: number): PanelParams {
  sequence += 1;
  const params: PanelParams = { textDocument: { uri }, position, partialResultToken: `pie-panel-${sequence}` };
  if (count !== undefined) {
    params.count = count;
  }
  return params;
}

/** What one panel shows: the position it is for, the line there, and the drafts. */
export class PanelModel {
  readonly items: PanelItem[] = [];
  done = false;
  error: string | undefined;

  constructor(
    readonly uri: string,
    readonly fileName: string,
    readonly position: PanelPosition,
    /** The text of the position's line when the panel was opened. */
    readonly lineText: string,
  ) {}

  /** Drafts sent as partial results (shown in the order they came). */
  addPartial(items: PanelItem[]): void {
    if (!this.done) {
      this.items.push(...items);
    }
  }

  /** The final answer: every draft, ranked (it replaces what streamed in). */
  finish(result: PanelResult | null | undefined): void {
    this.done = true;
    this.items.splice(0, this.items.length, ...(result?.items ?? []));
  }

  fail(message: string): void {
    this.done = true;
    this.error = message;
  }

  /** Why draft `index` cannot be inserted now (undefined: it can). */
  refusal(index: number, currentLineText: string | undefined): string | undefined {
    if (!this.items[index]) {
      return 'no such draft';
    }
    if (currentLineText !== this.lineText) {
      return `line ${this.position.line + 1} changed since the panel opened; refresh it`;
    }
    return undefined;
  }

  /** The webview's page: a header, then each draft numbered with its score and an Accept button. */
  html(nonce: string): string {
    const status = this.error
      ? `failed: ${escapeHtml(this.error)}`
      : this.done
        ? `${this.items.length} drafts`
        : `synthesizing&hellip; ${this.items.length} so far`;
    const drafts = this.items
      .map((item, i) => {
        const mark = item.syntaxValid === false ? ' <span class="bad">syntax error</span>' : '';
        return (
          `<section><h3>${i + 1} <small>score ${item.score.toFixed(2)}</small>${mark} ` +
          `<button data-index="${i}">Accept</button></h3><pre>${escapeHtml(item.insertText)}</pre></section>`
        );
      })
      .join('\n');
    const empty = this.done && !this.error && this.items.length === 0 ? '<p>No suggestion here.</p>' : '';
    return `<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-${nonce}';">
<style>
body { font-family: var(--vscode-font-family); }
pre { font-family: var(--vscode-editor-font-family); background: var(--vscode-textCodeBlock-background); padding: 6px; white-space: pre-wrap; }
.bad { color: var(--vscode-errorForeground); }
small { opacity: 0.7; }
</style></head>
<body>
<p>pie: ${status} for ${escapeHtml(this.fileName)}:${this.position.line + 1} (duplicates hidden)</p>
${drafts}${empty}
<script nonce="${nonce}">
const vscode = acquireVsCodeApi();
document.querySelectorAll('button[data-index]').forEach((b) =>
  b.addEventListener('click', () => vscode.postMessage({ accept: Number(b.dataset.index) })));
</script>
</body></html>`;
  }
}

export function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
