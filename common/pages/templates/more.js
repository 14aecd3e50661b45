document.addEventListener('click', function (event) {
  var button = event.target.closest('button.more');
  if (!button) return;
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
    .then(function (response) { return response.json().then(function (body) { return [response.ok, body]; }); })
    .then(function (answer) {
      var figure = box.closest('figure');
      if (!answer[0]) { said.textContent = answer[1].message || 'not saved'; return; }
      figure.dataset.corrected = (belongs ? '+' : '-') + className;
      said.textContent = belongs ? 'added to ' + className : 'marked not ' + className;
    })
    .catch(function () { said.textContent = 'not saved: the server did not answer'; });
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
