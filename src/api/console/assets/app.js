// journeyd console (SPEC §7). Plain JavaScript, no dependencies, no build step: the binary embeds
// this file as it is. Every call is the admin API (SPEC §6) with the token from sessionStorage.
'use strict';
(() => {
  const TOKEN_KEY = 'journeyd.admin-token';
  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const liveEl = document.getElementById('live');
  const signoutBtn = document.getElementById('signout');

  // ---------------------------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------------------------

  /** Builds an element: h('a', {href: '#/x', class: 'c', onclick: f}, 'text', child...). */
  function h(tag, attrs, ...children) {
    const el = tag === 'svg' || tag === 'path' || tag === 'defs' || tag === 'marker'
      ? document.createElementNS('http://www.w3.org/2000/svg', tag)
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = v;
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  /** Replaces an element's children, taking what `h` takes (arrays, null). */
  function fill(el, ...children) {
    el.replaceChildren();
    for (const c of children.flat(2)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  const enc = encodeURIComponent;
  const fmtNum = (n) => (typeof n === 'number' ? n.toLocaleString('en') : '0');
  const fmtTime = (t) => (t ? String(t).replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '');
  const json = (v) => JSON.stringify(v, null, 2);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  function badge(status) {
    return h('span', {class: 'badge s-' + status}, status);
  }
  function table(headers, rows, empty) {
    if (!rows.length) return h('p', {class: 'muted'}, empty || 'Nothing here yet.');
    return h('div', {class: 'scroll-x'}, h('table', {},
      h('thead', {}, h('tr', {}, headers.map((c) => {
        const [text, cls] = Array.isArray(c) ? c : [c, ''];
        return h('th', {scope: 'col', class: cls || null}, text);
      }))),
      h('tbody', {}, rows)));
  }
  /** Shows one page of a paged list in `list`: a first page replaces what was there, a further
   *  one (`more`) appends its rows; a "Load more" button calls `loadMore` while `cursor` is set. */
  function showPage(list, more, headers, rows, empty, cursor, loadMore) {
    if (more) {
      const tbody = list.querySelector('tbody');
      if (tbody) tbody.append(...rows);
    } else list.replaceChildren(table(headers, rows, empty));
    const old = list.querySelector('.more');
    if (old) old.remove();
    if (cursor) {
      list.append(h('p', {class: 'more'},
        h('button', {type: 'button', class: 'quiet', onclick: loadMore}, 'Load more')));
    }
  }
  function params() {
    const hash = location.hash.slice(1) || '/journeys';
    const [path, query] = hash.split('?');
    return {path, segments: path.split('/').filter(Boolean).map(decodeURIComponent),
      query: new URLSearchParams(query || '')};
  }
  function go(hash) {
    if (location.hash === hash) route(); else location.hash = hash;
  }
  /** Replaces the query of the current view without a re-render (filters). */
  function setQuery(q) {
    const p = params();
    const s = q.toString();
    history.replaceState(null, '', '#' + p.path + (s ? '?' + s : ''));
  }
  /** Runs `fn` at most once every `ms`, and once more after the last call. */
  function throttle(fn, ms) {
    let timer = null;
    let again = false;
    let running = false;
    const fire = async () => {
      timer = null;
      if (running) { again = true; return; }
      running = true;
      try { await fn(); } finally {
        running = false;
        if (again) { again = false; timer = setTimeout(fire, ms); }
      }
    };
    return () => { if (!timer) timer = setTimeout(fire, ms); };
  }
  /** Marks a view as rendered, for people (the title) and for tests (performance marks). */
  function ready(name, title) {
    document.title = (title ? title + ' · ' : '') + 'journeyd';
    document.body.dataset.ready = name;
    performance.mark('ready:' + name);
  }

  // ---------------------------------------------------------------------------------------------
  // The admin API
  // ---------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      super(e.message || 'HTTP ' + status);
      this.status = status;
      this.code = e.code;
      this.details = Array.isArray(e.details) ? e.details : [];
      this.truncated = e.truncated;
    }
  }
  const token = () => sessionStorage.getItem(TOKEN_KEY);
  async function api(method, path, body, tok) {
    const headers = {Authorization: 'Bearer ' + (tok || token())};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const resp = await fetch(path, {method, headers, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body)});
    let data = null;
    const text = await resp.text();
    if (text) { try { data = JSON.parse(text); } catch (_) { data = null; } }
    if (resp.status === 401 && !tok) { signOut('The admin token was not accepted: sign in again.'); }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }
  const get = (path) => api('GET', path);
  /** Every item of a paginated list (up to `max`). */
  async function all(path, max) {
    const items = [];
    let cursor = null;
    do {
      const sep = path.includes('?') ? '&' : '?';
      const page = await get(path + sep + 'limit=1000' + (cursor ? '&cursor=' + enc(cursor) : ''));
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && items.length < (max || 5000));
    return items;
  }
  function problemsList(err) {
    if (!err.details.length) return h('p', {class: 'error', role: 'alert'}, err.message);
    return h('div', {role: 'alert'},
      h('p', {class: 'error'}, err.details.length === 1 ? '1 problem:' : err.details.length + ' problems:'),
      h('ul', {class: 'problems'}, err.details.map((p) =>
        h('li', {'data-path': p.path}, h('code', {}, p.path || '(document)'), ' ', p.message))),
      err.truncated ? h('p', {class: 'error'}, `and ${err.truncated} more`) : null);
  }
  function errorBox(err) {
    return h('p', {class: 'error', role: 'alert'}, err instanceof ApiError ? err.message : String(err));
  }

  // ---------------------------------------------------------------------------------------------
  // Live updates: /v1/stream read with fetch (EventSource cannot send the Authorization header),
  // parsed as Server-Sent Events. While the stream is down, `onChange` is polled every 2 s.
  // ---------------------------------------------------------------------------------------------

  function follow(query, onEvent) {
    let stopped = false;
    let connected = false;
    let ctrl = null;
    const poll = setInterval(() => { if (!connected && !stopped) onEvent('poll', null); }, 2000);
    const setLive = (on) => {
      connected = on;
      liveEl.textContent = on ? 'live' : 'polling';
      liveEl.classList.toggle('on', on);
    };
    (async () => {
      let failures = 0;
      while (!stopped) {
        ctrl = new AbortController();
        try {
          const resp = await fetch('/v1/stream' + query, {
            headers: {Authorization: 'Bearer ' + token()}, signal: ctrl.signal, cache: 'no-store'});
          if (resp.status === 401) { signOut('The admin token was not accepted: sign in again.'); return; }
          if (!resp.ok || !resp.body) throw new Error('stream answered ' + resp.status);
          setLive(true);
          failures = 0;
          // Whatever happened while disconnected.
          onEvent('poll', null);
          const reader = resp.body.getReader();
          const decoder = new TextDecoder();
          let buf = '';
          for (;;) {
            const {value, done} = await reader.read();
            if (done) break;
            buf += decoder.decode(value, {stream: true}).replace(/\r\n?/g, '\n');
            let cut;
            while ((cut = buf.indexOf('\n\n')) >= 0) {
              const frame = buf.slice(0, cut);
              buf = buf.slice(cut + 2);
              let event = 'message';
              const data = [];
              for (const line of frame.split('\n')) {
                if (line.startsWith('event:')) event = line.slice(6).trim();
                else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
              }
              if (!data.length) continue;
              let parsed = null;
              try { parsed = JSON.parse(data.join('\n')); } catch (_) { continue; }
              onEvent(event, parsed);
            }
          }
        } catch (_) {
          // Aborted (the view changed), or the network failed: poll, then reconnect.
        }
        if (stopped) return;
        setLive(false);
        failures += 1;
        await sleep(Math.min(1000 * failures, 10000));
      }
    })();
    return () => {
      stopped = true;
      clearInterval(poll);
      if (ctrl) ctrl.abort();
      liveEl.textContent = '';
      liveEl.classList.remove('on');
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Routing
  // ---------------------------------------------------------------------------------------------

  let cleanups = [];
  function onLeave(fn) { cleanups.push(fn); }
  const views = {
    journeys: journeysView,
    instances: instanceView,
    profiles: profilesView,
    deliveries: deliveriesView,
    destinations: destinationsView,
    editor: editorView,
  };
  let renderSeq = 0;
  async function route() {
    for (const fn of cleanups) { try { fn(); } catch (_) { /* leaving anyway */ } }
    cleanups = [];
    if (!token()) { loginView(); return; }
    nav.hidden = false;
    signoutBtn.hidden = false;
    const p = params();
    const view = views[p.segments[0]] || journeysView;
    for (const a of nav.querySelectorAll('a')) {
      if (a.getAttribute('href') === '#/' + (views[p.segments[0]] ? p.segments[0] : 'journeys')) {
        a.setAttribute('aria-current', 'page');
      } else a.removeAttribute('aria-current');
    }
    const seq = ++renderSeq;
    const root = h('div', {});
    main.replaceChildren(root);
    try {
      await view(root, p, () => seq === renderSeq);
    } catch (err) {
      if (seq === renderSeq && token()) root.append(errorBox(err));
    }
  }
  /** After a view is drawn, focus its heading, so keyboard and screen reader users start there. */
  function focusHeading(root) {
    const h1 = root.querySelector('h1');
    if (h1 && !main.contains(document.activeElement)) {
      h1.setAttribute('tabindex', '-1');
      h1.focus({preventScroll: true});
    }
  }
  /** Redraws part of a view with `draw`, keeping keyboard focus on the same control if it is
   * drawn again (found by the row's data attribute and the control's text). */
  function keepFocus(container, draw) {
    const active = document.activeElement;
    let key = null;
    if (active && container.contains(active)) {
      const row = active.closest('[data-journey],[data-delivery],[data-destination]');
      if (row) {
        const attr = ['data-journey', 'data-delivery', 'data-destination'].find((a) => row.hasAttribute(a));
        key = {attr, value: row.getAttribute(attr), tag: active.tagName, text: active.textContent};
      }
    }
    draw();
    if (!key) return;
    for (const row of container.querySelectorAll(`[${key.attr}]`)) {
      if (row.getAttribute(key.attr) !== key.value) continue;
      for (const el of row.querySelectorAll(key.tag)) {
        if (el.textContent === key.text) { el.focus({preventScroll: true}); return; }
      }
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    for (const fn of cleanups) { try { fn(); } catch (_) { /* leaving anyway */ } }
    cleanups = [];
    loginView(message);
  }
  signoutBtn.addEventListener('click', () => signOut('Signed out.'));

  function loginView(message) {
    nav.hidden = true;
    signoutBtn.hidden = true;
    const input = h('input', {id: 'token', type: 'password', name: 'token', autocomplete: 'off',
      required: true, spellcheck: 'false'});
    const status = h('p', {role: 'status', class: message ? 'error' : 'muted'},
      message || 'The admin token was printed when journeyd first started. It is kept in this tab only.');
    const form = h('form', {class: 'panel login', onsubmit: async (ev) => {
      ev.preventDefault();
      const tok = input.value.trim();
      if (!tok) return;
      status.className = 'muted';
      status.textContent = 'Checking…';
      try {
        await api('GET', '/v1/journeys?limit=1', undefined, tok);
        sessionStorage.setItem(TOKEN_KEY, tok);
        route();
      } catch (err) {
        status.className = 'error';
        status.textContent = err.status === 401 ? 'That admin token was not accepted.' : err.message;
        input.focus();
      }
    }},
    h('h1', {}, 'Sign in'),
    h('label', {for: 'token'}, 'Admin token', input),
    h('button', {type: 'submit'}, 'Sign in'),
    status);
    main.replaceChildren(form);
    input.focus();
    ready('login', 'Sign in');
  }

  // ---------------------------------------------------------------------------------------------
  // Journeys
  // ---------------------------------------------------------------------------------------------

  async function journeysView(root, p, current) {
    if (p.segments[1]) return journeyView(root, p, current);
    const body = h('div', {});
    root.append(h('div', {class: 'head'},
      h('div', {}, h('h1', {}, 'Journeys'), h('p', {class: 'sub'}, 'Counts are of all versions, live.')),
      h('div', {class: 'actions'}, h('a', {class: 'button', href: '#/editor'}, 'New journey'))),
    body);
    const COUNTS = ['entered', 'active', 'completed', 'exited'];
    let shown = '';
    const render = (items) => {
      if (!items.length) {
        body.replaceChildren(h('p', {class: 'muted'}, 'No journeys yet: write one in the ',
          h('a', {href: '#/editor'}, 'Editor'), '.'));
        shown = '';
        return;
      }
      const ids = items.map((j) => j.id).join('\n');
      if (ids === shown) {
        // The same journeys: update their cells in place (focus and scroll stay).
        for (const j of items) {
          const row = body.querySelector(`tr[data-journey="${CSS.escape(j.id)}"]`);
          if (!row) continue;
          const status = row.querySelector('[data-status]');
          if (status.dataset.status !== j.status) {
            status.dataset.status = j.status;
            status.replaceChildren(badge(j.status));
          }
          row.querySelector('[data-version]').textContent = 'v' + j.version;
          for (const k of COUNTS) {
            const text = fmtNum((j.counts || {})[k]);
            const cell = row.querySelector(`[data-count="${k}"]`);
            if (cell.textContent !== text) cell.textContent = text;
          }
        }
        return;
      }
      shown = ids;
      const tbody = items.map((j) => h('tr', {'data-journey': j.id},
        h('td', {}, h('a', {href: '#/journeys/' + enc(j.id)}, j.name || j.id),
          j.name && j.name !== j.id ? h('div', {class: 'muted mono'}, j.id) : null),
        h('td', {'data-status': j.status}, badge(j.status)),
        h('td', {class: 'num', 'data-version': ''}, 'v' + j.version),
        COUNTS.map((k) => h('td', {class: 'num', 'data-count': k}, fmtNum((j.counts || {})[k])))));
      keepFocus(body, () => body.replaceChildren(table(['Journey', 'Status', ['Version', 'num'],
        ['Entered', 'num'], ['Active', 'num'], ['Completed', 'num'], ['Exited', 'num']], tbody)));
    };
    render(await all('/v1/journeys'));
    if (!current()) return;
    ready('journeys', 'Journeys');
    focusHeading(root);
    const refresh = throttle(async () => {
      const items = await all('/v1/journeys');
      if (current()) render(items);
    }, 300);
    onLeave(follow('', (kind) => { if (kind === 'transition' || kind === 'poll') refresh(); }));
  }

  /** Draws a laid-out journey (from the server's layout) and returns how to show its counts. */
  function graph(layout, onStep) {
    const wrap = h('div', {class: 'graph-wrap'});
    const g = h('div', {class: 'graph', role: 'group', 'aria-label': 'Steps of the journey'});
    g.style.width = layout.width + 'px';
    g.style.height = layout.height + 'px';
    const svg = h('svg', {width: layout.width, height: layout.height, 'aria-hidden': 'true',
      viewBox: `0 0 ${layout.width} ${layout.height}`});
    const markerId = 'arrow-' + Math.random().toString(36).slice(2);
    svg.append(h('defs', {}, h('marker', {id: markerId, viewBox: '0 0 10 10', refX: '9', refY: '5',
      markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse'},
    h('path', {d: 'M0,0 L10,5 L0,10 z', class: 'arrow'}))));
    for (const e of layout.edges) {
      const pts = e.points;
      let d = `M${pts[0][0]},${pts[0][1]}`;
      for (let i = 1; i < pts.length; i++) {
        const [x0, y0] = pts[i - 1];
        const [x1, y1] = pts[i];
        if (x0 === x1) d += ` L${x1},${y1}`;
        else {
          const my = (y0 + y1) / 2;
          d += ` C${x0},${my} ${x1},${my} ${x1},${y1}`;
        }
      }
      svg.append(h('path', {d, class: 'edge ' + e.kind, 'marker-end': `url(#${markerId})`}));
    }
    g.append(svg);
    const place = (el, r) => {
      el.style.left = r.x + 'px';
      el.style.top = r.y + 'px';
      el.style.width = r.w + 'px';
      el.style.height = r.h + 'px';
      return el;
    };
    const stepEls = new Map();
    const special = {};
    for (const n of layout.nodes) {
      if (n.step) {
        const reached = h('b', {class: 'reached'}, '0');
        const active = h('b', {class: 'active'}, '0');
        const loops = n.loops.map((l) => {
          const count = h('b', {'data-branch': l}, '0');
          return [l, count, h('span', {class: 'loop', title: 'restarts the hold'}, '↻ ' + l + ' ', count)];
        });
        const el = h(onStep ? 'button' : 'div', {class: 'node ' + n.kind, 'data-step': n.id,
          type: onStep ? 'button' : null, title: `${n.title} (${n.detail})`,
          onclick: onStep ? () => onStep(n.id) : null},
        h('span', {class: 'title'}, n.title),
        h('span', {class: 'detail'}, n.detail),
        h('span', {class: 'counts'}, 'reached ', reached, ' · active ', active),
        loops.map((l) => l[2]));
        stepEls.set(n.id, {el, reached, active, loops, title: n.title, detail: n.detail});
        g.append(place(el, n.rect));
      } else if (n.kind === 'end') {
        g.append(place(h('div', {class: 'node end', 'data-node': n.id}, 'end'), n.rect));
      } else {
        const a = h('b', {}, '0');
        const b = h('b', {}, '0');
        const counts = n.kind === 'entry'
          ? h('span', {class: 'counts'}, 'entered ', a, ' · active ', b)
          : h('span', {class: 'counts'}, 'exited ', a);
        special[n.kind] = {a, b};
        g.append(place(h('div', {class: 'node ' + n.kind, 'data-node': n.kind, title: n.detail},
          h('span', {class: 'title'}, n.title), h('span', {class: 'detail'}, n.detail), counts), n.rect));
      }
    }
    const labelEls = [];
    for (const e of layout.edges) {
      if (!e.label || !e.label_rect) continue;
      const count = h('b', {}, '0');
      const el = h('span', {class: 'edge-label ' + e.kind, 'data-edge-label': e.from + '>' + e.to,
        'data-branch': e.branch, title: e.label},
      h('span', {class: 'text'}, e.label), count);
      labelEls.push({e, count, el});
      g.append(place(el, e.label_rect));
    }
    wrap.append(g);
    const set = (el, n) => {
      const text = fmtNum(n || 0);
      if (el.textContent !== text) {
        el.textContent = text;
        return true;
      }
      return false;
    };
    return {
      el: wrap,
      update(stats) {
        const steps = stats.steps || {};
        const branches = stats.branches || {};
        for (const [id, s] of stepEls) {
          const st = steps[id] || {};
          let changed = set(s.reached, st.reached) | set(s.active, st.active);
          for (const [label, count] of s.loops) changed |= set(count, (branches[id] || {})[label]);
          s.el.setAttribute('aria-label', `${s.title}, ${s.detail}: reached ${st.reached || 0}, active ${st.active || 0}`);
          if (changed && s.el.dataset.shown) {
            s.el.classList.remove('bump');
            void s.el.offsetWidth;
            s.el.classList.add('bump');
          }
          s.el.dataset.shown = '1';
        }
        for (const l of labelEls) {
          const n = (branches[l.e.from] || {})[l.e.branch];
          set(l.count, n);
          l.el.setAttribute('aria-label', `${l.e.label}: ${n || 0}`);
        }
        if (special.entry) { set(special.entry.a, stats.entered); set(special.entry.b, stats.active); }
        if (special.exit) set(special.exit.a, stats.exited);
      },
      select(id) {
        for (const [sid, s] of stepEls) s.el.classList.toggle('selected', sid === id);
      },
      /** Scrolls a graph wider than its frame so that the entry is in view. */
      center() {
        const entry = layout.nodes.find((n) => n.kind === 'entry');
        if (entry && wrap.scrollWidth > wrap.clientWidth) {
          wrap.scrollLeft = Math.max(0, entry.rect.x + entry.rect.w / 2 - wrap.clientWidth / 2);
        }
      },
    };
  }

  async function journeyView(root, p, current) {
    const id = p.segments[1];
    const version = p.query.get('version') || '';
    const vq = version ? '?version=' + enc(version) : '';
    // The first page of instances comes with the rest, filtered as the address says.
    const firstQuery = new URLSearchParams();
    for (const k of ['state', 'step', 'version']) if (p.query.get(k)) firstQuery.set(k, p.query.get(k));
    firstQuery.set('limit', '50');
    const [detail, layout, stats, firstPage] = await Promise.all([
      get('/v1/journeys/' + enc(id)),
      get('/v1/journeys/' + enc(id) + '/layout' + vq),
      get('/v1/journeys/' + enc(id) + '/stats' + vq),
      get(`/v1/journeys/${enc(id)}/instances?${firstQuery}`).catch(() => null),
    ]);
    if (!current()) return;
    const status = h('span', {}, badge(detail.status));
    const message = h('p', {role: 'status', class: 'notice'});
    const pause = h('button', {type: 'button', onclick: () => setStatus('pause')}, 'Pause');
    const resume = h('button', {type: 'button', onclick: () => setStatus('resume')}, 'Resume');
    const archive = h('button', {type: 'button', class: 'danger', onclick: () => dialog.showModal()}, 'Archive');
    const showStatus = (s) => {
      status.replaceChildren(badge(s));
      pause.hidden = s !== 'active';
      resume.hidden = s !== 'paused';
      archive.hidden = s === 'archived';
    };
    async function setStatus(action) {
      message.textContent = '';
      try {
        const r = action === 'archive'
          ? await api('DELETE', '/v1/journeys/' + enc(id))
          : await api('POST', `/v1/journeys/${enc(id)}/${action}`);
        showStatus(r.status);
        message.className = 'notice';
        message.textContent = action === 'archive'
          ? `Archived; ${r.instances_ended} active instance(s) ended.`
          : `Journey ${r.status === 'paused' ? 'paused: no new entries' : 'resumed'}.`;
        refresh();
      } catch (err) {
        message.className = 'error';
        message.textContent = err.message;
      }
    }
    const dialog = h('dialog', {'aria-labelledby': 'archive-title'},
      h('h2', {id: 'archive-title'}, 'Archive this journey?'),
      h('p', {}, 'No new entries, and its active instances end now with no further sends.'),
      h('div', {class: 'actions'},
        h('button', {type: 'button', class: 'quiet', onclick: () => dialog.close('cancel')}, 'Cancel'),
        h('button', {type: 'button', class: 'danger', onclick: () => dialog.close('archive')}, 'Archive journey')));
    dialog.addEventListener('close', () => { if (dialog.returnValue === 'archive') setStatus('archive'); });

    const picker = h('select', {id: 'version', onchange: () => {
      const q = new URLSearchParams();
      if (picker.value) q.set('version', picker.value);
      go('#/journeys/' + enc(id) + (picker.value ? '?' + q : ''));
    }},
    h('option', {value: ''}, `All versions (newest v${detail.version} drawn)`),
    detail.versions.slice().reverse().map((v) =>
      h('option', {value: String(v.version), selected: String(v.version) === version},
        `v${v.version} · ${fmtTime(v.created_at)}`)));
    const totals = h('div', {class: 'totals', 'aria-label': 'Totals'});
    const showTotals = (s) => totals.replaceChildren(...['entered', 'active', 'completed', 'exited', 'skipped']
      .map((k) => h('div', {'data-total': k}, h('b', {}, fmtNum(s[k])), h('span', {}, k))));

    const instances = h('section', {'aria-labelledby': 'instances-title'});
    const g = graph(layout, (step) => {
      stepFilter.value = step;
      g.select(step);
      loadInstances();
      instances.scrollIntoView({block: 'start'});
    });
    root.append(
      h('div', {class: 'head'},
        h('div', {},
          h('h1', {}, detail.name || id),
          h('p', {class: 'sub'}, h('span', {class: 'mono'}, id), ' · ', status, ' · newest v' + detail.version)),
        h('div', {class: 'actions'}, pause, resume, archive,
          h('a', {class: 'button quiet', href: '#/editor/' + enc(id)}, 'Edit'))),
      message, dialog,
      h('div', {class: 'filters'}, h('label', {for: 'version'}, 'Version', picker)),
      totals, g.el, instances);
    showStatus(detail.status);
    showTotals(stats);
    g.update(stats);
    g.center();

    // Instances, filterable by state and step.
    const stateFilter = h('select', {id: 'state-filter', onchange: () => loadInstances()},
      ['', 'active', 'completed', 'exited', 'archived'].map((s) => h('option', {value: s}, s || 'any')));
    const stepFilter = h('select', {id: 'step-filter', onchange: () => { g.select(stepFilter.value); loadInstances(); }},
      h('option', {value: ''}, 'any'),
      layout.nodes.filter((n) => n.step).map((n) => h('option', {value: n.id}, n.id)));
    stateFilter.value = p.query.get('state') || '';
    stepFilter.value = p.query.get('step') || '';
    const list = h('div', {});
    instances.append(h('h2', {id: 'instances-title'}, 'Instances'),
      h('div', {class: 'filters'},
        h('label', {for: 'state-filter'}, 'State', stateFilter),
        h('label', {for: 'step-filter'}, 'Step', stepFilter),
        h('button', {type: 'button', class: 'quiet', onclick: () => loadInstances()}, 'Refresh')),
      list);
    let cursor = null;
    async function loadInstances(more, prefetched) {
      const q = new URLSearchParams();
      if (stateFilter.value) q.set('state', stateFilter.value);
      if (stepFilter.value) q.set('step', stepFilter.value);
      if (version) q.set('version', version);
      if (!more) setQuery(q);
      q.set('limit', '50');
      if (more && cursor) q.set('cursor', cursor);
      try {
        const page = prefetched || await get(`/v1/journeys/${enc(id)}/instances?${q}`);
        cursor = page.next_cursor;
        const rows = page.items.map((i) => h('tr', {},
          h('td', {}, h('a', {href: '#/instances/' + i.id}, '#' + i.id)),
          h('td', {}, h('a', {href: '#/profiles/' + enc(i.profile)}, i.profile)),
          h('td', {class: 'num'}, 'v' + i.version),
          h('td', {}, badge(i.state)),
          h('td', {class: 'mono'}, i.step || ''),
          h('td', {class: 'hide-narrow'}, fmtTime(i.entered_at)),
          h('td', {class: 'hide-narrow'}, fmtTime(i.updated_at))));
        showPage(list, more, ['Instance', 'Profile', ['Version', 'num'], 'State', 'Step',
          ['Entered', 'hide-narrow'], ['Updated', 'hide-narrow']], rows, 'No instances match.',
          cursor, () => loadInstances(true));
      } catch (err) {
        list.replaceChildren(errorBox(err));
      }
    }
    if (stepFilter.value) g.select(stepFilter.value);
    await loadInstances(false, firstPage);
    if (!current()) return;
    ready('journey', detail.name || id);
    focusHeading(root);

    const refresh = throttle(async () => {
      try {
        const s = await get('/v1/journeys/' + enc(id) + '/stats' + vq);
        if (!current()) return;
        showTotals(s);
        g.update(s);
      } catch (_) { /* the next event or poll tries again */ }
    }, 250);
    onLeave(follow('?journey=' + enc(id), (kind) => {
      if (kind === 'transition' || kind === 'poll') refresh();
    }));
  }

  async function instanceView(root, p, current) {
    const id = p.segments[1];
    const i = await get('/v1/instances/' + enc(id));
    if (!current()) return;
    root.append(
      h('div', {class: 'head'}, h('div', {},
        h('h1', {}, 'Instance #' + i.id),
        h('p', {class: 'sub'}, 'of ', h('a', {href: '#/journeys/' + enc(i.journey)}, i.journey),
          ' v' + i.version, ' · profile ', h('a', {href: '#/profiles/' + enc(i.profile)}, i.profile)))),
      h('div', {class: 'panel'}, h('dl', {class: 'kv'},
        h('dt', {}, 'State'), h('dd', {}, badge(i.state)),
        h('dt', {}, 'Step'), h('dd', {class: 'mono'}, i.step || '—'),
        h('dt', {}, 'Entered'), h('dd', {}, fmtTime(i.entered_at)),
        h('dt', {}, 'Updated'), h('dd', {}, fmtTime(i.updated_at)),
        i.due_at ? [h('dt', {}, 'Timer due'), h('dd', {}, fmtTime(i.due_at))] : null,
        i.unique_value !== undefined ? [h('dt', {}, 'Unique by'), h('dd', {class: 'mono'}, json(i.unique_value))] : null,
        h('dt', {}, 'Timer resets'), h('dd', {}, String(i.resets || 0)))),
      h('h2', {}, 'Context'), h('pre', {}, json(i.context)),
      h('h2', {}, 'History'),
      table(['At', 'What', 'Step', 'Detail'], (i.history || []).map((t) => h('tr', {},
        h('td', {}, fmtTime(t.at)), h('td', {}, t.what), h('td', {class: 'mono'}, t.step || ''),
        h('td', {class: 'mono'}, t.detail || '')))));
    ready('instance', 'Instance #' + i.id);
    focusHeading(root);
  }

  // ---------------------------------------------------------------------------------------------
  // Profiles
  // ---------------------------------------------------------------------------------------------

  async function profilesView(root, p, current) {
    if (p.segments[1]) return profileView(root, p, current);
    const prefix = h('input', {id: 'prefix', type: 'search', value: p.query.get('prefix') || '',
      autocomplete: 'off', spellcheck: 'false'});
    const results = h('div', {});
    const search = async () => {
      const q = new URLSearchParams();
      if (prefix.value) q.set('prefix', prefix.value);
      setQuery(q);
      q.set('limit', '100');
      const page = await get('/v1/profiles?' + q);
      fill(results, table(['Profile', 'Linked ids', ['Updated', 'hide-narrow']],
        page.items.map((pr) => h('tr', {},
          h('td', {}, h('a', {href: '#/profiles/' + enc(pr.id)}, pr.id)),
          h('td', {class: 'mono'}, (pr.ids || []).filter((x) => x !== pr.id).join(', ')),
          h('td', {class: 'hide-narrow'}, fmtTime(pr.updated_at)))), 'No profile starts with that.'),
      page.next_cursor ? h('p', {class: 'muted'}, 'More match: narrow the prefix.') : null);
    };
    root.append(h('div', {class: 'head'}, h('h1', {}, 'Profiles')),
      h('form', {class: 'inline', role: 'search', onsubmit: (ev) => { ev.preventDefault(); search().catch((e) => results.replaceChildren(errorBox(e))); }},
        h('label', {for: 'prefix'}, 'Profile id prefix', prefix),
        h('button', {type: 'submit'}, 'Search')),
      results);
    await search();
    if (!current()) return;
    ready('profiles', 'Profiles');
    focusHeading(root);
  }

  async function profileView(root, p, current) {
    const id = p.segments[1];
    const [pr, first] = await Promise.all([
      get('/v1/profiles/' + enc(id)),
      get('/v1/profiles/' + enc(id) + '/timeline?limit=100'),
    ]);
    if (!current()) return;
    const timeline = h('ol', {class: 'timeline'});
    const more = h('p', {});
    const item = (t) => {
      let summary;
      if (t.kind === 'event') {
        const m = t.message || {};
        summary = [h('b', {}, m.type === 'track' ? m.event : m.type), ' ', h('span', {class: 'muted'}, fmtTime(m.timestamp || m.receivedAt))];
      } else if (t.kind === 'merged') {
        summary = [h('b', {}, 'merged'), ` ${t.from} into ${t.into} `, h('span', {class: 'muted'}, fmtTime(t.at))];
      } else {
        summary = [h('b', {}, t.what), ' ', h('a', {href: '#/journeys/' + enc(t.journey)}, t.journey),
          t.step ? [' at ', h('span', {class: 'mono'}, t.step)] : null,
          t.detail ? [' → ', h('span', {class: 'mono'}, t.detail)] : null, ' ',
          h('a', {href: '#/instances/' + t.instance}, '#' + t.instance), ' ',
          h('span', {class: 'muted'}, fmtTime(t.at))];
      }
      return h('li', {}, h('details', {}, h('summary', {}, summary), h('pre', {}, json(t.kind === 'event' ? t.message : t))));
    };
    const addPage = (page) => {
      timeline.append(...page.items.map(item));
      more.replaceChildren(page.next_cursor ? h('button', {type: 'button', class: 'quiet', onclick: async () => {
        addPage(await get(`/v1/profiles/${enc(id)}/timeline?limit=100&cursor=${enc(page.next_cursor)}`));
      }}, 'Load more') : '');
    };
    root.append(
      h('div', {class: 'head'}, h('div', {}, h('h1', {}, 'Profile ' + pr.id),
        h('p', {class: 'sub'}, 'Created ' + fmtTime(pr.created_at) + ' · updated ' + fmtTime(pr.updated_at)))),
      h('h2', {}, 'Linked ids'), h('p', {class: 'mono'}, (pr.ids || []).join(', ') || '—'),
      h('h2', {}, 'Traits'), h('pre', {}, json(pr.traits || {})),
      h('h2', {}, 'Instances'),
      table(['Instance', 'Journey', 'State', 'Step', ['Entered', 'hide-narrow']], (pr.instances || []).map((i) => h('tr', {},
        h('td', {}, h('a', {href: '#/instances/' + i.id}, '#' + i.id)),
        h('td', {}, h('a', {href: '#/journeys/' + enc(i.journey)}, i.journey), ' v' + i.version),
        h('td', {}, badge(i.state)), h('td', {class: 'mono'}, i.step || ''),
        h('td', {class: 'hide-narrow'}, fmtTime(i.entered_at)))), 'No instances.'),
      h('h2', {}, 'Timeline'), timeline, more);
    addPage(first);
    ready('profile', 'Profile ' + pr.id);
    focusHeading(root);
  }

  // ---------------------------------------------------------------------------------------------
  // Deliveries
  // ---------------------------------------------------------------------------------------------

  async function deliveriesView(root, p, current) {
    const destinations = await all('/v1/destinations').catch(() => []);
    if (!current()) return;
    const status = h('select', {id: 'status-filter', onchange: () => load()},
      ['', 'pending', 'succeeded', 'failed', 'capped'].map((s) => h('option', {value: s}, s || 'any')));
    const destination = h('select', {id: 'destination-filter', onchange: () => load()},
      h('option', {value: ''}, 'any'), destinations.map((d) => h('option', {value: d.id}, d.id)));
    status.value = p.query.get('status') || '';
    destination.value = p.query.get('destination') || '';
    const message = h('p', {role: 'status', class: 'notice'});
    const list = h('div', {});
    const retryAll = h('button', {type: 'button', onclick: async () => {
      const q = new URLSearchParams({status: 'failed'});
      if (destination.value) q.set('destination', destination.value);
      try {
        const r = await api('POST', '/v1/deliveries/retry?' + q);
        message.className = 'notice';
        message.textContent = `${r.retried} failed deliver${r.retried === 1 ? 'y' : 'ies'} queued again.`;
        load();
      } catch (err) {
        message.className = 'error';
        message.textContent = err.message;
      }
    }}, 'Retry all failed');
    let cursor = null;
    async function load(more) {
      const q = new URLSearchParams();
      if (status.value) q.set('status', status.value);
      if (destination.value) q.set('destination', destination.value);
      if (!more) setQuery(q);
      q.set('limit', '50');
      if (more && cursor) q.set('cursor', cursor);
      const page = await get('/v1/deliveries?' + q);
      if (!current()) return;
      cursor = page.next_cursor;
      const rows = page.items.map((d) => {
        const retry = d.status === 'failed'
          ? h('button', {type: 'button', 'aria-describedby': 'd-' + d.id, onclick: async (ev) => {
            ev.target.disabled = true;
            try {
              const r = await api('POST', '/v1/deliveries/' + enc(d.id) + '/retry');
              message.className = 'notice';
              message.textContent = `Delivery ${d.id} is ${r.status} again.`;
              load();
            } catch (err) {
              ev.target.disabled = false;
              message.className = 'error';
              message.textContent = err.message;
            }
          }}, 'Retry')
          : null;
        return h('tr', {'data-delivery': d.id, 'data-status': d.status},
          h('td', {}, badge(d.status)),
          h('td', {}, d.destination),
          h('td', {}, d.journey ? h('a', {href: '#/journeys/' + enc(d.journey)}, d.journey) : '',
            d.step ? h('div', {class: 'mono muted'}, d.step) : null),
          h('td', {class: 'num'}, String(d.attempts)),
          h('td', {}, d.last_status ? 'HTTP ' + d.last_status : '', d.last_error ? h('div', {class: 'error'}, d.last_error) : null),
          h('td', {class: 'hide-narrow'}, fmtTime(d.created_at)),
          h('td', {}, h('details', {}, h('summary', {id: 'd-' + d.id}, 'Payload'),
            h('p', {class: 'mono muted'}, d.id),
            d.profile ? h('p', {}, 'Profile ', h('a', {href: '#/profiles/' + enc(d.profile)}, d.profile)) : null,
            h('pre', {}, json(d.payload)))),
          h('td', {}, retry));
      });
      keepFocus(list, () => showPage(list, more, ['Status', 'Destination', 'Journey',
        ['Attempts', 'num'], 'Last error', ['Created', 'hide-narrow'], 'Payload', ''], rows,
        'No deliveries match.', cursor, () => load(true)));
    }
    root.append(h('div', {class: 'head'}, h('h1', {}, 'Deliveries'), h('div', {class: 'actions'}, retryAll)),
      h('div', {class: 'filters'},
        h('label', {for: 'status-filter'}, 'Status', status),
        h('label', {for: 'destination-filter'}, 'Destination', destination)),
      message, list);
    await load();
    if (!current()) return;
    ready('deliveries', 'Deliveries');
    focusHeading(root);
    const refresh = throttle(() => load().catch(() => {}), 500);
    onLeave(follow('', (kind) => { if (kind === 'delivery' || kind === 'poll') refresh(); }));
  }

  // ---------------------------------------------------------------------------------------------
  // Destinations
  // ---------------------------------------------------------------------------------------------

  async function destinationsView(root, p, current) {
    const items = await all('/v1/destinations');
    if (!current()) return;
    const message = h('div', {role: 'status'});
    const idInput = h('input', {id: 'dest-id', autocomplete: 'off', spellcheck: 'false', required: true});
    const text = h('textarea', {id: 'dest-json', rows: '9', spellcheck: 'false'});
    const editing = h('h2', {id: 'dest-form-title'}, 'New destination');
    const editorFor = (d) => {
      editing.textContent = d ? 'Edit ' + d.id : 'New destination';
      idInput.value = d ? d.id : '';
      idInput.readOnly = !!d;
      const doc = d ? Object.fromEntries(Object.entries(d).filter(([k]) =>
        !['id', 'created_at', 'updated_at'].includes(k) && !k.endsWith('_set'))) : {type: 'webhook', url: '', max_attempts: 8};
      if (d) {
        for (const k of ['secret', 'write_key']) if (d[k + '_set']) doc[k] = '********';
      }
      text.value = json(doc);
      idInput.focus();
    };
    const test = async (id) => {
      message.replaceChildren(h('p', {class: 'muted'}, `Sending a test payload to ${id}…`));
      try {
        const r = await api('POST', '/v1/destinations/' + enc(id) + '/test');
        message.replaceChildren(h('div', {class: 'panel', 'data-test-result': id},
          h('p', {class: r.status && r.status < 300 ? 'notice' : 'error'},
            `Test send to ${id}: ` + (r.status ? 'HTTP ' + r.status : r.error) + ` in ${r.took_ms} ms`),
          r.body ? [h('p', {class: 'muted'}, 'Answer (first 4 KB):'), h('pre', {}, r.body)] : null));
      } catch (err) {
        message.replaceChildren(errorBox(err));
      }
    };
    const rows = items.map((d) => h('tr', {'data-destination': d.id},
      h('td', {class: 'mono'}, d.id),
      h('td', {}, d.type),
      h('td', {class: 'mono'}, d.url || ''),
      h('td', {}, h('div', {class: 'actions'},
        h('button', {type: 'button', class: 'quiet', 'aria-describedby': 'dn-' + d.id, onclick: () => editorFor(d)}, 'Edit'),
        h('button', {type: 'button', 'aria-describedby': 'dn-' + d.id, onclick: () => test(d.id)}, 'Test'),
        h('span', {id: 'dn-' + d.id, hidden: true}, d.id)))));
    const form = h('form', {class: 'panel', 'aria-labelledby': 'dest-form-title', onsubmit: async (ev) => {
      ev.preventDefault();
      let doc;
      try { doc = JSON.parse(text.value); } catch (e) {
        message.replaceChildren(h('p', {class: 'error', role: 'alert'}, 'Settings are not valid JSON: ' + e.message));
        return;
      }
      try {
        await api('PUT', '/v1/destinations/' + enc(idInput.value.trim()), doc);
        route();
      } catch (err) {
        message.replaceChildren(err.details.length ? problemsList(err) : errorBox(err));
      }
    }},
    editing,
    h('label', {for: 'dest-id', class: 'wide'}, 'Destination id', idInput),
    h('label', {for: 'dest-json', class: 'wide'}, 'Settings (JSON)', text),
    h('p', {class: 'muted'}, 'Header values, the secret and URL passwords are write-only: "********" keeps what is stored.'),
    h('div', {class: 'actions'},
      h('button', {type: 'submit'}, 'Save'),
      h('button', {type: 'button', class: 'quiet', onclick: () => editorFor(null)}, 'Clear'),
      h('button', {type: 'button', class: 'quiet', onclick: async () => {
        const id = idInput.value.trim();
        if (!id) return;
        try {
          await api('DELETE', '/v1/destinations/' + enc(id));
          route();
        } catch (err) { message.replaceChildren(errorBox(err)); }
      }}, 'Delete')));
    root.append(h('div', {class: 'head'}, h('h1', {}, 'Destinations')),
      table(['Id', 'Type', 'URL', ''], rows, 'No destinations yet.'), message, form);
    editorFor(null);
    ready('destinations', 'Destinations');
    focusHeading(root);
  }

  // ---------------------------------------------------------------------------------------------
  // Editor: validate, simulate, publish
  // ---------------------------------------------------------------------------------------------

  const TEMPLATE = {
    id: 'cart-abandonment',
    name: 'Cart abandonment',
    entry: {event: 'Product_Added', where: [{property: 'cart_ID', exists: true}], unique_by: 'cart_ID'},
    steps: [
      {id: 'wait_for_order', type: 'hold_until', max_hold: '2h',
        branches: [{name: 'ordered', event: 'Order_Confirmation', next: null}], on_timeout: 'remind'},
      {id: 'remind', type: 'send', destination: 'crm', event_name: 'Cart Reminder', traits: ['email'], next: null},
    ],
  };
  const TEMPLATE_EVENTS = [
    {at: '+0s', message: {type: 'identify', userId: 'u1', traits: {email: 'u1@example.com'}}},
    {at: '+0s', message: {type: 'track', userId: 'u1', event: 'Product_Added', properties: {cart_ID: 'c1'}}},
  ].map((e) => JSON.stringify(e)).join('\n');
  const draft = {journey: null, events: null};

  /** Reads an events script: JSON lines of {"at", "message"}, or one JSON array. */
  function parseEvents(text) {
    const t = text.trim();
    if (!t) return [];
    if (t.startsWith('[')) return JSON.parse(t);
    return t.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('//')).map((l, n) => {
      try { return JSON.parse(l); } catch (e) { throw new Error(`line ${n + 1} is not JSON: ${e.message}`); }
    });
  }

  async function editorView(root, p, current) {
    const id = p.segments[1];
    const journeyText = h('textarea', {id: 'journey-text', spellcheck: 'false', autocomplete: 'off'});
    const eventsText = h('textarea', {id: 'events-text', spellcheck: 'false', autocomplete: 'off'});
    const start = h('input', {id: 'sim-start', placeholder: '2026-11-28T09:00:00Z', autocomplete: 'off', spellcheck: 'false'});
    const file = h('input', {id: 'journey-file', type: 'file', accept: '.json,application/json'});
    const eventsFile = h('input', {id: 'events-file', type: 'file', accept: '.jsonl,.json,.txt'});
    const result = h('div', {id: 'editor-result', 'aria-live': 'polite'});
    const preview = h('div', {});
    const simOut = h('div', {id: 'simulation', 'aria-live': 'polite'});
    if (id) {
      const d = await get('/v1/journeys/' + enc(id));
      if (!current()) return;
      journeyText.value = json(d.definition);
    } else journeyText.value = draft.journey || json(TEMPLATE);
    eventsText.value = draft.events || TEMPLATE_EVENTS;
    journeyText.addEventListener('input', () => { draft.journey = journeyText.value; });
    eventsText.addEventListener('input', () => { draft.events = eventsText.value; });
    const readFile = (input, target, key) => input.addEventListener('change', async () => {
      const f = input.files && input.files[0];
      if (!f) return;
      target.value = await f.text();
      draft[key] = target.value;
    });
    readFile(file, journeyText, 'journey');
    readFile(eventsFile, eventsText, 'events');

    const parseJourney = () => {
      try { return JSON.parse(journeyText.value); } catch (e) {
        result.replaceChildren(h('div', {role: 'alert'}, h('p', {class: 'error'}, 'The journey is not valid JSON: ' + e.message)));
        preview.replaceChildren();
        return null;
      }
    };
    const validate = async () => {
      const doc = parseJourney();
      if (!doc) return null;
      try {
        const r = await api('POST', '/v1/journeys/validate', doc);
        const what = {create: `Publishing creates journey ${r.id}.`,
          new_version: `Publishing makes a new version of ${r.id}.`,
          unchanged: `Same as the newest version of ${r.id}: publishing changes nothing.`}[r.publish];
        result.replaceChildren(h('p', {class: 'notice', 'data-valid': 'true'}, 'Valid. ' + what));
        const g = graph(r.layout);
        g.update({});
        preview.replaceChildren(h('h2', {}, 'Preview'), g.el);
        g.center();
        return doc;
      } catch (err) {
        result.replaceChildren(problemsList(err));
        preview.replaceChildren();
        return null;
      }
    };
    const simulate = async () => {
      const doc = parseJourney();
      if (!doc) return;
      let events;
      try { events = parseEvents(eventsText.value); } catch (e) {
        simOut.replaceChildren(h('p', {class: 'error', role: 'alert'}, 'Events script: ' + e.message));
        return;
      }
      const body = {journey: doc, events};
      if (start.value.trim()) body.start = start.value.trim();
      simOut.replaceChildren(h('p', {class: 'muted'}, 'Simulating…'));
      try {
        const r = await api('POST', '/v1/simulate', body);
        fill(simOut,
          h('h2', {}, `Trace (${r.trace.length})`),
          table(['At', 'What', 'Step', 'Instance', 'Detail'], r.trace.map((t) => h('tr', {'data-trace': t.what},
            h('td', {class: 'mono'}, t.at), h('td', {}, t.what), h('td', {class: 'mono'}, t.step || ''),
            h('td', {class: 'mono'}, t.instance === undefined ? '' : String(t.instance)),
            h('td', {class: 'mono'}, t.detail || t.reason || t.event || ''))), 'Nothing happened.'),
          h('h2', {}, `Payloads (${r.deliveries.length})`),
          r.deliveries.length ? r.deliveries.map((d) => h('div', {class: 'panel', 'data-payload': d.step},
            h('p', {}, h('b', {}, d.at), ` to ${d.destination} from step `, h('span', {class: 'mono'}, d.step)),
            h('pre', {}, json(d.payload)))) : h('p', {class: 'muted'}, 'No payloads would be delivered.'));
      } catch (err) {
        simOut.replaceChildren(problemsList(err));
      }
    };
    const publish = async () => {
      const doc = parseJourney();
      if (!doc) return;
      if (!doc.id || typeof doc.id !== 'string') {
        result.replaceChildren(problemsList(new ApiError(422, {error: {message: 'invalid', details: [{path: '/id', message: 'a journey needs an "id" to publish'}]}})));
        return;
      }
      try {
        const r = await api('PUT', '/v1/journeys/' + enc(doc.id), doc);
        draft.journey = null;
        result.replaceChildren(h('p', {class: 'notice', 'data-published': r.id}, `Published ${r.id} version ${r.version}. `,
          h('a', {href: '#/journeys/' + enc(r.id)}, 'Open the journey')));
      } catch (err) {
        result.replaceChildren(problemsList(err));
      }
    };
    root.append(
      h('div', {class: 'head'}, h('div', {}, h('h1', {}, id ? 'Edit ' + id : 'Editor'),
        h('p', {class: 'sub'}, 'Paste or upload a journey, validate it, simulate it with an events script, then publish.'))),
      h('div', {class: 'editor-grid'},
        h('section', {'aria-label': 'Journey'},
          h('label', {for: 'journey-text', class: 'wide'}, 'Journey (JSON)', journeyText),
          h('div', {class: 'filters'}, h('label', {for: 'journey-file'}, 'Upload journey file', file)),
          h('div', {class: 'actions'},
            h('button', {type: 'button', onclick: () => validate()}, 'Validate'),
            h('button', {type: 'button', onclick: () => publish()}, 'Publish')),
          result),
        h('section', {'aria-label': 'Simulation'},
          h('label', {for: 'events-text', class: 'wide'}, 'Events script (JSON lines of {"at", "message"})', eventsText),
          h('div', {class: 'filters'},
            h('label', {for: 'events-file'}, 'Upload events script', eventsFile),
            h('label', {for: 'sim-start'}, 'Start time (optional)', start)),
          h('div', {class: 'actions'}, h('button', {type: 'button', onclick: () => simulate()}, 'Simulate')))),
      preview, simOut);
    ready('editor', 'Editor');
    focusHeading(root);
  }

  // ---------------------------------------------------------------------------------------------

  window.addEventListener('hashchange', route);
  // Leaving the page ends its live stream: an open stream would keep one of the browser's few
  // connections to this server for as long as the old page is kept around.
  window.addEventListener('pagehide', () => {
    for (const fn of cleanups) { try { fn(); } catch (_) { /* leaving anyway */ } }
    cleanups = [];
  });
  window.addEventListener('pageshow', (ev) => { if (ev.persisted) route(); });
  route();
})();
