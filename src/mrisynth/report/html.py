"""index.html: one self-contained page (figures embedded as base64 PNG, inline CSS, no scripts or links)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from mrisynth.report.markdown import (
    AUDIT_HEADER,
    VERDICT_HEADER,
    audit_rows,
    best_sentence,
    scalars,
    verdict_rows,
)

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, td:last-child { text-align: left; }
tr.helps td:last-child { background: #d8f3d8; } tr.hurts td:last-child { background: #f8d7d7; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.best { font-size: 1.1em; background: #eef4ff; padding: 0.6em 1em; border-left: 4px solid #4a7bd0; }
figure { margin: 1.5em 0; } figcaption { font-size: 0.9em; color: #555; }
"""


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], *, classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def build_html(summary: dict, *, title: str, figures: dict[str, bytes], sections: Sequence[tuple] = ()) -> str:
    """The report page; `figures` maps captions to PNG bytes; `sections` as in markdown.build_markdown."""
    rows = verdict_rows(summary)
    classes = [r[-1].split()[0] for r in rows]
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='best'>{html.escape(best_sentence(summary))}</p>",
        f"<p>Trials finished: {summary['n_trials_done']} of {summary['n_trials_total']}; seeds "
        f"{html.escape(', '.join(map(str, summary['seeds'])))}"
        + (f"; patient-wise {summary['folds']}-fold cross-validation" if summary["folds"] else "") + ".</p>",
        "<h2>Verdicts against real-only</h2>",
        _table(VERDICT_HEADER, rows, classes=classes),
        *(f"<h2>{html.escape(heading)}</h2><p>{html.escape(sentence)}</p>" + (_table(header, srows) if srows else "")
          for heading, sentence, header, srows in sections),
        "<h2>Protocol caveats</h2><ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in summary["caveats"]) + "</ul>",
    ]
    if summary.get("leakage"):
        items = scalars(summary["leakage"])
        parts.append("<h2>Leakage audit</h2>" + _table(("measure", "value"), [(k, str(v)) for k, v in items.items()]))
    if summary.get("audit"):
        parts.append("<h2>Synthetic-image audit</h2>" + _table(AUDIT_HEADER, audit_rows(summary)))
    parts.append("<h2>Figures</h2>")
    for caption, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
