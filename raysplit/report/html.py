"""The report page: one self-contained HTML file (inline CSS, images as data: URIs, no
script, nothing fetched), readable offline and attachable to an e-mail or an issue."""

from __future__ import annotations

import base64
import html
import math
import time
from typing import Iterable, Sequence

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px auto;
max-width:1100px;padding:0 16px;color:#1d2430}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde3ea;
padding-bottom:4px} h3{font-size:14px;margin:16px 0 6px}
.sub{color:#5b6675;margin:0 0 16px}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dde3ea;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#f3f6f9;font-weight:600} td.n,th.n{text-align:right}
table.kv th{width:15em}
.bad{background:#fdecea} .ok{color:#1b5e20} .warn{color:#b71c1c;font-weight:600}
figure{margin:8px 0 18px} figure img{max-width:100%;height:auto;border:1px solid #eef1f4}
figcaption{color:#5b6675;font-size:12.5px;margin-top:2px}
details{margin:6px 0} summary{cursor:pointer;color:#2b5d9b}
.cols{display:flex;flex-wrap:wrap;gap:0 28px}
code{background:#f3f6f9;padding:0 3px;border-radius:3px}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value, digits: int = 3) -> str:
    """Numbers for people: thousands separators, a few significant digits, '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value != 0 and abs(value) < 10 ** -(digits - 1):
            return f"{value:.{digits - 1}e}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{max(0, digits - 1 - int(math.log10(abs(value))))}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value)
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence], *, numeric: Sequence[bool] | None = None,
          row_class: Sequence[str] | None = None, cls: str = "") -> str:
    rows = list(rows)
    numeric = list(numeric) if numeric is not None else [
        all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows) if rows else False
        for i in range(len(header))]
    out = [f'<table class="{cls}"><thead><tr>']
    out += [f'<th class="{"n" if numeric[i] else ""}">{esc(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for j, r in enumerate(rows):
        rc = row_class[j] if row_class else ""
        out.append(f'<tr class="{rc}">' + "".join(
            f'<td class="{"n" if numeric[i] else ""}">{esc(fmt(v))}</td>' for i, v in enumerate(r)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    return '<table class="kv"><tbody>' + "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(fmt(v))}</td></tr>" for k, v in pairs) + "</tbody></table>"


def image(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str]]) -> str:
    body = "".join(f'<section id="{esc(sid)}">{content}</section>' for sid, content in sections)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p class=\"sub\">{esc(subtitle)}"
        f" · report written {esc(stamp)}</p>{body}</body></html>\n"
    )
