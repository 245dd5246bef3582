/* global window, document, location, history */
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
  var state = { sort: 'suspicion', dir: 'desc', cls: '', split: '', q: '', min: 0, stage: 'final', page: 0, size: 50 };

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
    var parts = ['sort', 'dir', 'cls', 'split', 'q', 'min', 'stage', 'page', 'size'].map(function (k) { return k + '=' + encodeURIComponent(state[k]); });
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
      var x = a[key], y = b[key];
      if (x === null || x === undefined) return (y === null || y === undefined) ? a.rank - b.rank : 1; // nulls last
      if (y === null || y === undefined) return -1;
      if (x < y) return -sign;
      if (x > y) return sign;
      return a.rank - b.rank;
    });
    return out;
  }

  function render() {
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
        '<td class="num suspicion">' + num(r.suspicion) + '<span class="bar" style="width:' + Math.round(60 * r.suspicion) + 'px"></span></td>' +
        '<td class="id">' + esc(r.id) + '</td>' +
        '<td class="split">' + esc(r.split) + '</td>' +
        '<td class="tags">' + chips + '</td>' +
        '<td class="num">' + pct(r.ignore) + '</td>' +
        '<td class="num">' + num(r.confidence, 2) + '</td>' +
        '<td class="num">' + pct(r.agreement) + '</td>' +
        '<td class="num gt">' + pct(r.gt_miou) + '</td>' +
        '<td class="num">' + pct(r.gt_coverage) + '</td>' +
        '<td class="reason">' + esc(r.reasons.join(', ')) + (r.flags.length ? '<br>refine: ' + esc(r.flags.join(', ')) : '') + '</td>' +
        '</tr>';
    }).join('');
    document.querySelector('#images tbody').innerHTML = html || '<tr><td colspan="12">no image matches</td></tr>';
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
        else { state.sort = key; state.dir = key === 'id' || key === 'split' || key === 'rank' ? 'asc' : 'desc'; }
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
    }
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
  classes();
  columns();
  render();
  window.auditReady = true;
})();
