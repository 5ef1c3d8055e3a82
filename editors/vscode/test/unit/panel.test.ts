import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PanelModel, escapeHtml, panelParams, type PanelItem } from '../../src/panel';

function item(text: string, score = -0.5, syntaxValid: boolean | null = true): PanelItem {
  const at = { line: 3, character: 8 };
  return { insertText: text, range: { start: at, end: at }, score, syntaxValid, command: { title: 't', command: 'pie.accept', arguments: [{ id: text }] } };
}

function model(): PanelModel {
  return new PanelModel('file:///a.py', 'a.py', { line: 3, character: 8 }, '    if ');
}

describe('panelParams', () => {
  test('a fresh partial-result token each time, count only when given', () => {
    const a = panelParams('file:///a.py', { line: 1, character: 2 });
    const b = panelParams('file:///a.py', { line: 1, character: 2 }, 3);
    assert.notEqual(a.partialResultToken, b.partialResultToken);
    assert.deepEqual(a.textDocument, { uri: 'file:///a.py' });
    assert.equal('count' in a, false);
    assert.equal(b.count, 3);
  });
});

describe('PanelModel', () => {
  test('drafts stream in, then the final ranked list replaces them', () => {
    const m = model();
    m.addPartial([item('b')]);
    m.addPartial([item('a')]);
    assert.deepEqual(m.items.map((i) => i.insertText), ['b', 'a']);
    assert.match(m.html('n'), /synthesizing&hellip; 2 so far/);
    m.finish({ items: [item('a'), item('b')] });
    assert.deepEqual(m.items.map((i) => i.insertText), ['a', 'b']);
    m.addPartial([item('late')]); // after the answer: ignored
    assert.equal(m.items.length, 2);
    assert.match(m.html('n'), /2 drafts for a\.py:4/);
  });

  test('a draft may be inserted only while its line is unchanged', () => {
    const m = model();
    m.finish({ items: [item('x > 0:')] });
    assert.equal(m.refusal(0, '    if '), undefined);
    assert.match(m.refusal(0, '    iff ') ?? '', /line 4 changed/);
    assert.match(m.refusal(0, undefined) ?? '', /changed/);
    assert.equal(m.refusal(1, '    if '), 'no such draft');
  });

  test('the page numbers drafts, marks syntax errors, escapes text, and has a button each', () => {
    const m = model();
    m.finish({ items: [item('a < b && "c"', -0.25), item('(oops', -1.5, false)] });
    const page = m.html('abc');
    assert.match(page, /<h3>1 <small>score -0\.25<\/small> <button data-index="0">Accept<\/button>/);
    assert.match(page, /<h3>2 <small>score -1\.50<\/small> <span class="bad">syntax error<\/span>/);
    assert.match(page, /a &lt; b &amp;&amp; &quot;c&quot;/);
    assert.match(page, /script-src 'nonce-abc'/);
    assert.equal(escapeHtml('<x>'), '&lt;x&gt;');
  });

  test('an empty answer and a failure say so', () => {
    const empty = model();
    empty.finish({ items: [] });
    assert.match(empty.html('n'), /No suggestion here/);
    const failed = model();
    failed.fail('boom <b>');
    assert.match(failed.html('n'), /failed: boom &lt;b&gt;/);
  });
});
