"""What people see of a job: the results page (one self-contained HTML document: opens from disk, no server, no
internet), the served jobs index, and the per-image results as CSV or JSON Lines. Jinja2 templates with
autoescape over the job's view and results; previews come from the caller (inline data for a file, a URL for a
served page). The HTTP layer and the CLI render; the use case only gathers the data."""
from common.pages.exports import EXPORT_FIELDS, export_csv, export_jsonl, spreadsheet_safe
from common.pages.render import FORMATS, ThumbnailSource, render, render_file, render_index, render_report

__all__ = ["EXPORT_FIELDS", "FORMATS", "ThumbnailSource", "export_csv", "export_jsonl", "render", "render_index",
           "render_file", "render_report", "spreadsheet_safe"]
