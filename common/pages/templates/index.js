// The served front page: a job started from the form (classes added one at a time, suggested as they are typed),
// undo per job, and the jobs list refreshed in place while any job is in progress.
var chosen = [];
var words = JSON.parse(document.getElementById('vocabulary-words').textContent);
var input = document.getElementById('class-input');
var list = document.getElementById('vocabulary');
var said = document.getElementById('start-said');

function showChosen() {
  var box = document.getElementById('chosen');
  box.textContent = '';
  chosen.forEach(function (name, index) {
    var chip = document.createElement('button');
    chip.type = 'button';
    chip.className = 'chip';
    chip.dataset.chosen = name;
    chip.textContent = name + ' ×';
    chip.setAttribute('aria-label', 'remove ' + name);
    chip.addEventListener('click', function () { chosen.splice(index, 1); showChosen(); input.focus(); });
    box.appendChild(chip);
  });
}
function addClasses(text) {
  text.split(',').map(function (s) { return s.trim(); }).filter(Boolean).forEach(function (name) {
    if (chosen.indexOf(name) < 0) chosen.push(name);
  });
  input.value = '';
  showChosen();
}
// Only the best few suggestions are in the list at a time: the whole vocabulary would make typing slow.
input.addEventListener('input', function () {
  var typed = input.value.trim().toLowerCase();
  list.textContent = '';
  if (!typed) return;
  var starts = [], contains = [];
  for (var i = 0; i < words.length && starts.length < 12; i++) {
    var at = words[i].indexOf(typed);
    if (at === 0) starts.push(words[i]); else if (at > 0 && contains.length < 12) contains.push(words[i]);
  }
  starts.concat(contains).slice(0, 12).forEach(function (word) {
    var option = document.createElement('option');
    option.value = word;
    list.appendChild(option);
  });
});
input.addEventListener('keydown', function (event) {
  if (event.key === 'Enter' && input.value.trim()) { event.preventDefault(); addClasses(input.value); }
});
document.getElementById('add-class').addEventListener('click', function () { addClasses(input.value); input.focus(); });

document.getElementById('new-job').addEventListener('submit', function (event) {
  event.preventDefault();
  addClasses(input.value);
  if (!chosen.length) { said.textContent = 'add at least one class'; said.className = 'error'; input.focus(); return; }
  var form = event.target;
  var body = {classes: chosen.slice(), dry_run: form.elements.dry_run.checked};
  if (form.elements.min_score.value) body.min_score = Number(form.elements.min_score.value);
  said.textContent = 'starting…';
  said.className = '';
  fetch(document.body.dataset.jobs, {method: 'POST', headers: {'Content-Type': 'application/json'},
    credentials: 'same-origin', body: JSON.stringify(body)})
    .then(answer)
    .then(function (result) {
      if (!result[0]) {
        var suggested = result[1].suggestions || [];
        said.textContent = (result[1].message || 'not started') +
          (suggested.length ? ' — did you mean ' + suggested.join(' or ') + '?' : '');
        said.className = 'error';
        return;
      }
      location.href = document.body.dataset.jobs + '/' + result[1].id + '/report';
    })
    .catch(function () { said.textContent = 'not started: the server did not answer'; said.className = 'error'; });
});

document.addEventListener('click', function (event) {
  var button = event.target.closest('button.undo');
  if (button) undoJob(document.body.dataset.jobs + '/' + button.dataset.undo + '/undo', button,
                      button.parentNode.querySelector('output'));
});

// The list itself, fetched again in place; not while someone is acting on a row.
// Every 2 s while one is in progress, every 10 s otherwise (a job another client started appears too).
var ticks = 0;
function refreshJobs() {
  ticks += 1;
  var busy = document.querySelector('#jobs [data-live="1"]');
  if ((!busy && ticks % 5) || document.hidden || document.querySelector('#jobs output:not(:empty)')) return;
  fetch(location.pathname, {credentials: 'same-origin'})
    .then(function (response) { return response.ok ? response.text() : null; })
    .then(function (html) {
      if (!html) return;
      var fresh = new DOMParser().parseFromString(html, 'text/html').getElementById('jobs');
      if (fresh) document.getElementById('jobs').replaceWith(fresh);
    })
    .catch(function () {});
}
setInterval(refreshJobs, 2000);
