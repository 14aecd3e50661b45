"""What people see of a job: the results page (one self-contained HTML document: opens from disk, no server, no
internet), the served jobs index, and the per-image results as CSV or JSON Lines. Jinja2 templates with
autoescape over the job's view and results; previews come from the caller (inline data for a file, a URL for a
served page). The HTTP layer and the CLI render; the use case only gathers the data."""
from common.pages.exports import EXPORT_FIELDS, export_csv, export_jsonl, spreadsheet_safe
from common.pages.render import (FORMATS, SERVED_PAGE, FrontPage, PageSection, ThumbnailSource, page_sections,
                                 render, render_figures, render_file, render_index, render_report, served_first_page)

__all__ = ["EXPORT_FIELDS", "FORMATS", "SERVED_PAGE", "FrontPage", "PageSection", "ThumbnailSource", "export_csv",
           "export_jsonl", "page_sections", "render", "render_figures", "render_index", "render_file", "render_report",
           "served_first_page", "spreadsheet_safe"]
