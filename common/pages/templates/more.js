document.addEventListener('click', function (event) {
  var button = event.target.closest('button.more');
  if (!button) return;
  var grid = document.getElementById(button.dataset.grid);
  var next = grid.parentNode.querySelector('template.more');
  if (next) { grid.appendChild(next.content); next.remove(); }
  var left = grid.parentNode.querySelectorAll('template.more').length;
  if (!left) button.remove(); else button.textContent = button.dataset.label;
});
