"""What the terminal shows: progress, the result table, what classes meant, where predictions came from."""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO, cast

from common.domain.options import MatchMode
from common.domain.results import ImageResult
from common.domain.status import JobView


# Control characters (C0 but newline and tab, DEL, C1) and the bidirectional overrides: a file name holding them
# could move the cursor, recolour or rewrite what the terminal shows. Printed as Python escapes instead.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    return _UNPRINTABLE.sub(lambda found: found.group().encode("unicode_escape", "backslashreplace").decode("ascii")
                            if not 0xD800 <= ord(found.group()) <= 0xDFFF else f"\\udc{ord(found.group()) & 0xff:02x}",
                            text)


class PrintableStream:
    """A text stream that escapes what `printable` escapes: every line the CLI prints goes through one."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        return self.raw.write(printable(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class Progress:
    """One line on stderr: done/total, rate, ETA. Only on a terminal."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        # Its own carriage return rewrites the line; everything else printed is escaped (PrintableStream).
        self.stream: TextIO = stream if stream is not None else cast(TextIO, getattr(sys.stderr, "raw", sys.stderr))
        self.start = time.monotonic()
        self.first_done: int | None = None

    def show(self, view: JobView) -> None:
        if not self.enabled:
            return
        total, done = view.number_of_files, view.done
        if self.first_done is None:
            self.first_done = done
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = (done - self.first_done) / elapsed
        width = 30
        filled = int(width * done / total) if total else width
        if done >= total:  # finished: how long it took, not a rate of nothing and an unknown ETA
            tail = f"done in {elapsed:.1f}s" + (f" ({rate:.1f} img/s)" if rate > 0 else "")
        else:
            tail = f"{rate:6.1f} img/s  ETA " + (f"{(total - done) / rate:5.0f}s" if rate > 0 else "    ?")
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {tail} ")
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def table(view: JobView) -> str:
    counters = view.counters
    rows = [(name, count) for name, count in view.matches.items()]
    rows += [("(no class)", counters.unmatched), ("(failed)", counters.failed)]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'class'.ljust(width)}  images", f"{'-' * width}  ------"]
    lines += [f"{name.ljust(width)}  {count:6d}" for name, count in rows]
    lines.append(f"{view.number_of_files} images, {counters.processed} classified, {counters.failed} failed")
    return "\n".join(lines)


def summary(view: JobView, written: int) -> str:
    """Where the answers came from and what changed on disk, in one line."""
    done = view.done
    from_model = view.counters.processed - view.counters.from_store
    line = f"predictions: {view.counters.from_store} from the store, {from_model} from the model"
    if view.job.spec.dry_run:
        return line + "; dry run: no copy made"
    line += f"; {written} new copies"
    if done and from_model == 0 and written == 0:
        line += " — nothing new"
    return line


def meanings(view: JobView) -> str:
    """What each class was taken to mean, and the warnings, in plain words."""
    lines = []
    for query, meaning in view.extra.get("resolved", {}).items():
        lines.append(f"  {query}: " + ("; ".join(meaning) if meaning else "matches nothing in ImageNet"))
    lines += [f"  warning: {warning}" for warning in [*view.extra.get("warnings", []), *view.job.errors]]
    spec = view.job.spec
    if spec.match != MatchMode.HIERARCHY:
        lines.append(f"  match rule: {spec.match.value} (min score {spec.min_score})")
    return "\n".join(lines) if lines else "  (no class resolution for this match rule)"


def planned_copies(results: Iterable[ImageResult], source_prefix: str) -> list[dict[str, Any]]:
    """A dry run's answer per photo: which class folders it would be copied to (none: it matches no class)."""
    plan = []
    for result in sorted(results, key=lambda r: r.name):
        relative = result.name[len(source_prefix):] if result.name.startswith(source_prefix) else result.name
        plan.append({"photo": relative, "to": [f"{c}/{relative}" for c in result.matched] if result.ok else [],
                     **({"failed": result.reason} if not result.ok else {})})
    return plan


def plan_lines(plan: list[dict[str, Any]]) -> str:
    return "\n".join(f"  {p['photo']} -> {', '.join(p['to'])}" if p["to"] else
                     f"  {p['photo']}: failed, {p['failed']}" if "failed" in p else f"  {p['photo']}: no class"
                     for p in plan)


def next_steps(root: str, view: JobView) -> str:
    """What happened and what to do next: the job, where its copies are, how to look at them or take them back."""
    short = view.id[:8]
    dry_run, matches = view.job.spec.dry_run, view.matches
    where = "no copy made (dry run)" if dry_run else \
        "copies under " + ", ".join(f"{root}/{c}/" for c, n in matches.items() if n) if \
        any(matches.values()) else "no photo matched"
    lines = [f"job {short}: {where}", f"  results page: imgclassify report {root} {short}"]
    if not dry_run and any(matches.values()):
        lines.append(f"  take the copies back: imgclassify undo {root} {short}")
    return "\n".join(lines)


def progress_line(view: JobView) -> str:
    """A job's progress in one line (emulate's running account)."""
    line = (f"job {view.id}: {view.state} {view.done}/{view.number_of_files} ({view.percentage}%)  "
            + ", ".join(f"{c} {n}" for c, n in view.matches.items()))
    if view.complete:
        line += f"  — copies under gs://{view.job.spec.bucket}/<class>/"
    for error in view.job.errors:
        line += f"\n  error: {error}"
    return line


def latest_that_changed(kept: Iterable[Any], not_undone: bool = False) -> tuple[str | None, str]:
    """Of a folder's jobs (runner.KeptJob, oldest first), the latest that made copies (not a dry run; with
    `not_undone`, not undone either), and a line saying which job was taken and why it is not simply the latest."""
    jobs = list(kept)
    if not jobs:
        return None, ""
    latest = jobs[-1]
    changed = [job for job in jobs if not job.view.job.spec.dry_run and (job.copies_made is None or job.copies_made)
               and not (not_undone and job.undone_at)]
    if not changed:
        return None, ""
    chosen = changed[-1]
    if chosen is latest:
        return chosen.view.id, f"job {chosen.view.id} (the latest, {chosen.view.job.created_at[:19]})"
    why = "a dry run" if latest.view.job.spec.dry_run else "undone" if latest.undone_at else "made no copy"
    return chosen.view.id, (f"job {chosen.view.id} ({chosen.view.job.created_at[:19]}), the latest that made copies "
                            f"(the latest, {latest.view.id[:8]}, was {why})")


def corrections_line(view: JobView) -> str:
    """"corrections followed: birds 2, tabby 1": per class, the photos a correction kept from earlier jobs here
    placed against the models' answer (the job's kept counters); "" when none was."""
    followed = {name: count for name, count in view.counters.corrected.items() if count}
    if not followed:
        return ""
    return ("corrections followed (photos placed as you said on earlier jobs, not as the model did): "
            + ", ".join(f"{name} {count}" for name, count in followed.items()))
