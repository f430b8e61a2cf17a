"""Browsing generated images with their prompts, metrics and attention maps: a local HTML contact sheet
(sortable by any column, no server needed) and the same rows as a W&B table.

A row is a dict with `image` (a path relative to the sheet's folder), `attention` ({token: path}) and any
number of plain fields (prompt, seed, method, metrics), which become columns.
"""

from __future__ import annotations

import html
from pathlib import Path

_SORT_SCRIPT = """
<script>
function sortBy(col) {
  const body = document.querySelector('tbody');
  const rows = Array.from(body.rows);
  const dir = body.dataset.col == col && body.dataset.dir == 'asc' ? 'desc' : 'asc';
  rows.sort((a, b) => {
    const x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
    const nx = parseFloat(x), ny = parseFloat(y);
    const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
    return dir == 'asc' ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
  body.dataset.col = col; body.dataset.dir = dir;
}
</script>
"""


def _columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in ("image", "attention"):
                seen.setdefault(key, None)
    return list(seen)


def write_contact_sheet(rows: list[dict], path: str | Path, title: str = "break-a-scene samples") -> Path:
    """One table row per image: thumbnail, every plain field, and the attention maps. Click a header to sort."""
    path = Path(path)
    columns = _columns(rows)
    head = "".join(f'<th onclick="sortBy({i + 1})">{html.escape(c)}</th>' for i, c in enumerate(columns))
    lines = []
    for row in rows:
        cells = [f'<td data-v="{html.escape(row["image"])}"><img src="{html.escape(row["image"])}" width="160"></td>']
        for column in columns:
            value = row.get(column, "")
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            cells.append(f'<td data-v="{html.escape(str(value))}">{html.escape(shown)}</td>')
        maps = "".join(
            f'<figure><img src="{html.escape(p)}" width="96"><figcaption>{html.escape(t)}</figcaption></figure>'
            for t, p in (row.get("attention") or {}).items()
        )
        cells.append(f'<td data-v="">{maps}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
        "th{cursor:pointer;background:#eee}figure{display:inline-block;margin:2px}</style>"
        f"{_SORT_SCRIPT}</head><body><h1>{html.escape(title)}</h1><table><thead><tr><th>image</th>{head}"
        f"<th>attention</th></tr></thead><tbody>{''.join(lines)}</tbody></table></body></html>"
    )
    path.write_text(page)
    return path


def wandb_table(rows: list[dict], base_dir: str | Path):
    """The rows as a `wandb.Table`: image, plain fields, and one image column per attention token."""
    import wandb

    base = Path(base_dir)
    columns = _columns(rows)
    tokens = list(dict.fromkeys(t for row in rows for t in (row.get("attention") or {})))
    table = wandb.Table(columns=["image", *columns, *[f"attention {t}" for t in tokens]])
    for row in rows:
        maps = row.get("attention") or {}
        table.add_data(
            wandb.Image(str(base / row["image"])),
            *[row.get(c) for c in columns],
            *[wandb.Image(str(base / maps[t])) if t in maps else None for t in tokens],
        )
    return table
