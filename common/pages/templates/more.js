// A file's "show more": the next page of photos, kept in the section's <template>s (a served page fetches them).
document.addEventListener('click', function (event) {
  var button = event.target.closest('button.more');
  if (!button || document.body.dataset.results) return;
  var grid = document.getElementById(button.dataset.grid);
  var next = grid.parentNode.querySelector('template.more');
  if (next) { grid.appendChild(next.content); next.remove(); }
  var left = grid.parentNode.querySelectorAll('template.more').length;
  if (!left) button.remove(); else button.textContent = button.dataset.label;
});

// Served pages: corrections. "not <class>" and "add to class" POST to the job's corrections; the figure says what
// was done (its copies are fixed at once, and later jobs in the folder learn from it).
function correct(box, className, belongs) {
  var said = box.querySelector('output');
  said.textContent = 'saving…';
  fetch(document.body.dataset.corrections, {method: 'POST', headers: {'Content-Type': 'application/json'},
    credentials: 'same-origin',
    body: JSON.stringify({corrections: [{name: box.dataset.name, 'class': className, belongs: belongs}]})})
    .then(answer)
    .then(function (result) {
      var figure = box.closest('figure');
      said.className = result[0] ? '' : 'error';
      if (!result[0]) { said.textContent = result[1].message || 'not saved'; return; }
      figure.dataset.corrected = (belongs ? '+' : '-') + className;
      said.textContent = belongs ? 'added to ' + className : 'marked not ' + className;
      var note = box.querySelector('small.told') || box.appendChild(document.createElement('small'));
      note.className = 'told why';
      note.textContent = told((result[1].corrections || [])[0] || {}, className, belongs);
    })
    .catch(function () { said.textContent = 'not saved: the server did not answer'; said.className = 'error'; });
}
// What a correction did, as the server says: the copy made or taken away, or why a copy stays (kept for later
// jobs either way). On a reload the photo is where its copies now are.
function told(done, className, belongs) {
  var parts = [];
  if (done.copy) parts.push('copied to ' + done.copy);
  if (done.copy_failed) parts.push('no copy: ' + done.copy_failed);
  if (done.removed && done.removed.length) parts.push('removed ' + done.removed.join(', '));
  (done.kept || []).forEach(function (name) {
    parts.push('kept ' + name + ': ' + ((done.kept_because || {})[name] || 'changed since'));
  });
  if (typeof done.copies === 'string') parts.push('copies: ' + done.copies);
  if (!belongs && !(done.removed || []).length && !(done.kept || []).length && typeof done.copies !== 'string')
    parts.push('it had no copy in ' + className);
  parts.push('later jobs here follow it');
  return parts.join('; ');
}
document.addEventListener('click', function (event) {
  var button = event.target.closest('button.not');
  if (button) correct(button.closest('.correct'), button.dataset.not, false);
});
document.addEventListener('submit', function (event) {
  var form = event.target.closest('form.add');
  if (!form) return;
  event.preventDefault();
  var value = form.elements['class'].value.trim();
  if (value) correct(form.closest('.correct'), value, true);
});

// A file's search and filters: by name or label, by section, by score. Filtering shows every page of photos first
// (the "show more" pages), so what is hidden is only what does not match. A served page asks the server instead.
var filters = document.querySelector('form.filters');
function showEverything() {
  document.querySelectorAll('button.more').forEach(function (button) {
    var grid = document.getElementById(button.dataset.grid);
    grid.parentNode.querySelectorAll('template.more').forEach(function (page) {
      grid.appendChild(page.content);
      page.remove();
    });
    button.remove();
  });
}
function applyFilters() {
  var q = filters.elements.q.value.trim().toLowerCase();
  var chosen = filters.elements.section.value;
  var least = filters.elements.score.value === '' ? null : Number(filters.elements.score.value);
  var active = q || chosen || least !== null;
  if (active) showEverything();
  var shown = 0, total = 0;
  document.querySelectorAll('section[data-class], section[data-section]').forEach(function (section) {
    var key = section.dataset.class !== undefined ? 'class:' + section.dataset.class : 'section:' + section.dataset.section;
    section.hidden = Boolean(chosen) && chosen !== key;
    var here = 0, figures = section.querySelectorAll('figure');
    figures.forEach(function (figure) {
      var text = (figure.dataset.file + ' ' + figure.dataset.labels).toLowerCase();
      var score = figure.dataset.score === undefined ? null : Number(figure.dataset.score);
      figure.hidden = Boolean(q) && text.indexOf(q) < 0 || least !== null && (score === null || score < least);
      if (!figure.hidden) here += 1;
    });
    var count = section.querySelector('small.count');
    count.textContent = active ? '(' + here + ' of ' + count.dataset.total + ')' : '(' + count.dataset.total + ')';
    if (!section.hidden) { shown += here; total += Number(count.dataset.total); }
  });
  filters.querySelector('output.shown').textContent = active ? shown + ' of ' + total + ' photos shown' : '';
  try { sessionStorage.setItem('filters:' + document.body.dataset.job, JSON.stringify(
    {q: filters.elements.q.value, section: chosen, score: filters.elements.score.value})); } catch (e) {}
}
if (filters && !document.body.dataset.results) {
  filters.addEventListener('input', applyFilters);
  filters.addEventListener('submit', function (event) { event.preventDefault(); });
  try {
    var kept = JSON.parse(sessionStorage.getItem('filters:' + document.body.dataset.job) || 'null');
    if (kept) {
      filters.elements.q.value = kept.q; filters.elements.section.value = kept.section;
      filters.elements.score.value = kept.score;
      applyFilters();
    }
  } catch (e) {}
}

// A served page of a job in progress reloads itself, keeping the filters; not while someone types or saves.
if (document.body.dataset.refresh) {
  setInterval(function () {
    var typing = document.activeElement && /INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName);
    if (!typing && !document.hidden && !document.querySelector('.correct output:not(:empty)')) location.reload();
  }, Number(document.body.dataset.refresh) * 1000);
}

// Served pages: undo the whole job (its copies, where they still hold what it wrote).
var undoButton = document.getElementById('undo-job');
if (undoButton) undoButton.addEventListener('click', function () {
  undoJob(document.body.dataset.undo, undoButton, document.getElementById('undo-said'));
});
