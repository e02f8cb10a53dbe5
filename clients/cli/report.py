"""A model version's evaluation as one self-contained HTML file (plots embedded)."""

from __future__ import annotations

import base64
import html
from typing import Any


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(title: str, summary: list[tuple[str, str]], metrics: dict[str, Any], plots: dict[str, bytes]) -> str:
    ev = metrics["evaluation"]
    parts = [f"<h1>{html.escape(title)}</h1>", _table(["figure", "value"], [list(r) for r in summary])]
    parts.append("<h2>Classification statistics (validation set)</h2>")
    parts.append(_table(
        ["class", "precision", "recall", "F1", "support", "train", "validation"],
        [[c["label"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"], c["train_count"],
          c["validation_count"]] for c in ev["classes"]],
    ))
    for name, caption in (("confusion_matrix.png", "Confusion matrix"), ("curves.png", "Training curves")):
        if name in plots:
            data = base64.b64encode(plots[name]).decode()
            parts.append(f"<h2>{caption}</h2><img alt='{caption}' src='data:image/png;base64,{data}'>")
    curves = ev.get("pr_curves") or []
    if curves:
        parts.append("<h2>Decision thresholds (F1-maximising, per class)</h2>")
        parts.append(_table(["class", "average precision", "best threshold", "F1 there"],
                            [[c["label"], f"{c.get('average_precision', 0):.3f}", f"{c.get('best_threshold', 0):.3f}",
                              f"{c.get('best_f1', 0):.3f}"] for c in curves]))
    wrong = ev.get("misclassified") or []
    if wrong:
        parts.append(f"<h2>Misclassified validation samples ({ev.get('misclassified_total', len(wrong))}, most confident first)</h2>")
        parts.append(_table(["image", "true", "predicted", "confidence"],
                            [[m["image_id"][:16] + "…", m["true"], m["predicted"], f"{m['confidence']:.3f}"] for m in wrong[:100]]))
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
