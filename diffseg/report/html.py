"""The self-contained report page: one HTML file with the Vega, Vega-Lite and vega-embed JavaScript inlined
(vl-convert's bundle, so it opens offline), every chart also saved as PNG. A small script records JavaScript
errors and rendering failures in ``window.__reportErrors`` and sets ``data-rendered`` on the body when all
charts are drawn (the browser test reads both)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import vl_convert as vlc

from ..files import atomic_write_text, safe_name
from .sections import Section

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1280px; color: #222; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
section { margin-bottom: 24px; } p.note { color: #555; max-width: 900px; }
table.tbl { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
table.tbl th, table.tbl td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left; }
.chart { display: inline-block; margin: 8px 12px 8px 0; vertical-align: top; }
figure { display: inline-block; margin: 8px; } figcaption { font-size: 12px; color: #555; }
nav a { margin-right: 12px; }
"""

BOOT = """
window.__reportErrors = [];
window.addEventListener('error', function (e) { window.__reportErrors.push(String(e.message || e)); });
window.addEventListener('unhandledrejection', function (e) { window.__reportErrors.push(String(e.reason)); });
"""

EMBED = """
(function () {
  var specs = %s;
  var done = 0;
  var jobs = Object.keys(specs).map(function (id) {
    return vegaEmbed('#' + id, specs[id], {renderer: 'svg', actions: false})
      .then(function () { done += 1; })
      .catch(function (err) { window.__reportErrors.push(id + ': ' + String(err)); });
  });
  Promise.all(jobs).then(function () { document.body.setAttribute('data-rendered', String(done)); });
})();
"""


def script_json(obj) -> str:
    """JSON safe inside a ``<script>`` block: ``<``, ``>`` and ``&`` as unicode escapes (so a ``</script>`` in a
    label cannot end the block; JSON parses them back to the same characters)."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(title: str, sections: list[Section], out: Path, png_scale: float = 1.5) -> dict[str, object]:
    """Write ``report.html`` and ``charts/<section>__<name>.png``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    charts_dir = out / "charts"
    charts_dir.mkdir(exist_ok=True)
    specs, pngs, body = {}, [], []
    nav = " ".join(f'<a href="#{html.escape(s.key)}">{html.escape(s.title)}</a>' for s in sections)
    for s in sections:
        parts = [f'<section id="{html.escape(s.key)}"><h2>{html.escape(s.title)}</h2>']
        if s.text:
            parts.append(f'<p class="note">{html.escape(s.text)}</p>')
        parts += s.tables
        for name, chart in s.charts:
            cid = f"chart-{safe_name(s.key, 60)}-{len(specs)}"
            spec = chart.to_dict()
            specs[cid] = spec
            parts.append(f'<div class="chart" id="{cid}" data-name="{html.escape(name)}"></div>')
            png = charts_dir / f"{safe_name(f'{s.key}__{name}', 120, '-_.=')}.png"
            png.write_bytes(vlc.vegalite_to_png(spec, scale=png_scale))
            pngs.append(png)
        for caption, uri in s.images:
            parts.append(f'<figure><img src="{uri}" alt="{html.escape(caption)}"/>'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</section>")
        body.append("\n".join(parts))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style>
<script>{BOOT}</script>
<script>{vlc.javascript_bundle()}</script>
</head><body data-charts="{len(specs)}">
<h1>{html.escape(title)}</h1><nav>{nav}</nav>
{"".join(body)}
<script>{EMBED % script_json(specs)}</script>
</body></html>"""
    report = out / "report.html"
    atomic_write_text(report, page)
    return {"html": report, "pngs": pngs, "charts": len(specs)}
