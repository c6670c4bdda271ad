#!/usr/bin/env node
// Offline checks for assets/study/page.html (the remote rating page of `flowlens study export-html`).
// Node only, no npm packages:  node tools/study/check_page.mjs [path/to/page.html]
// 1. static checks: CSP meta, placeholder line, no network references;
// 2. the page script's pure functions in a `vm` context without a DOM (crc32, buildRatingsFile, ...);
// 3. the DOM wiring against a small fake DOM: start screen, rating, undo, downloads, resume, cache.
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import zlib from 'node:zlib';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const pagePath = process.argv[2] || path.join(here, '..', '..', 'assets', 'study', 'page.html');
const html = fs.readFileSync(pagePath, 'utf8');

const CSP = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">`;
const PLACEHOLDER = '__FLOWLENS_STUDY_DATA__';
const DATA_LINE = `<script type="application/json" id="study-data">${PLACEHOLDER}</script>`;
const count = (s, sub) => s.split(sub).length - 1;
let checks = 0;
const ok = (cond, msg) => { assert.ok(cond, msg); checks++; };
const plain = (v) => (v === undefined ? v : JSON.parse(JSON.stringify(v))); // values from a vm context have other prototypes
const eq = (a, b, msg) => { assert.deepStrictEqual(plain(a), plain(b), msg); checks++; };

// ---------------------------------------------------------------- 1. static checks
const head = html.slice(0, html.indexOf('</head>'));
ok(html.indexOf('</head>') > 0, 'has </head>');
eq(count(html, CSP), 1, 'CSP meta exactly once');
ok(head.includes(CSP), 'CSP meta inside <head>');
ok(head.includes('<meta charset="utf-8">'), 'charset meta in <head>');
ok(/<meta name="viewport" content="[^"]+">/.test(head), 'viewport meta in <head>');
ok(head.indexOf('<meta charset="utf-8">') < head.indexOf(CSP), 'charset meta comes first');
eq(count(html, PLACEHOLDER), 1, 'placeholder exactly once in the file');
eq(html.split('\n').filter((l) => l === DATA_LINE).length, 1, 'placeholder line exactly once, on its own line');
ok(!/https?:/i.test(html), 'no http: or https: anywhere');
ok(!html.includes('//'), 'no // anywhere (no protocol-relative URL, no // comment)');
ok(!/@import/i.test(html), 'no @import');
const css = [...html.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => m[1]).join('');
ok(css.length > 0 && !/url\s*\(|image-set|src\s*:/i.test(css), 'no url() in the CSS');
ok(!/style="[^"]*url\s*\(/i.test(html), 'no url() in style attributes');
ok(!/<(link|iframe|object|embed|base|form|audio|video|source)\b/i.test(html), 'no element that loads resources');
ok(!/javascript:/i.test(html), 'no javascript: URL');
const scripts = [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
eq(scripts.length, 2, 'exactly two <script> elements');
eq(scripts[0][1], ' type="application/json" id="study-data"', 'first script is the data element');
eq(scripts[1][1], '', 'second script is a plain inline script (no src)');
const code = scripts[1][2];
const markup = html.replace(/<script[^>]*>[\s\S]*?<\/script>/g, '').replace(/<style>[\s\S]*?<\/style>/g, '');
ok(!/\s(src|href|action|srcset|poster|data)\s*=/i.test(markup), 'no src/href/... attribute in the markup');
ok(!/\b(fetch|XMLHttpRequest|WebSocket|EventSource|sendBeacon|importScripts|eval|postMessage)\b|\.open\s*\(/.test(code), 'no network, window.open or eval API in the script');
ok(!/new\s+Function|innerHTML|outerHTML|insertAdjacentHTML|document\.write/.test(code), 'no HTML injection sinks');
ok(/alt="Left image"/.test(html) && /alt="Right image"/.test(html), 'image alt texts');
const lines = html.split('\n').length;

// ---------------------------------------------------------------- 2. pure functions without a DOM
function loadBare(extra = {}) {
  const ctx = vm.createContext({ ...extra });
  vm.runInContext(code, ctx, { filename: 'page.html<script>' });
  return ctx;
}
const bare = loadBare(); // no document, no window, no TextEncoder
const listeners = [];
const stubbed = loadBare({ TextEncoder, window: {}, navigator: { userAgent: 'x' },
  document: { readyState: 'loading', addEventListener: (t, f) => listeners.push([t, f]),
    getElementById: () => { throw new Error('init ran before DOMContentLoaded'); } } });
eq(listeners.map((l) => l[0]), ['DOMContentLoaded'], 'init is registered for DOMContentLoaded only');
ok(listeners[0][1] === stubbed.init, 'the listener is init()');

for (const P of [bare, stubbed]) {
  eq(P.crc32('123456789'), 'cbf43926', 'crc32 check value');
  eq(P.crc32(''), '00000000', 'crc32 of empty');
  for (const s of ['a', 'Grüße, 東京 🌸 "q" \\ \n', 'x'.repeat(1000) + 'é', '\u{10FFFF}\u0000\u007f\u0080\u07ff\u0800\uffff']) {
    eq(P.crc32(s), zlib.crc32(Buffer.from(s, 'utf8')).toString(16).padStart(8, '0'), 'crc32 == zlib.crc32 on UTF-8');
  }
  eq(P.crc32('\ud800x'), P.crc32('\ufffdx'), 'lone surrogate encodes as U+FFFD (as TextEncoder)');
}

const judgment = (seq, choice, shown, rt, item, kind = 'main', criterion = 'aesthetics') => ({
  seq, item, kind, left: 'a1b2c3d4e5f60718', right: '0f1e2d3c4b5a6978', criterion, choice,
  shown_at: shown, answered_at: shown + rt, rt_ms: rt });
const sample = {
  study_id: 'demo-study', manifest_sha256: 'ab'.repeat(32), page_sha256: 'cd'.repeat(32), rater: 'K7QF',
  client: 'html', user_agent: 'Mozilla/5.0 (X11; Linux x86_64) "test"', viewport: [1280, 800], complete: false,
  judgments: [judgment(0, 'left', 1700000000000, 2345, 'it-0001'),
    judgment(1, 'tie', 1700000003000, 1500, 'it-0002', 'gold', 'prompt_following'),
    judgment(1, 'right', 1700000006000, 1200, 'it-0002', 'gold', 'prompt_following')],
};
const EXPECTED = fs.readFileSync(path.join(here, 'sample.flowlens-ratings.json'), 'utf8');
for (const P of [bare, stubbed]) {
  const text = P.buildRatingsFile(sample);
  eq(text, EXPECTED, 'buildRatingsFile(sample) equals tools/study/sample.flowlens-ratings.json byte for byte');
  const outer = JSON.parse(text);
  eq(Object.keys(outer), ['format', 'payload', 'crc32'], 'outer key order');
  eq(outer.payload, JSON.stringify(sample), 'payload is JSON.stringify of the payload object');
  eq(outer.crc32, zlib.crc32(Buffer.from(outer.payload, 'utf8')).toString(16).padStart(8, '0'), 'crc over payload bytes');
  const scrambled = { judgments: sample.judgments.map((j) => Object.fromEntries(Object.entries(j).reverse())),
    ...Object.fromEntries(Object.entries(sample).reverse().filter(([k]) => k !== 'judgments')), extra: 1 };
  eq(P.buildRatingsFile(scrambled), EXPECTED, 'key order is canonical whatever the input order');
  eq(JSON.stringify(P.parseRatingsFile(text)), JSON.stringify(sample), 'parse(build(x)) == x');
  eq(JSON.stringify(P.parseRatingsFile('\ufeff' + JSON.stringify(outer, null, 2))), JSON.stringify(sample), 'BOM and re-indented outer JSON accepted');
  const throws = (f, re, msg) => { assert.throws(f, (e) => Object.prototype.toString.call(e) === '[object Error]' && re.test(e.message), msg); checks++; };
  throws(() => P.buildRatingsFile({ ...sample, viewport: [1280.5, 800] }), /viewport/, 'float viewport refused');
  throws(() => P.buildRatingsFile({ ...sample, judgments: [{ ...sample.judgments[0], rt_ms: 1 }] }), /rt_ms/, 'rt_ms mismatch refused');
  throws(() => P.buildRatingsFile({ ...sample, judgments: [{ ...sample.judgments[0], shown_at: 1.5, rt_ms: 0 }] }), /integer/, 'float time refused');
  throws(() => P.buildRatingsFile({ ...sample, judgments: [{ ...sample.judgments[0], choice: 'up' }] }), /choice/, 'unknown choice refused');
  throws(() => P.buildRatingsFile({ ...sample, complete: 'yes' }), /complete/, 'non-boolean complete refused');
  throws(() => P.parseRatingsFile(text.replace('K7QF', 'K7QG')), /checksum mismatch/, 'edited payload refused');
  throws(() => P.parseRatingsFile(text.slice(0, -10)), /not valid JSON/, 'truncated file refused');
  throws(() => P.parseRatingsFile(text.replace(outer.crc32, outer.crc32.toUpperCase())), /checksum/, 'upper-case crc refused');
  throws(() => P.parseRatingsFile(text.replace('flowlens-ratings/1', 'flowlens-ratings/2')), /not a flowlens ratings file/, 'wrong format refused');
  throws(() => P.parseRatingsFile('{}'), /not a flowlens ratings file/, 'empty object refused');
  eq(P.fileName('demo-study', 'K7QF', new Date(Date.UTC(2024, 0, 2, 3, 4, 5))), 'demo-study-K7QF-20240102T030405Z.flowlens-ratings.json', 'fileName');
  eq(P.fileName('a b/c', 'k:1', new Date(Date.UTC(2030, 11, 31, 23, 59, 59))), 'a_b_c-k_1-20301231T235959Z.flowlens-ratings.json', 'fileName sanitises');
  const raters = [{ code: 'K7QF' }, { code: 'ab12' }];
  eq(P.findRater(raters, '  k7qf ')?.code, 'K7QF', 'rater code: trimmed, case-insensitive');
  eq(P.findRater(raters, 'AB12')?.code, 'ab12', 'rater code: case-insensitive the other way');
  eq(P.findRater(raters, 'K7Q'), null, 'unknown code');
  eq(P.findRater(raters, '   '), null, 'empty code');
  eq([...P.paragraphs('One\nline two\n\n  Two \r\n\r\nThree\n\n\n')], ['One\nline two', 'Two', 'Three'], 'paragraphs');
  const items = [0, 1, 2, 3].map((seq) => ({ seq }));
  eq(P.nextOpen(items, [], {}, -1), 0, 'nextOpen: start');
  eq(P.nextOpen(items, [{ seq: 0 }, { seq: 1 }], {}, -1), 2, 'nextOpen: first unanswered');
  eq(P.nextOpen(items, [{ seq: 0 }, { seq: 1 }, { seq: 2 }], { 1: true }, 0), 1, 'nextOpen: undone item is open');
  eq(P.nextOpen(items, [{ seq: 0 }, { seq: 2 }, { seq: 3 }], {}, 3), 1, 'nextOpen: wraps');
  eq(P.nextOpen(items, items, {}, 3), -1, 'nextOpen: all done');
  throws(() => P.loadStudyData(PLACEHOLDER), /no study data/, 'unsubstituted page detected');
  throws(() => P.loadStudyData('{"format":"x"}'), /Unsupported/, 'wrong page format detected');
}

// ---------------------------------------------------------------- 3. the DOM wiring, with a fake DOM
const escapeForScript = (json) => json.replace(/<\//g, '<\\/'); // what the Rust exporter does
const item = (seq, kind, criterion, left, right) => ({ seq, item: `it-${seq}`, kind, prompt: `a red cube </script><b>${seq}</b>`, left, right, criterion });
const studyData = (raters, extra = {}) => ({
  format: 'flowlens-study-page/1', study_id: 'demo-study', manifest_sha256: 'ab'.repeat(32), page_sha256: 'cd'.repeat(32),
  title: 'Which picture is better?', instructions: 'Para one.\n\nPara two\nsame para.', consent: 'You agree.',
  responses: ['left', 'right', 'tie'], min_view_ms: 40,
  criteria: { aesthetics: { question: 'Which looks better?', show_prompt: false }, prompt_following: { question: 'Which matches the text?', show_prompt: true } },
  raters, images: { i1: 'data:image/png;base64,AAAA', i2: 'data:image/png;base64,BBBB', i3: 'data:image/png;base64,CCCC' },
  completion_code: 'C0DE-42', ...extra });
const itemsA = [item(0, 'main', 'aesthetics', 'i1', 'i2'), item(1, 'main', 'prompt_following', 'i2', 'i3'),
  item(3, 'repeat', 'aesthetics', 'i2', 'i1'), item(2, 'gold', 'aesthetics', 'i1', 'i3')];
const twoRaters = studyData([{ code: 'K7QF', items: itemsA }, { code: 'ZZ9X', items: itemsA.slice(0, 2) }]);
const ids = [...markup.matchAll(/<(\w+)[^>]*\sid="([^"]+)"[^>]*>/g)];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class El {
  constructor(tag, id = '', hidden = false, cls = '') {
    Object.assign(this, { tagName: tag.toUpperCase(), id, hidden, disabled: false, value: '', checked: false,
      style: {}, children: [], listeners: {}, attrs: {}, _text: '', complete: false, files: null, onload: null, onerror: null });
    const set = new Set(cls.split(/\s+/).filter(Boolean));
    this.classList = { add: (c) => set.add(c), remove: (c) => set.delete(c), contains: (c) => set.has(c) };
  }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(''); }
  set textContent(t) { this._text = String(t); this.children = []; }
  addEventListener(t, f) { (this.listeners[t] ||= []).push(f); }
  dispatch(t, ev = {}) { for (const f of this.listeners[t] || []) f.call(this, ev); }
  click() { if (!this.disabled) { this.dispatch('click', {}); if (this.onclickHook) this.onclickHook(); } }
  appendChild(c) { this.children.push(c); return c; }
  removeChild(c) { this.children = this.children.filter((x) => x !== c); }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  getAttribute(k) { return k in this.attrs ? this.attrs[k] : null; }
  removeAttribute(k) { delete this.attrs[k]; this.complete = true; }
  get src() { return this.attrs.src || ''; }
  set src(v) { this.attrs.src = v; this.complete = false; setTimeout(() => { this.complete = true; this.onload && this.onload(); }, 2); }
}

function makePage(data, storage = new Map()) {
  const els = new Map();
  for (const [tagText, tag, id] of ids) {
    els.set(id, new El(tag, id, /\shidden[\s>]/.test(tagText), (tagText.match(/class="([^"]*)"/) || [])[1] || ''));
  }
  els.set('study-data', new El('script', 'study-data'));
  els.get('study-data')._text = typeof data === 'string' ? data : escapeForScript(JSON.stringify(data));
  const downloads = [];
  const docListeners = {};
  const body = new El('body');
  const document = {
    readyState: 'loading', title: '', body,
    getElementById: (id) => { if (!els.has(id)) throw new Error(`page script asked for unknown id "${id}"`); return els.get(id); },
    createElement: (tag) => {
      const e = new El(tag);
      if (tag === 'a') e.onclickHook = () => downloads.push({ name: e.download, text: blobs.get(e.href) });
      return e;
    },
    addEventListener: (t, f) => { (docListeners[t] ||= []).push(f); },
  };
  const blobs = new Map();
  class Blob { constructor(parts) { this.text = parts.join(''); } }
  const URL = { createObjectURL: (b) => { const u = `blob:${blobs.size}`; blobs.set(u, b.text); return u; }, revokeObjectURL: () => {} };
  class FileReader { readAsText(f) { setTimeout(() => { this.result = f.text; this.onload(); }, 1); } }
  const localStorage = { getItem: (k) => (storage.has(k) ? storage.get(k) : null), setItem: (k, v) => storage.set(k, String(v)) };
  const window = { innerWidth: 1280, innerHeight: 800, localStorage, addEventListener: () => {} };
  const ctx = vm.createContext({ document, window, navigator: { userAgent: 'FakeBrowser/1.0' }, Blob, URL, FileReader,
    TextEncoder, setTimeout, clearTimeout, console });
  vm.runInContext(code, ctx);
  docListeners.DOMContentLoaded.forEach((f) => f());
  const $ = (id) => els.get(id);
  const key = (k) => docListeners.keydown.forEach((f) => f({ key: k, target: body, preventDefault() {}, repeat: false }));
  const visible = () => ['error', 'start', 'item', 'end'].filter((s) => !$('screen-' + s).hidden);
  const choice = (label) => $('choices').children.find((b) => b.textContent === label);
  return { $, key, visible, choice, downloads, storage, P: ctx };
}
const waitEnabled = async (pg) => { for (let i = 0; i < 100 && pg.$('pick-left').disabled; i++) await sleep(5); ok(!pg.$('pick-left').disabled, 'buttons enable'); };

// 3a. full run with two raters, undo and downloads
let pg = makePage(twoRaters);
eq(pg.visible(), ['start'], 'start screen first');
eq(pg.$('title').textContent, 'Which picture is better?', 'title');
eq(pg.$('instructions').children.map((c) => c.textContent), ['Para one.', 'Para two\nsame para.'], 'instruction paragraphs');
ok(!pg.$('code-row').hidden, 'code input shown for several raters');
pg.$('start').click();
ok(/agree/.test(pg.$('start-err').textContent), 'consent required');
pg.$('consent-box').checked = true;
pg.$('code').value = 'K7QX';
pg.$('start').click();
ok(/Unknown rater code "K7QX"/.test(pg.$('start-err').textContent), 'unknown code error');
pg.$('code').value = '  k7qf ';
pg.$('start').click();
eq(pg.visible(), ['item'], 'item screen');
eq(pg.$('progress-text').textContent, '1 / 4', 'progress text');
eq(pg.$('question').textContent, 'Which looks better?', 'question');
ok(pg.$('prompt').hidden, 'prompt hidden for aesthetics');
eq(pg.$('choices').children.map((b) => b.textContent), ['1 Left', '2 Right', '3 Tie'], 'choice buttons');
ok(pg.$('pick-left').disabled && pg.choice('1 Left').disabled, 'disabled during minimum viewing time');
pg.key('1');
await sleep(20);
pg.key('1');
ok(pg.$('pick-left').disabled, 'still disabled before min_view_ms');
await waitEnabled(pg);
pg.key('1');
eq(pg.$('progress-text').textContent, '2 / 4', 'advanced');
ok(!pg.$('prompt').hidden && pg.$('prompt').textContent === 'a red cube </script><b>1</b>', 'prompt shown as text, </ unescaped');
await waitEnabled(pg);
pg.$('pick-right').click();
eq(pg.$('progress-text').textContent, '3 / 4', 'image click answers');
pg.key('u');
eq(pg.$('progress-text').textContent, '2 / 4', 'undo goes back');
await waitEnabled(pg);
pg.choice('3 Tie').click();
eq(pg.$('progress-text').textContent, '3 / 4', 'continues after re-answer');
pg.$('dl-progress').click();
eq(pg.downloads.length, 1, 'progress download');
ok(/^demo-study-K7QF-\d{8}T\d{6}Z\.flowlens-ratings\.json$/.test(pg.downloads[0].name), 'download file name');
const progress = pg.downloads[0].text;
let p = pg.P.parseRatingsFile(progress);
eq(p.complete, false, 'progress not complete');
eq(p.judgments.map((j) => [j.seq, j.choice]), [[0, 'left'], [1, 'right'], [1, 'tie']], 'judgments in answer order, undo kept');
ok(p.judgments.every((j) => j.rt_ms >= 40 && j.rt_ms === j.answered_at - j.shown_at), 'rt_ms >= min_view_ms');
eq([p.client, p.user_agent, p.viewport, p.rater], ['html', 'FakeBrowser/1.0', [1280, 800], 'K7QF'], 'payload header');
await waitEnabled(pg); pg.key('2');
eq(pg.$('progress-text').textContent, '4 / 4', 'last item');
await waitEnabled(pg); pg.key('3');
eq(pg.visible(), ['end'], 'end screen');
eq(pg.$('completion').textContent, 'C0DE-42', 'completion code shown');
pg.$('dl-results').click();
p = pg.P.parseRatingsFile(pg.downloads[1].text);
eq(p.complete, true, 'complete');
eq(p.judgments.map((j) => [j.seq, j.kind, j.choice]), [[0, 'main', 'left'], [1, 'main', 'right'], [1, 'main', 'tie'], [2, 'gold', 'right'], [3, 'repeat', 'tie']], 'final judgments');
eq(pg.$('results-text').value, pg.downloads[1].text, 'results text equals the downloaded file');
pg.$('end-undo').click();
eq([pg.visible()[0], pg.$('progress-text').textContent], ['item', '4 / 4'], 'undo from the end screen re-asks the last item');

// 3b. resume from the progress file on a fresh page (code filled from the file)
pg = makePage(twoRaters);
pg.$('consent-box').checked = true;
pg.$('resume').files = [{ text: progress.replace('K7QF', 'K7QG') }];
pg.$('resume').dispatch('change');
await sleep(10);
ok(/checksum mismatch/.test(pg.$('start-err').textContent), 'tampered resume file refused');
pg.$('resume').files = [{ text: progress }];
pg.$('resume').dispatch('change');
await sleep(10);
ok(/2 of 4 items answered/.test(pg.$('start-msg').textContent), 'resume message');
eq(pg.$('code').value, 'K7QF', 'code filled from the file');
pg.$('start').click();
eq(pg.$('progress-text').textContent, '3 / 4', 'continues at first unanswered seq');
await waitEnabled(pg); pg.key('1');
await waitEnabled(pg); pg.key('2');
pg.$('dl-results').click();
p = pg.P.parseRatingsFile(pg.downloads[0].text);
eq(p.judgments.map((j) => j.seq), [0, 1, 1, 2, 3], 'restored judgments kept, new ones appended');
eq(p.complete, true, 'resumed run complete');

// 3c. resume file for another study or rater; localStorage cache
pg = makePage({ ...twoRaters, study_id: 'other' });
pg.$('resume').files = [{ text: progress }];
pg.$('resume').dispatch('change');
await sleep(10);
ok(/another study/.test(pg.$('start-err').textContent), 'other study refused');
pg = makePage(twoRaters);
pg.$('consent-box').checked = true;
pg.$('code').value = 'ZZ9X';
pg.$('resume').files = [{ text: progress }];
pg.$('resume').dispatch('change');
await sleep(10);
pg.$('start').click();
ok(/belongs to rater code "K7QF"/.test(pg.$('start-err').textContent), 'resume file of another rater refused');
const storage = new Map([[`flowlens-ratings:demo-study:K7QF`, progress]]);
pg = makePage(twoRaters, storage);
pg.$('consent-box').checked = true;
pg.$('code').value = 'K7QF';
pg.$('start').click();
ok(!pg.$('cache-box').hidden && /2 of 4 items answered/.test(pg.$('cache-text').textContent), 'cached progress offered (distinct items)');
pg.$('cache-yes').click();
eq(pg.$('progress-text').textContent, '3 / 4', 'cache restores');
await waitEnabled(pg); pg.key('1');
eq(pg.P.parseRatingsFile(storage.get('flowlens-ratings:demo-study:K7QF')).judgments.length, 4, 'cache updated after each answer');

// 3d. one rater: no code input; both_bad; unsubstituted page
pg = makePage(studyData([{ code: 'SOLO', items: itemsA.slice(0, 1) }], { consent: '', responses: ['left', 'right', 'tie', 'both_bad'], completion_code: '' }));
ok(pg.$('code-row').hidden && pg.$('consent-block').hidden, 'no code input and no consent box');
pg.$('start').click();
eq(pg.$('choices').children.map((b) => b.textContent), ['1 Left', '2 Right', '3 Tie', '4 Both bad'], 'both bad offered');
await waitEnabled(pg); pg.key('4');
eq(pg.visible(), ['end'], 'single item done');
ok(pg.$('completion-row').hidden, 'no completion code row when empty');
p = pg.P.parseRatingsFile(pg.$('results-text').value);
eq([p.rater, p.judgments[0].choice, p.complete], ['SOLO', 'both_bad', true], 'single rater result');
pg = makePage(PLACEHOLDER);
eq(pg.visible(), ['error'], 'unsubstituted page shows the error screen');
ok(/no study data/.test(pg.$('error-text').textContent), 'error text');

console.log(`check_page: OK (${checks} checks; ${pagePath}; ${lines} lines)`);
