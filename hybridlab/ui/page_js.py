"""The page's one script, run on page load (``demo.load(js=PAGE_JS)``). It watches every
plotly plot of the page (plots are re-created by Gradio on each update) and:

* keeps the user's view: zoom / pan ranges and legend-hidden traces are remembered per plot and
  ``layout.uirevision`` and put back when an update re-creates the plot with the same
  ``uirevision`` (Gradio 6 re-mounts ``gr.Plot`` on every new value, so plotly's own
  ``uirevision`` cannot keep them); a new ``uirevision`` (other studies or axes) starts afresh;
* turns a click on a point of the Pareto plot into "open this trial": the point's
  ``customdata`` (study, trial) goes into a hidden textbox and a hidden button is pressed,
  which runs the ``open_clicked_point`` event;
* makes Enter in the YAML editors (Compose, Launch) insert a bare line break: CodeMirror's
  YAML mode carries the indentation of the line above into the next one, so typing a
  top-level key after a nested line gave an indented key, a YAML error. What you type is what
  you get (the editor's own transaction, so undo and the change event work as usual).
"""

PAGE_JS = r"""
() => {
  const views = {};      // plot key -> {ranges: {...}, hidden: {traceName: visible}}
  const keyOf = (gd) => {
    const host = gd.parentElement && gd.parentElement.closest('[id]');
    return (host ? host.id : '?') + '|' + JSON.stringify((gd.layout || {}).uirevision);
  };
  const axes = (gd) => Object.keys(gd._fullLayout || {}).filter(k => /^[xy]axis\d*$/.test(k));
  const remember = (gd) => {
    if (gd.__hlRestoring) return;
    const ranges = {};
    let zoomed = false;
    for (const ax of axes(gd)) {
      const a = gd._fullLayout[ax];
      if (a && a.range && !a.autorange) {
        ranges[ax + '.range'] = a.range.slice();
        zoomed = true;
      }
    }
    const view = views[keyOf(gd)] || {};
    view.ranges = zoomed ? ranges : null;
    views[keyOf(gd)] = view;
  };
  const rememberHidden = (gd) => {
    if (gd.__hlRestoring) return;
    const hidden = {};
    (gd.data || []).forEach(t => { if (t.name) hidden[t.name] = t.visible; });
    const view = views[keyOf(gd)] || {};
    view.hidden = hidden;
    views[keyOf(gd)] = view;
  };
  const restore = (gd) => {
    const view = views[keyOf(gd)];
    if (!view || !window.Plotly || (gd.layout || {}).uirevision === undefined) return;
    gd.__hlRestoring = true;
    const done = () => { gd.__hlRestoring = false; };
    let p = Promise.resolve();
    if (view.hidden) {
      const idx = [], vis = [];
      (gd.data || []).forEach((t, i) => {
        if (t.name && view.hidden[t.name] !== undefined && view.hidden[t.name] !== t.visible) {
          idx.push(i); vis.push(view.hidden[t.name]);
        }
      });
      if (idx.length) p = p.then(() => window.Plotly.restyle(gd, {visible: vis}, idx));
    }
    if (view.ranges) p = p.then(() => window.Plotly.relayout(gd, view.ranges));
    p.then(done, done);
  };
  const openPoint = (ev) => {
    const pt = ev && ev.points && ev.points[0];
    if (!pt || !pt.customdata) return;
    const root = document.querySelector('#pareto-click');
    const box = root && root.querySelector('textarea, input');
    let btn = document.querySelector('#pareto-click-btn');
    if (btn && btn.tagName !== 'BUTTON') btn = btn.querySelector('button');
    if (!box || !btn) return;
    box.value = JSON.stringify({study: pt.customdata[0], trial: pt.customdata[1]});
    box.dispatchEvent(new Event('input', {bubbles: true}));
    setTimeout(() => btn.click(), 200);
  };
  const YAML_EDITORS = ['#compose-editor', '#launch-editor'];
  const plainEnter = (root) => {
    if (root.__hlEnter) return;
    root.__hlEnter = true;
    root.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' || ev.shiftKey || ev.ctrlKey || ev.altKey || ev.metaKey ||
          ev.isComposing) return;
      const content = root.querySelector('.cm-content');
      const tile = content && (content.cmTile || content.cmView);
      const view = tile && tile.view;
      if (!view || typeof view.dispatch !== 'function') return;   // leave it to the editor
      ev.preventDefault();
      ev.stopPropagation();
      view.dispatch(view.state.replaceSelection('\n'), {scrollIntoView: true});
    }, true);
  };
  const bind = () => {
    YAML_EDITORS.forEach((sel) => {
      const root = document.querySelector(sel);
      if (root) plainEnter(root);
    });
    document.querySelectorAll('.js-plotly-plot').forEach((gd) => {
      if (gd.__hlBound || typeof gd.on !== 'function' || !gd._fullLayout) return;
      gd.__hlBound = true;
      restore(gd);
      gd.on('plotly_relayout', () => remember(gd));
      gd.on('plotly_restyle', () => rememberHidden(gd));
      if (gd.closest('#pareto-plot')) gd.on('plotly_click', openPoint);
    });
  };
  new MutationObserver(() => requestAnimationFrame(bind))
    .observe(document.body, {childList: true, subtree: true});
  setInterval(bind, 500);
  bind();
}
"""
