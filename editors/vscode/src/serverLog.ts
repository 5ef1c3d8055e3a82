/**
 * The server's stderr, line by line, at each line's own level (pure; no `vscode` import).
 *
 * pie-lsp logs `2026-01-02 03:04:05,678 LEVEL logger: message`; lines without that
 * prefix (tracebacks, third-party output) continue the previous line's level.
 */

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

export interface LogLine {
  level: LogLevel;
  text: string;
}

const PREFIX = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$/;
const LEVELS: Record<string, LogLevel> = {
  DEBUG: 'debug',
  INFO: 'info',
  WARNING: 'warn',
  ERROR: 'error',
  CRITICAL: 'error',
};

/** One stderr line; the log channel adds its own timestamp, so the server's is dropped. */
export function parseServerLine(line: string, previous: LogLevel = 'info'): LogLine {
  const match = PREFIX.exec(line);
  if (!match) {
    return { level: previous, text: line };
  }
  return { level: LEVELS[match[1] ?? ''] ?? 'info', text: match[2] ?? '' };
}
