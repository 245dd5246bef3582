/* global window, document, location, history, URL, Blob, FileReader */
// The audit report's page logic: vanilla JS, no modules and no fetch, so index.html works from
// the file system (file://) as well as from any static host. Data comes from data.js
// (window.AUDIT, written by stages/audit/report.ts). Only one page of rows is in the DOM.
(function () {
  'use strict';
  var A = window.AUDIT;
  if (!A) {
    document.body.insertAdjacentHTML('afterbegin', '<p style="color:#c01c28">data.js is missing: rerun `tagseg audit`.</p>');
    return;
  }
  var F = {};
  A.imageFields.forEach(function (name, i) { F[name] = i; });
  var rows = A.images.map(function (r) {
    var o = {};
    A.imageFields.forEach(function (name, i) { o[name] = r[i]; });
    return o;
  });
  var CF = {};
  A.classRowFields.forEach(function (name, i) { CF[name] = i; });
  var byId = {};
  rows.forEach(function (r) {
    // per-class suspicion (cache/audit.arrow): the class filter ranks by it
    r.csus = {};
    r.crows.forEach(function (c) { r.csus[c[CF['class']]] = c[CF.suspicion]; });
    byId[r.id] = r;
  });
  // view: the id shown in the detail view ('' = the list); panel: the stage shown large there
  var state = { sort: 'suspicion', dir: 'desc', cls: '', split: '', q: '', min: 0, stage: 'final', page: 0, size: 50, view: '', panel: 'final' };

  function $(id) { return document.getElementById(id); }
  function esc(s) { return String(s).replace(/[&<>"']/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]; }); }
  function pct(v) { return v === null || v === undefined ? '&ndash;' : (100 * v).toFixed(1) + '%'; }
  function num(v, d) { return v === null || v === undefined ? '&ndash;' : v.toFixed(d === undefined ? 3 : d); }
  function chip(c, absent) {
    var k = A.classes[c];
    return '<span class="chip' + (absent ? ' absent' : '') + '" style="background:' + k.colour + ';color:' + k.ink + '" data-class="' + esc(k.name) + '"' +
      (absent ? ' title="tagged, but not in the pseudo-mask"' : '') + '>' + esc(k.name) + '</span>';
  }
  function thumbSrc(r, stage) { return A.imageDir + '/' + stage + '/' + r.file + '.jpg'; }

  // ------------------------------------------------------------ state <-> URL hash (shareable views)
  function readHash() {
    var h = location.hash.replace(/^#/, '');
    if (!h) return;
    h.split('&').forEach(function (kv) {
      var p = kv.split('=');
      var k = decodeURIComponent(p[0]);
      var v = decodeURIComponent(p[1] || '');
      if (k === 'page' || k === 'size' || k === 'min') state[k] = Number(v) || 0;
      else if (k in state) state[k] = v;
    });
    if (!state.size) state.size = 50;
  }
  function writeHash() {
    var parts = ['sort', 'dir', 'cls', 'split', 'q', 'min', 'stage', 'page', 'size', 'view', 'panel'].map(function (k) { return k + '=' + encodeURIComponent(state[k]); });
    if (history.replaceState) history.replaceState(null, '', '#' + parts.join('&'));
  }

  // ------------------------------------------------------------ filter, sort, page
  function visible() {
    var cls = state.cls === '' ? -1 : Number(state.cls);
    var q = state.q.toLowerCase();
    var out = rows.filter(function (r) {
      if (state.split && r.split !== state.split) return false;
      if (cls >= 0 && r.tags.indexOf(cls) < 0 && r.classes.indexOf(cls) < 0) return false;
      if (q && r.id.toLowerCase().indexOf(q) < 0) return false;
      if (r.suspicion < state.min) return false;
      return true;
    });
    var key = state.sort;
    var sign = state.dir === 'asc' ? 1 : -1;
    out.sort(function (a, b) {
      var x = score(a, key), y = score(b, key);
      if (x === null || x === undefined) return (y === null || y === undefined) ? a.rank - b.rank : 1; // nulls last
      if (y === null || y === undefined) return -1;
      if (x < y) return -sign;
      if (x > y) return sign;
      return a.rank - b.rank;
    });
    return out;
  }

  /** The sort value of row r: with a class filter, suspicion is that class's suspicion. */
  function score(r, key) {
    if (key === 'suspicion' && state.cls !== '') { var v = r.csus[Number(state.cls)]; return v === undefined ? null : v; }
    return r[key];
  }

  function render() {
    if (state.view) { renderDetail(); return; }
    showDetail(false);
    var list = visible();
    var pages = Math.max(1, Math.ceil(list.length / state.size));
    if (state.page >= pages) state.page = pages - 1;
    if (state.page < 0) state.page = 0;
    var start = state.page * state.size;
    var html = list.slice(start, start + state.size).map(function (r) {
      var stage = state.stage === 'gt' && !r.gt ? 'final' : state.stage;
      var absent = r.tags.filter(function (c) { return r.classes.indexOf(c) < 0; });
      var extra = r.classes.filter(function (c) { return r.tags.indexOf(c) < 0; });
      var chips = r.tags.map(function (c) { return chip(c, absent.indexOf(c) >= 0); }).join('') +
        (extra.length ? ' + ' + extra.map(function (c) { return chip(c, false); }).join('') : '');
      return '<tr data-id="' + esc(r.id) + '">' +
        '<td class="thumb"><a href="' + esc(A.imageDir + '/full/' + r.file + '.jpg') + '" target="_blank" title="full-size pseudo-mask overlay">' +
        '<img loading="lazy" data-stage="' + stage + '" src="' + esc(thumbSrc(r, stage)) + '" alt="' + esc(r.id + ' ' + stage) + '"></a></td>' +
        '<td class="num rank">' + r.rank + '</td>' +
        '<td class="num suspicion">' + suspicionCell(r) + '</td>' +
        '<td class="num label-quality" title="mean label probability ' + num(r.label_confidence, 2) + '">' + num(r.label_quality) + '</td>' +
        '<td class="id">' + esc(r.id) + (r.corrected ? ' <span class="badge corrected" title="dataset.corrections has a hand-fixed mask: segment trains on it">corrected</span>' : '') + '</td>' +
        '<td class="split">' + esc(r.split) + '</td>' +
        '<td class="tags">' + chips + '</td>' +
        '<td class="num">' + pct(r.ignore) + '</td>' +
        '<td class="num">' + num(r.confidence, 2) + '</td>' +
        '<td class="num">' + pct(r.agreement) + '</td>' +
        '<td class="num gt">' + pct(r.gt_miou) + '</td>' +
        '<td class="num">' + pct(r.gt_coverage) + '</td>' +
        '<td class="reason">' + esc(r.reasons.join(', ')) + (r.flags.length ? '<br>refine: ' + esc(r.flags.join(', ')) : '') + '</td>' +
        '<td class="decision">' + badges(r.id) + '</td>' +
        '</tr>';
    }).join('');
    document.querySelector('#images tbody').innerHTML = html || '<tr><td colspan="14">no image matches</td></tr>';
    $('page-info').textContent = 'page ' + (state.page + 1) + ' of ' + pages;
    $('row-count').textContent = list.length + ' of ' + rows.length + ' images';
    $('prev').disabled = state.page === 0;
    $('next').disabled = state.page >= pages - 1;
    Array.prototype.forEach.call(document.querySelectorAll('#images th[data-sort]'), function (th) {
      th.classList.remove('sorted-asc', 'sorted-desc');
      if (th.getAttribute('data-sort') === state.sort) th.classList.add('sorted-' + state.dir);
    });
    writeHash();
  }


  function suspicionCell(r) {
    var v = score(r, 'suspicion');
    var label = state.cls !== '' ? ' <span class="reason">(' + esc(A.classes[Number(state.cls)].name) + ')</span>' : '';
    return num(v) + label + '<span class="bar" style="width:' + Math.round(60 * (v || 0)) + 'px"></span>';
  }

  // ------------------------------------------------------------ decisions (kept in the browser, downloaded as decisions.csv)
  // A static page cannot write into the project: marks live in localStorage and leave as a
  // download that `tagseg review import` merges into review/decisions.csv (stages/audit/review.ts).
  var STORE = 'tagseg-review:' + A.title;
  var decisions = {};
  try { decisions = JSON.parse(window.localStorage.getItem(STORE) || '{}') || {}; } catch { decisions = {}; }
  function dkey(id, cls) { return id + '\u0000' + (cls || ''); }
  function decisionOf(id, cls) { var d = decisions[dkey(id, cls)]; return d ? d.decision : ''; }
  function setDecision(id, cls, decision) {
    var k = dkey(id, cls);
    if (!decision) delete decisions[k];
    else decisions[k] = { id: id, decision: decision, 'class': cls || '', note: decisions[k] ? decisions[k].note : '' };
    persist();
  }
  function persist() {
    try { window.localStorage.setItem(STORE, JSON.stringify(decisions)); } catch { /* private mode: marks last for this page only */ }
    updateDecisionCount();
  }
  function badges(id) {
    return Object.keys(decisions).filter(function (k) { return decisions[k].id === id; }).sort().map(function (k) {
      var d = decisions[k];
      return '<span class="badge ' + d.decision + '">' + esc(d.decision + (d['class'] ? ': ' + d['class'] : '')) + '</span>';
    }).join(' ');
  }
  function csvField(v) { return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
  /** review/decisions.csv's format (data/review.ts): header, rows sorted by id then class, RFC 4180. */
  function decisionsCsv() {
    var list = Object.keys(decisions).map(function (k) { return decisions[k]; }).sort(function (a, b) {
      return a.id < b.id ? -1 : a.id > b.id ? 1 : a['class'] < b['class'] ? -1 : a['class'] > b['class'] ? 1 : 0;
    });
    return ['id,decision,class,note'].concat(list.map(function (d) { return [d.id, d.decision, d['class'], d.note].map(csvField).join(','); })).join('\n') + '\n';
  }
  function parseCsv(text) {
    var out = [], rec = [], f = '', q = false;
    for (var i = 0; i < text.length; i++) {
      var ch = text[i];
      if (q) { if (ch === '"' && text[i + 1] === '"') { f += '"'; i++; } else if (ch === '"') q = false; else f += ch; }
      else if (ch === '"') q = true;
      else if (ch === ',') { rec.push(f); f = ''; }
      else if (ch === '\n' || ch === '\r') { if (ch === '\r' && text[i + 1] === '\n') i++; rec.push(f); out.push(rec); rec = []; f = ''; }
      else f += ch;
    }
    if (f !== '' || rec.length) { rec.push(f); out.push(rec); }
    return out;
  }
  function loadCsv(text) {
    var recs = parseCsv(text.replace(/^\ufeff/, ''));
    var h = recs.shift() || [];
    var col = { id: h.indexOf('id'), decision: h.indexOf('decision'), 'class': h.indexOf('class'), note: h.indexOf('note') };
    if (col.id < 0 || col.decision < 0) { window.alert('not a decisions.csv: the header needs id and decision'); return; }
    recs.forEach(function (r) {
      var d = (r[col.decision] || '').trim().toLowerCase();
      if (!r[col.id] || ['accept', 'reject', 'relabel'].indexOf(d) < 0) return;
      var c = col['class'] >= 0 ? (r[col['class']] || '').trim() : '';
      decisions[dkey(r[col.id], c)] = { id: r[col.id], decision: d, 'class': c, note: col.note >= 0 ? (r[col.note] || '') : '' };
    });
    persist();
    var dc = $('decision-count');
    dc.setAttribute('data-loads', String(Number(dc.getAttribute('data-loads') || 0) + 1)); // a loaded file is done (tests wait on it)
    render();
  }
  function updateDecisionCount() {
    var n = Object.keys(decisions).length;
    $('decision-count').textContent = n + ' decision' + (n === 1 ? '' : 's') + ' marked';
  }
  function downloadDecisions() {
    var a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([decisionsCsv()], { type: 'text/csv' }));
    a.download = 'decisions.csv';
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  // ------------------------------------------------------------ detail view: one image, every stage side by side
  function panelsOf(r) {
    var p = [{ key: 'photo', label: 'photo', src: A.imageDir + '/photo/' + r.file + '.jpg' }];
    r.heat.forEach(function (c) { p.push({ key: 'heat-' + c, label: 'CAM ' + A.classes[c].name, src: A.imageDir + '/heat/' + r.file + '_' + c + '.jpg' }); });
    A.stages.forEach(function (s) {
      if (s.key === 'gt' && !r.gt) return;
      p.push({ key: s.key, label: s.key === 'final' ? 'pseudo-mask (ignore hatched)' : s.label, src: A.imageDir + '/' + s.key + '/' + r.file + '.jpg' });
    });
    return p;
  }
  function showDetail(on) {
    $('detail').hidden = !on;
    ['review', 'classes', 'columns'].forEach(function (id) { $(id).hidden = on; });
  }
  function openDetail(id) { state.view = id; render(); window.scrollTo(0, 0); }
  function closeDetail() {
    var list = visible();
    var i = list.findIndex(function (r) { return r.id === state.view; });
    if (i >= 0) state.page = Math.floor(i / state.size);
    state.view = '';
    render();
  }
  function step(delta) {
    var list = visible();
    var i = list.findIndex(function (r) { return r.id === state.view; });
    var j = Math.max(0, Math.min(list.length - 1, i + delta));
    if (list[j]) { state.view = list[j].id; render(); }
  }
  function cyclePanel(delta) {
    var ps = panelsOf(byId[state.view]);
    var i = ps.findIndex(function (p) { return p.key === state.panel; });
    state.panel = ps[(i + delta + ps.length) % ps.length].key;
    render();
  }
  function cell(v, f) { return '<td class="num">' + f(v) + '</td>'; }
  function renderDetail() {
    var r = byId[state.view];
    if (!r) { state.view = ''; render(); return; }
    showDetail(true);
    var list = visible();
    var i = list.findIndex(function (x) { return x.id === r.id; });
    var ps = panelsOf(r);
    if (!ps.some(function (p) { return p.key === state.panel; })) state.panel = 'final';
    var main = ps.filter(function (p) { return p.key === state.panel; })[0];
    var d = decisionOf(r.id, '');
    var shown = r.tags.concat(r.classes.filter(function (c) { return r.tags.indexOf(c) < 0; }));
    var html = '<h2><span>' + esc(r.id) + '</span><small>rank ' + r.rank + ' \u00b7 suspicion ' + num(r.suspicion) +
      (r.label_quality !== null ? ' \u00b7 label quality ' + num(r.label_quality) : '') + (r.corrected ? ' \u00b7 corrected mask' : '') + ' \u00b7 ' + esc(r.split) +
      ' \u00b7 ' + (i >= 0 ? (i + 1) + ' of ' + list.length : 'not in the filtered list') + '</small><span id="detail-decision">' + badges(r.id) + '</span></h2>' +
      '<div class="nav"><button type="button" data-act="back">&larr; list (Esc)</button><button type="button" data-act="prev"' + (i <= 0 ? ' disabled' : '') + '>previous (k)</button>' +
      '<button type="button" data-act="next"' + (i < 0 || i >= list.length - 1 ? ' disabled' : '') + '>next (j)</button></div>' +
      '<div class="decide">image: ' + ['accept', 'reject', 'relabel'].map(function (x) {
        return '<button type="button" data-decide="' + x + '"' + (d === x ? ' class="on"' : '') + '>' + (x === 'relabel' ? 'needs relabel (e)' : x + ' (' + x[0] + ')') + '</button>';
      }).join('') + '<button type="button" data-decide="">clear (u)</button> <label>note <input id="detail-note" size="40" value="' +
      esc(d ? decisions[dkey(r.id, '')].note : '') + '"' + (d ? '' : ' disabled title="decide first"') + '></label></div>' +
      '<div class="detail-main"><figure><img id="detail-main" data-panel="' + esc(main.key) + '" src="' + esc(main.src) + '" alt="' + esc(r.id + ' ' + main.label) + '"><figcaption>' + esc(main.label) + ' (v / V: next / previous view)</figcaption></figure>' +
      '<div><div id="detail-legend">' + shown.map(function (c) { return chip(c, r.tags.indexOf(c) >= 0 && r.classes.indexOf(c) < 0); }).join('') +
      '<span class="chip" style="background:#777;color:#fff">ignore (hatched grey)</span></div>' +
      '<p class="reason">why: ' + esc(r.reasons.join(', ') || '-') + (r.flags.length ? '; refine: ' + esc(r.flags.join(', ')) : '') + '</p></div></div>' +
      '<div class="panels">' + ps.map(function (p) {
        return '<figure data-panel="' + esc(p.key) + '"' + (p.key === state.panel ? ' class="on"' : '') + '><img loading="lazy" src="' + esc(p.src) + '" alt="' + esc(p.label) + '"><figcaption>' + esc(p.label) + '</figcaption></figure>';
      }).join('') + '</div>' +
      '<h3>Classes</h3><table id="detail-classes"><thead><tr><th>class</th><th>tagged</th><th>area</th><th>confidence</th><th>ignore</th><th>regions</th>' +
      '<th>CAM&rarr;RW</th><th>RW&rarr;RCA</th><th>RCA&rarr;final</th><th>CAM&rarr;final</th><th>edge alignment</th><th>suspicion</th><th>why</th><th>GT IoU</th><th>decision</th></tr></thead><tbody>' +
      r.crows.map(function (c) {
        var k = c[CF['class']], name = A.classes[k].name, cd = decisionOf(r.id, name);
        return '<tr data-class="' + esc(name) + '"><td>' + chip(k, c[CF.empty]) + '</td><td>' + (c[CF.tagged] ? 'yes' : 'no') + '</td>' + cell(c[CF.area], pct) + cell(c[CF.confidence], function (v) { return num(v, 2); }) +
          cell(c[CF.ignore], pct) + cell(c[CF.components], function (v) { return String(v); }) + cell(c[CF.iou_cam_rw], pct) + cell(c[CF.iou_rw_rca], pct) + cell(c[CF.iou_rca_final], pct) +
          cell(c[CF.iou_cam_final], pct) + cell(c[CF.boundary], pct) + '<td class="num class-suspicion">' + num(c[CF.suspicion]) + '</td><td class="reason">' + esc((c[CF.reasons] || []).join(', ')) + '</td>' +
          cell(c[CF.gt_iou], pct) + '<td>' + ['accept', 'reject', 'relabel'].map(function (x) {
            return '<button type="button" data-class-decide="' + x + '" data-cls="' + esc(name) + '"' + (cd === x ? ' class="on"' : '') + '>' + x + '</button>';
          }).join('') + '</td></tr>';
      }).join('') + '</tbody></table>';
    $('detail').innerHTML = html;
    writeHash();
  }
  function setupDetail() {
    document.querySelector('#images tbody').addEventListener('click', function (e) {
      if (e.target.closest('a')) return; // the thumbnail link opens the full-size overlay
      var tr = e.target.closest('tr[data-id]');
      if (tr) openDetail(tr.getAttribute('data-id'));
    });
    $('detail').addEventListener('click', function (e) {
      var b = e.target.closest('button, figure[data-panel]');
      if (!b) return;
      var act = b.getAttribute('data-act');
      if (act === 'back') closeDetail();
      else if (act === 'prev') step(-1);
      else if (act === 'next') step(1);
      else if (b.hasAttribute('data-decide')) { setDecision(state.view, '', b.getAttribute('data-decide')); render(); }
      else if (b.hasAttribute('data-class-decide')) {
        var cls = b.getAttribute('data-cls'), x = b.getAttribute('data-class-decide');
        setDecision(state.view, cls, decisionOf(state.view, cls) === x ? '' : x);
        render();
      } else if (b.hasAttribute('data-panel')) { state.panel = b.getAttribute('data-panel'); render(); }
    });
    document.addEventListener('keydown', function (e) {
      if (!state.view || e.ctrlKey || e.metaKey || e.altKey || /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName)) return;
      var keys = {
        ArrowRight: function () { step(1); }, j: function () { step(1); }, ArrowLeft: function () { step(-1); }, k: function () { step(-1); },
        a: function () { setDecision(state.view, '', 'accept'); render(); }, r: function () { setDecision(state.view, '', 'reject'); render(); },
        e: function () { setDecision(state.view, '', 'relabel'); render(); }, u: function () { setDecision(state.view, '', ''); render(); },
        v: function () { cyclePanel(1); }, V: function () { cyclePanel(-1); }, Escape: closeDetail,
      };
      if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
    });
    $('detail').addEventListener('change', function (e) {
      if (e.target.id !== 'detail-note') return;
      var d = decisions[dkey(state.view, '')];
      if (d) { d.note = e.target.value; persist(); }
    });
    $('download-decisions').addEventListener('click', downloadDecisions);
    $('load-decisions').addEventListener('change', function (e) {
      var f = e.target.files && e.target.files[0];
      if (!f) return;
      var fr = new FileReader();
      fr.onload = function () { loadCsv(String(fr.result)); };
      fr.readAsText(f);
    });
    updateDecisionCount();
  }

  // ------------------------------------------------------------ controls
  function setupControls() {
    var toggle = $('stage-toggle');
    A.stages.forEach(function (s) {
      toggle.insertAdjacentHTML('beforeend', '<label><input type="radio" name="stage" value="' + s.key + '"' +
        (s.key === state.stage ? ' checked' : '') + '> ' + esc(s.label) + '</label>');
    });
    toggle.addEventListener('change', function (e) { state.stage = e.target.value; render(); });
    var cf = $('class-filter');
    A.classes.forEach(function (k, i) { cf.insertAdjacentHTML('beforeend', '<option value="' + i + '">' + esc(k.name) + '</option>'); });
    cf.value = state.cls;
    cf.addEventListener('change', function () { state.cls = cf.value; state.page = 0; render(); });
    var sf = $('split-filter');
    A.splits.forEach(function (s) { sf.insertAdjacentHTML('beforeend', '<option>' + esc(s) + '</option>'); });
    sf.value = state.split;
    sf.addEventListener('change', function () { state.split = sf.value; state.page = 0; render(); });
    var q = $('search');
    q.value = state.q;
    q.addEventListener('input', function () { state.q = q.value; state.page = 0; render(); });
    var ms = $('min-suspicion');
    ms.value = state.min;
    ms.addEventListener('input', function () { state.min = Number(ms.value) || 0; state.page = 0; render(); });
    var ps = $('page-size');
    ps.value = String(state.size);
    ps.addEventListener('change', function () { state.size = Number(ps.value); state.page = 0; render(); });
    $('prev').addEventListener('click', function () { state.page--; render(); });
    $('next').addEventListener('click', function () { state.page++; render(); });
    Array.prototype.forEach.call(document.querySelectorAll('#images th[data-sort]'), function (th) {
      th.addEventListener('click', function () {
        var key = th.getAttribute('data-sort');
        if (state.sort === key) state.dir = state.dir === 'asc' ? 'desc' : 'asc';
        // low label quality = suspect: it sorts ascending first, like rank
        else { state.sort = key; state.dir = key === 'id' || key === 'split' || key === 'rank' || key === 'label_quality' ? 'asc' : 'desc'; }
        state.page = 0;
        render();
      });
    });
  }

  // ------------------------------------------------------------ overview, classes, charts, columns
  function overview() {
    var o = A.overview;
    $('subtitle').textContent = A.title;
    var items = ['<span><b>' + rows.length + '</b> images</span>', '<span><b>' + A.classes.length + '</b> classes</span>',
      '<span>mean suspicion <b>' + num(o.meanSuspicion) + '</b></span>', '<span>mean ignore <b>' + pct(o.meanIgnore) + '</b></span>'];
    if (o.gt) {
      items.push('<span>vs ground truth (' + o.gt.images + ' images), mIoU: ' + A.stages.filter(function (s) { return o.gt.stages[s.key]; }).map(function (s) {
        return esc(s.label) + ' <b>' + pct(o.gt.stages[s.key].miou) + '</b>';
      }).join(', ') + '</span>');
      if (o.gt.spearman !== null) items.push('<span>suspicion vs (1 &minus; GT mIoU &times; coverage): Spearman <b>' + num(o.gt.spearman, 2) + '</b></span>');
      var lq = o.gt.labelQuality;
      if (lq && lq.spearman !== null) items.push('<span>label quality (low) vs the same: Spearman <b>' + num(lq.spearman, 2) + '</b> (mean probability <b>' + num(lq.confidence_spearman, 2) + '</b>, ' + lq.images + ' images)</span>');
    }
    items.push('<span>' + (o.labelQualityImages ? '<b>' + o.labelQualityImages + '</b> images with an out-of-fold label quality' : 'no out-of-fold label quality (run <code>tagseg cv --oof</code>)') + '</span>');
    if (o.corrected) items.push('<span><b>' + o.corrected + '</b> corrected masks</span>');
    $('ranking-note').textContent = o.ranking;
    $('overview').innerHTML = items.join('');
    $('legend').innerHTML = A.classes.map(function (k, i) { return chip(i, false); }).join('') +
      '<span class="chip" style="background:#777;color:#fff">ignore (hatched grey)</span>';
  }

  function barChart(title, labels, series, max) {
    var rowH = 16 * series.length + 6, left = 110, width = 230, h = labels.length * rowH + 24;
    var svg = '<svg width="' + (left + width + 50) + '" height="' + h + '" role="img" aria-label="' + esc(title) + '">';
    labels.forEach(function (lab, i) {
      var y = 18 + i * rowH;
      svg += '<text x="' + (left - 4) + '" y="' + (y + 11) + '" text-anchor="end">' + esc(lab) + '</text>';
      series.forEach(function (s, j) {
        var v = s.values[i];
        var w = v === null || v === undefined ? 0 : Math.max(0, Math.min(1, v / max)) * width;
        svg += '<rect x="' + left + '" y="' + (y + j * 16) + '" width="' + w.toFixed(1) + '" height="13" fill="' + s.colour + '"><title>' + esc(lab + ' ' + s.name + ': ' + (v === null ? 'n/a' : v.toFixed(3))) + '</title></rect>';
        svg += '<text x="' + (left + w + 3) + '" y="' + (y + j * 16 + 11) + '">' + (v === null || v === undefined ? '' : v.toFixed(2)) + '</text>';
      });
    });
    var legend = series.map(function (s) { return '<span class="chip" style="background:' + s.colour + '">' + esc(s.name) + '</span>'; }).join(' ');
    return '<div class="chart"><h4>' + esc(title) + '</h4>' + legend + svg + '</svg></div>';
  }

  function histogram(h) {
    var max = Math.max.apply(null, h.concat([1]));
    var svg = '<svg width="80" height="20">';
    h.forEach(function (v, i) { var bh = 18 * v / max; svg += '<rect x="' + (i * 8) + '" y="' + (19 - bh) + '" width="7" height="' + bh + '" fill="#1a5fb4"></rect>'; });
    return svg + '</svg>';
  }

  function classes() {
    var cs = A.summary.classes.filter(function (c) { return c.tagged > 0 || c.present > 0 || (c.gt && c.gt.iou !== null); });
    var names = cs.map(function (c) { return c.name; });
    var charts = barChart('Area in the pseudo-mask (median; p90 light)', names, [
      { name: 'median', colour: '#1a5fb4', values: cs.map(function (c) { return c.area.p50; }) },
      { name: 'p90', colour: '#99c1f1', values: cs.map(function (c) { return c.area.p90; }) }], 1);
    charts += barChart('Agreement between stages (IoU)', names, [
      { name: 'CAM\u2192final', colour: '#e66100', values: cs.map(function (c) { return c.agreement.cam_final; }) },
      { name: 'RCA\u2192final', colour: '#5e3c99', values: cs.map(function (c) { return c.agreement.rca_final; }) }], 1);
    if (A.summary.gt) {
      charts += barChart('Pseudo-mask vs ground truth', names, [
        { name: 'IoU', colour: '#26a269', values: cs.map(function (c) { return c.gt ? c.gt.iou : null; }) },
        { name: 'precision', colour: '#8ff0a4', values: cs.map(function (c) { return c.gt ? c.gt.precision : null; }) },
        { name: 'recall', colour: '#f6d32d', values: cs.map(function (c) { return c.gt ? c.gt.recall : null; }) }], 1);
    }
    charts += barChart('Mean suspicion of tagged images', names, [
      { name: 'suspicion', colour: '#c01c28', values: cs.map(function (c) { return c.mean_suspicion; }) }], 1);
    $('class-charts').innerHTML = charts;
    var gt = Boolean(A.summary.gt);
    document.querySelector('#class-table thead').innerHTML = '<tr><th>class</th><th>tagged</th><th>in mask</th><th>lost tags</th><th>area p10 / p50 / p90</th><th>area histogram</th>' +
      '<th>confidence</th><th>CAM&rarr;RW</th><th>RW&rarr;RCA</th><th>RCA&rarr;final</th><th>CAM&rarr;final</th>' + (gt ? '<th>GT IoU</th><th>precision</th><th>recall</th>' : '') + '<th>mean suspicion</th></tr>';
    document.querySelector('#class-table tbody').innerHTML = cs.map(function (c) {
      return '<tr data-class="' + esc(c.name) + '"><td>' + chip(c.class, false) + '</td><td class="num">' + c.tagged + '</td><td class="num">' + c.present + '</td><td class="num">' + c.empty_tags + '</td>' +
        '<td class="num">' + pct(c.area.p10) + ' / ' + pct(c.area.p50) + ' / ' + pct(c.area.p90) + '</td><td>' + histogram(c.area.histogram) + '</td>' +
        '<td class="num">' + num(c.mean_confidence, 2) + '</td><td class="num">' + pct(c.agreement.cam_random_walk) + '</td><td class="num">' + pct(c.agreement.random_walk_rca) + '</td>' +
        '<td class="num">' + pct(c.agreement.rca_final) + '</td><td class="num">' + pct(c.agreement.cam_final) + '</td>' +
        (gt ? '<td class="num">' + pct(c.gt && c.gt.iou) + '</td><td class="num">' + pct(c.gt && c.gt.precision) + '</td><td class="num">' + pct(c.gt && c.gt.recall) + '</td>' : '') +
        '<td class="num">' + num(c.mean_suspicion) + '</td></tr>';
    }).join('');
    var conf = A.summary.gt ? A.summary.gt.confused : [];
    document.querySelector('#confused tbody').innerHTML = conf.length ? conf.map(function (p) {
      return '<tr><td>' + esc(p.gt) + '</td><td>' + esc(p.predicted) + '</td><td class="num">' + p.pixels + '</td><td class="num">' + pct(p.share) + '</td></tr>';
    }).join('') : '<tr><td colspan="4">no ground truth</td></tr>';
    var tied = A.summary.tied || [];
    document.querySelector('#tied tbody').innerHTML = tied.length ? tied.map(function (t) {
      return '<tr><td>' + esc(t.a) + '</td><td>' + esc(t.b) + '</td><td class="num">' + t.together + '</td><td class="num">' + t.a_alone + '</td><td class="num">' + t.b_alone + '</td>' +
        '<td class="num">' + t.final_a_above + ' of ' + t.final_both + '</td><td class="num">' + (t.gt_both === null ? '-' : t.gt_a_above + ' of ' + t.gt_both) + '</td></tr>';
    }).join('') : '<tr><td colspan="7">none: every tagged pair also appears apart</td></tr>';
  }

  function columns() {
    function dl(cols) { return cols.map(function (c) { return '<dt>' + esc(c.name) + '</dt><dd>' + esc(c.doc || '') + '</dd>'; }).join(''); }
    $('image-columns').innerHTML = dl(A.imageColumns);
    $('class-columns').innerHTML = dl(A.classColumns);
  }

  readHash();
  if (!A.stages.some(function (s) { return s.key === state.stage; })) state.stage = 'final';
  overview();
  setupControls();
  setupDetail();
  classes();
  columns();
  render();
  window.auditReady = true;
})();
