// What served pages share: an answer read as [ok, body], and undoing a job (its copies removed where they still
// hold what it wrote; `said` tells how it went).
function answer(response) {
  return response.json().then(function (body) { return [response.ok, body]; });
}
function undoJob(url, button, said) {
  if (!confirm('Remove the copies this job made?')) return;
  said.textContent = 'undoing…';
  // JSON like every request that changes something: the server refuses anything else (another site's form).
  fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'}, credentials: 'same-origin',
    body: '{}'})
    .then(answer)
    .then(function (result) {
      said.className = result[0] ? '' : 'error';
      if (!result[0]) { said.textContent = result[1].message || 'not undone'; return; }
      button.remove();
      said.textContent = 'removed ' + result[1].removed + ' copies' +
        (result[1].kept.length ? ', kept ' + result[1].kept.length + ' changed since' : '');
      var note = document.createElement('small');
      note.className = 'why';
      note.textContent = ' the corrections made on it are kept: later jobs here still follow them';
      said.after(note);
    })
    .catch(function () { said.textContent = 'not undone: the server did not answer'; said.className = 'error'; });
}
