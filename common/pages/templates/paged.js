// A served page: each section shows its first photos; "show more" and the search fetch one page of figures at a
// time from the server (data-results), so the page's size and a keystroke's cost stay the same whatever the job's.
(function () {
  var body = document.body, url = body.dataset.results, size = Number(body.dataset.page);
  var filters = document.querySelector('form.filters');
  var turn = 0;  // the latest search: answers to earlier ones are dropped
  var typing = null;
  function active() {
    return filters.elements.q.value.trim() !== '' || filters.elements.score.value !== '';
  }
  function address(section, offset) {
    var q = filters.elements.q.value.trim(), least = filters.elements.score.value;
    return url + '?section=' + encodeURIComponent(section.dataset.key) + '&offset=' + offset + '&limit=' + size +
      (q ? '&q=' + encodeURIComponent(q) : '') + (least !== '' ? '&score=' + encodeURIComponent(least) : '');
  }
  function button(section, left) {
    var more = section.querySelector('button.more');
    if (left <= 0) { if (more) more.remove(); return; }
    if (!more) {
      more = document.createElement('button');
      more.type = 'button'; more.className = 'more';
      section.appendChild(more);
    }
    more.textContent = 'show ' + left + ' more';
    more.disabled = false;
  }
  function counts() {
    var shown = 0, total = 0;
    document.querySelectorAll('section[data-key]').forEach(function (section) {
      var count = section.querySelector('small.count');
      var found = section.dataset.found === undefined ? Number(count.dataset.total) : Number(section.dataset.found);
      count.textContent = active() ? '(' + found + ' of ' + count.dataset.total + ')' : '(' + count.dataset.total + ')';
      if (!section.hidden) { shown += found; total += Number(count.dataset.total); }
    });
    filters.querySelector('output.shown').textContent = active() ? shown + ' of ' + total + ' photos shown' : '';
  }
  function load(section, fresh, asked) {
    var offset = fresh ? 0 : Number(section.dataset.loaded);
    return fetch(address(section, offset), {credentials: 'same-origin'}).then(answer).then(function (result) {
      if (asked !== undefined && asked !== turn) return;  // a newer search was typed meanwhile
      if (!result[0]) { filters.querySelector('output.shown').textContent = result[1].message || 'not found'; return; }
      var grid = section.querySelector('.grid');
      if (fresh) grid.innerHTML = result[1].html; else grid.insertAdjacentHTML('beforeend', result[1].html);
      section.dataset.loaded = offset + result[1].count;
      section.dataset.found = result[1].total;
      button(section, result[1].total - Number(section.dataset.loaded));
      counts();
    }).catch(function () { filters.querySelector('output.shown').textContent = 'the server did not answer'; });
  }
  function choose() {
    var chosen = filters.elements.section.value;
    document.querySelectorAll('section[data-key]').forEach(function (section) {
      section.hidden = Boolean(chosen) && chosen !== section.dataset.key;
    });
    filters.dataset.busy = '1';  // until the search's answers are in (what the browser tests wait for)
    try { sessionStorage.setItem('filters:' + body.dataset.job, JSON.stringify(
      {q: filters.elements.q.value, section: chosen, score: filters.elements.score.value})); } catch (e) {}
  }
  function search() {
    turn += 1;
    var asked = turn;
    var loads = [].slice.call(document.querySelectorAll('section[data-key]:not([hidden])')).map(function (section) {
      return load(section, true, asked);
    });
    Promise.all(loads).then(function () { if (asked === turn) { filters.dataset.busy = '0'; counts(); } });
  }
  document.addEventListener('click', function (event) {
    var more = event.target.closest('button.more');
    if (more) { more.disabled = true; load(more.closest('section'), false); }
  });
  filters.addEventListener('submit', function (event) { event.preventDefault(); });
  filters.addEventListener('input', function () {
    choose();
    clearTimeout(typing);
    typing = setTimeout(search, 200);  // one request per section per pause in typing, not per keystroke
  });
  try {
    var kept = JSON.parse(sessionStorage.getItem('filters:' + body.dataset.job) || 'null');
    if (kept && (kept.q || kept.section || kept.score)) {
      filters.elements.q.value = kept.q; filters.elements.section.value = kept.section;
      filters.elements.score.value = kept.score;
      choose();
      search();
    }
  } catch (e) {}
})();
