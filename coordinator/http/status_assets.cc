// The status page's script and style sheet, served by the coordinator
// itself (/static/app.js, /static/style.css): the page works offline.
#include "coordinator/http/status_pages.h"

namespace pcfarm {

std::string_view StatusAppJs() {
  return R"JS('use strict';
// Keeps a status page live: polls the JSON API once a second and redraws
// its tables. Text from the API is set with textContent only.
(function () {
  const page = document.body.dataset.page, id = document.body.dataset.id;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const live = document.getElementById('live');
  const $ = (x) => document.getElementById(x);
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function pad(n) { return String(n).padStart(2, '0'); }
  function time(ms) {
    if (!(ms > 0)) return '-';
    const d = new Date(ms);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
        pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  function state(w) {
    return w.banned ? 'quarantined' : w.outdated ? 'outdated' : !w.connected ? 'offline'
        : (w.running > 0 ? 'busy' : 'idle');
  }
  function row(cells) {
    const tr = el('tr');
    for (const c of cells) {
      const td = el('td');
      if (c instanceof Node) td.appendChild(c); else td.textContent = String(c);
      tr.appendChild(td);
    }
    return tr;
  }
  function link(href, text) { const a = el('a', text); a.href = href; return a; }
  function workerRow(w) {
    const backends = [...new Set((w.devices || []).map((d) => d.backend))].join(',');
    return row([w.worker_id, link('/workers/' + w.worker_id, w.name), state(w),
      (w.devices || []).length, backends, Number(w.gflops).toFixed(1),
      Number(w.trust).toFixed(2), w.agreed + '/' + w.disagreed, w.checks, w.strikes, w.running,
      time(w.last_seen_ms)]);
  }
  const samples = {};  // job id -> [[ms, shards accepted]]
  function remember(j) {
    const s = samples[j.job_id] = samples[j.job_id] || [];
    s.push([Date.now(), j.shards_accepted]);
    if (s.length > 600) s.shift();
    return s;
  }
  function eta(j) {
    const s = remember(j);
    if (j.state !== 'running' || s.length < 2) return '-';
    const [t0, a0] = s[0], [t1, a1] = s[s.length - 1];
    if (a1 <= a0 || t1 <= t0) return '-';
    const left = (j.shards_total - j.shards_accepted) / ((a1 - a0) / (t1 - t0)) / 1000;
    return left < 90 ? Math.round(left) + ' s' : Math.round(left / 60) + ' min';
  }
  function progress(j) {
    const span = el('span');
    const p = el('progress');
    p.max = 100;
    p.value = j.shards_total > 0 ? 100 * j.shards_accepted / j.shards_total : 0;
    span.appendChild(p);
    span.appendChild(document.createTextNode(' ' + j.shards_accepted + '/' + j.shards_total));
    return span;
  }
  function jobRow(j) {
    return row([link('/jobs/' + j.job_id, j.job_id), j.kind, j.state, progress(j),
      time(j.created_ms), eta(j), j.owner]);
  }
  // Sortable tables: a click on a heading sorts by that column. The jobs
  // table sorts here; the workers table asks the server (its headings name
  // the API's sort field in data-sort) and shows one page of it.
  let sortCol = -1, sortDir = 1;
  function sorted(rows) {
    if (sortCol < 0) return rows;
    const key = (tr) => tr.children[sortCol].textContent;
    return rows.sort((a, b) => {
      const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return c * sortDir;
    });
  }
  const perPage = Math.min(1000, Math.max(1,
      parseInt(new URLSearchParams(location.search).get('per_page'), 10) || 100));
  const wq = {sort: 'worker_id', order: 'asc', offset: 0, state: ''};
  function workersUrl() {
    return '/api/v1/workers?limit=' + perPage + '&offset=' + wq.offset + '&sort=' + wq.sort +
        '&order=' + wq.order + (wq.state ? '&state=' + encodeURIComponent(wq.state) : '');
  }
  const heads = document.querySelectorAll('table.sortable th');
  heads.forEach((th, i) => {
    th.addEventListener('click', () => {
      if (th.dataset.sort) {
        wq.order = wq.sort === th.dataset.sort && wq.order === 'asc' ? 'desc' : 'asc';
        wq.sort = th.dataset.sort;
        wq.offset = 0;
        heads.forEach((h) => h.removeAttribute('aria-sort'));
        th.setAttribute('aria-sort', wq.order === 'asc' ? 'ascending' : 'descending');
        tick();
        return;
      }
      sortDir = sortCol === i ? -sortDir : 1;
      sortCol = i;
      const body = $('rows');
      body.replaceChildren(...sorted([...body.children]));
    });
  });
  function showWorkers(p) {
    $('rows').replaceChildren(...p.workers.map(workerRow));
    $('total').textContent = p.total;
    $('range').textContent = p.workers.length === 0 ? 'none'
        : (p.offset + 1) + '-' + (p.offset + p.workers.length);
    $('prev').disabled = p.offset === 0;
    $('next').disabled = p.offset + p.workers.length >= p.total;
  }
  if (page === 'workers') {
    $('prev').addEventListener('click', () => { wq.offset = Math.max(0, wq.offset - perPage); tick(); });
    $('next').addEventListener('click', () => { wq.offset += perPage; tick(); });
    $('state-filter').addEventListener('change', (e) => {
      wq.state = e.target.value;
      wq.offset = 0;
      tick();
    });
  }
  function throughputSvg(s) {
    const ns = 'http://www.w3.org/2000/svg', w = 480, h = 120;
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('class', 'plot');
    svg.setAttribute('data-plot', 'throughput');
    svg.setAttribute('width', w);
    svg.setAttribute('height', h);
    if (s.length < 2) return svg;
    const t0 = s[0][0], t1 = s[s.length - 1][0], a0 = s[0][1];
    const a1 = Math.max(s[s.length - 1][1], a0 + 1);
    const pts = s.map(([t, a]) => (10 + (t - t0) / Math.max(1, t1 - t0) * (w - 20)).toFixed(1) +
        ',' + (h - 10 - (a - a0) / (a1 - a0) * (h - 20)).toFixed(1)).join(' ');
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', pts);
    line.setAttribute('class', 'line');
    line.setAttribute('fill', 'none');
    svg.appendChild(line);
    const label = document.createElementNS(ns, 'text');
    label.setAttribute('x', 12);
    label.setAttribute('y', 14);
    label.textContent = 'shards accepted while this page is open';
    svg.appendChild(label);
    return svg;
  }
  async function get(url) {
    const r = await fetch(url, {credentials: 'same-origin'});
    if (!r.ok) throw new Error('HTTP ' + r.status);
    return r;
  }
  async function post(url, body) {
    const r = await fetch(url, {method: 'POST', credentials: 'same-origin',
      headers: {'X-CSRF-Token': csrf, 'Content-Type': 'application/json'},
      body: JSON.stringify(body || {})});
    const text = await r.text();
    $('result').textContent = r.ok ? 'done' : ('failed: ' + text);
    tick();
  }
  async function tick() {
    try {
      if (page === 'overview') {
        const o = await (await get('/api/v1/overview')).json();
        for (const k of Object.keys(o)) {
          const e = $(k);
          if (e && typeof o[k] === 'number') {
            e.textContent = Number.isInteger(o[k]) ? o[k] : o[k].toFixed(1);
          }
        }
        $('events').replaceChildren(...o.events.map((e) => row([time(e.ts_ms), e.kind, e.message])));
      } else if (page === 'workers') {
        const url = workersUrl();
        const p = await (await get(url)).json();
        if (url !== workersUrl()) return;  // the query changed on the way: a newer tick shows it
        if (p.total > 0 && p.offset >= p.total) {  // the list shrank under this page
          wq.offset = Math.floor((p.total - 1) / perPage) * perPage;
          return tick();
        }
        showWorkers(p);
      } else if (page === 'worker') {
        const w = await (await get('/api/v1/workers/' + id)).json();
        $('rows').replaceChildren(workerRow(w));
      } else if (page === 'jobs') {
        const js = await (await get('/api/v1/jobs')).json();
        $('rows').replaceChildren(...sorted(js.map(jobRow)));
      } else if (page === 'job') {
        const j = await (await get('/api/v1/jobs/' + id)).json();
        $('rows').replaceChildren(jobRow(j));
        $('reason').textContent = j.reason;
        $('states').replaceChildren(...Object.entries(j.shard_states).map(([k, v]) => row([k, v])));
        $('summary').textContent = j.summary ? JSON.stringify(j.summary, null, 2) : '';
        $('throughput').replaceChildren(throughputSvg(samples[j.job_id] || []));
        if (j.rounds) {
          // Our own SVG, numbers and fixed labels only.
          $('plots').innerHTML = await (await get('/jobs/' + id + '/plots')).text();
        }
      }
      live.textContent = 'live ' + time(Date.now());
      live.className = 'ok';
    } catch (e) {
      live.textContent = 'not updating (' + e.message + ')';
      live.className = 'bad';
    }
  }
  if ($('cancel')) $('cancel').addEventListener('click', () => post('/api/v1/jobs/' + id + '/cancel'));
  if ($('quarantine')) $('quarantine').addEventListener('click', () => post('/api/v1/workers/' + id + '/quarantine'));
  if ($('unban')) $('unban').addEventListener('click', () => post('/api/v1/workers/' + id + '/unban'));
  tick();
  setInterval(tick, 1000);
})();
)JS";
}

std::string_view StatusStyleCss() {
  return R"CSS(body { font: 14px sans-serif; margin: 0; color: #222; }
nav { background: #234; color: #fff; padding: 8px 16px; }
nav a { color: #cde; margin-left: 12px; }
#live { float: right; font-size: 12px; }
#live.bad { color: #f99; }
main { padding: 8px 16px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; }
table.sortable th { cursor: pointer; }
th[aria-sort=ascending]::after { content: " \25B2"; }
th[aria-sort=descending]::after { content: " \25BC"; }
.pager button { margin-left: 4px; }
.tiles { display: flex; flex-wrap: wrap; gap: 8px; }
.tile { border: 1px solid #ccc; border-radius: 4px; padding: 8px 12px; min-width: 120px; }
.tile .v { display: block; font-size: 22px; }
.tile .k { font-size: 11px; color: #666; }
svg.plot { border: 1px solid #ddd; margin: 4px 8px 4px 0; font-size: 10px; }
svg.plot .line { stroke: #2a6; stroke-width: 2; }
svg.plot .axis { stroke: #888; }
progress { width: 120px; }
pre { background: #f6f6f6; padding: 8px; max-height: 300px; overflow: auto; }
)CSS";
}

}  // namespace pcfarm
