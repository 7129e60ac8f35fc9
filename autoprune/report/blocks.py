"""The report's building blocks, and writing them as Markdown (with PNG files beside it)
and as one self-contained HTML page.

    >>> print(markdown([Block("h2", "Summary"), Block("p", "**Feasible**.")], "."))
    ## Summary
    <BLANKLINE>
    **Feasible**.
    <BLANKLINE>
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from typing import Any

from .._io import atomic_write


@dataclass
class Block:
    """One piece of a report: a heading, a paragraph, a table, an image or a list."""

    kind: str  # "h1", "h2", "p", "table", "img", "list"
    content: Any
    extra: Any = None


def fmt(v: Any) -> str:
    """A value as a table cell shows it."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return ""
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, tuple):
        return "x".join(str(i) for i in v)
    return str(v)


def markdown(blocks: list[Block], run_dir: str) -> str:
    """The blocks as Markdown; each image is written as a PNG file into ``run_dir``."""
    lines: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            lines += [f"# {b.content}", ""]
        elif b.kind == "h2":
            lines += [f"## {b.content}", ""]
        elif b.kind == "p":
            lines += [b.content, ""]
        elif b.kind == "list":
            lines += [f"- {item}" for item in b.content] + [""]
        elif b.kind == "table":
            head, rows = b.content, b.extra
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
            lines.append("")
        elif b.kind == "img":
            atomic_write(os.path.join(run_dir, b.content), b.extra)
            lines += [f"![{b.content[:-4].replace('_', ' ')}]({b.content})", ""]
    return "\n".join(lines)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.6em;border-bottom:2px solid #444;padding-bottom:.3em}
h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f3f6fb}td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:.5em 0}code{background:#f3f3f3;padding:0 .2em}
"""


def _inline(text: str) -> str:
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def page(blocks: list[Block], title: str) -> str:
    """The blocks as one self-contained HTML page (images inline)."""
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{html.escape(b.content)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.content)}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.content) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.content)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                for r in b.extra
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.kind == "img":
            data = base64.b64encode(b.extra).decode()
            alt = html.escape(b.content[:-4].replace("_", " "))
            body.append(f'<img alt="{alt}" src="data:image/png;base64,{data}">')
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
