"""Sphinx extension: the ``lecture-timings`` directive, the table of measured lecture times.

It reads ``book/timings.json`` (written by ``python book/timings.py``: one record per profile and
size, each with the machine it ran on) and renders one row per lecture of the table of contents and
one column per recorded run; a lecture a run did not time shows "—". Nothing in the table is typed
by hand: to update it, measure again.
"""
from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

RECORD = Path(__file__).resolve().parent.parent / "timings.json"
LECTURES = Path(__file__).resolve().parents[2] / "lectures"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def _title(lecture: Path) -> str:
    for line in lecture.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return lecture.stem


def rows(record: dict, lectures: list[Path]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): lecture, then each recorded run's time; a total row last."""
    runs = sorted(record)
    head = ["lecture"] + [record[k]["label"] for k in runs]
    out = [[_title(p)] + [_duration(record[k]["seconds"][p.stem]) if p.stem in record[k]["seconds"] else "—"
                          for k in runs] for p in lectures]
    out.append(["all lectures"] + [_duration(sum(record[k]["seconds"].get(p.stem, 0) for p in lectures))
                                   for k in runs])
    return head, out


class LectureTimings(SphinxDirective):
    has_content = False

    def run(self):
        self.env.note_dependency(str(RECORD))
        record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
        if not record:
            return [nodes.paragraph(text="No timings recorded yet: run python book/timings.py.")]
        head, body = rows(record, sorted(LECTURES.glob("[0-9][0-9]_*.md")))
        table, group = nodes.table(classes=["lecture-timings"]), nodes.tgroup(cols=len(head))
        table += group
        group += [nodes.colspec(colwidth=4 if i == 0 else 1) for i in range(len(head))]
        thead, tbody = nodes.thead(), nodes.tbody()
        group += [thead, tbody]
        for part, lines in ((thead, [head]), (tbody, body)):
            for line in lines:
                row = nodes.row()
                for text in line:
                    row += nodes.entry("", nodes.paragraph(text=text))
                part += row
        notes = [f"{record[k]['label']}: measured {record[k]['date']}, {record[k]['jobs']} lecture(s) at a time with "
                 f"{record[k]['threads']} thread(s) each, torch {record[k]['machine']['torch']}"
                 + (f"; failed: {', '.join(sorted(record[k]['failed']))}" if record[k].get("failed") else "")
                 for k in sorted(record)]
        return [table] + [nodes.paragraph(text=n, classes=["lecture-timings-note"]) for n in notes]


def setup(app):
    app.add_directive("lecture-timings", LectureTimings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
