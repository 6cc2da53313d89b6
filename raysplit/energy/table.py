"""Tables in the layout of Krouka et al.'s Table III, and the per-layer profile (their Fig. 3)."""

from __future__ import annotations

from collections.abc import Sequence

# Krouka et al., Table III (per inference; they report W = 15 kHz and 15 MHz only).
PAPER_TABLE_III = {
    15e3: {"pool-1": (8.66e-4, 0.66e-4, 7.98e-4, 0.66e-10), "softmax": (1.69e-4, 1.67e-4, 0.03e-4, 0.13e-10),
           "PS": (1.69e-4, 1.64e-4, 0.05e-4, 0.13e-10), "PSNC": (4.36e-4, 2.60e-4, 1.76e-4, 0.33e-10)},
    15e6: {"pool-1": (1.24e-4, 0.66e-4, 0.58e-4, 0.1e-10), "softmax": (1.67e-4, 1.67e-4, 0.002e-4, 0.12e-10),
           "PS": (0.53e-4, 0.23e-4, 0.31e-4, 0.04e-10), "PSNC": (0.61e-4, 0.23e-4, 0.38e-4, 0.05e-10)},
}
METHOD_ORDER = ("pool-1", "softmax", "PS", "PSNC", "input")
QUANTITIES = (("energy_j", "E (10^-4 J)", 1e-4), ("processing_j", "E_p (10^-4 J)", 1e-4),
              ("transmit_j", "E_tr (10^-4 J)", 1e-4), ("co2_kg", "EU CO2e (10^-10 kg)", 1e-10))


def bandwidth_label(w: float) -> str:
    for unit, scale in (("MHz", 1e6), ("kHz", 1e3)):
        if w >= scale:
            return f"{w / scale:g} {unit}"
    return f"{w:g} Hz"


def table_iii_cells(rows: Sequence[dict], *, paper: bool = True) -> tuple[list[str], list[list[str]]]:
    """Table III as text cells: the methods (columns), then per bandwidth a heading row
    ``["W = ...", "", ...]`` and E, E_p, E_tr and CO2 rows, in units of 10^-4 J and
    10^-10 kg like the paper (rows: dicts with bandwidth, method and the quantities);
    with ``paper`` the paper's figure follows in brackets where it has one."""
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in rows)]
    methods += sorted({r["method"] for r in rows} - set(methods))
    out: list[list[str]] = []
    for w in sorted({r["bandwidth"] for r in rows}):
        at = {r["method"]: r for r in rows if r["bandwidth"] == w}
        out.append([f"W = {bandwidth_label(w)}"] + [""] * len(methods))
        for key, label, scale in QUANTITIES:
            cells = []
            for m in methods:
                v = at.get(m, {}).get(key)
                cell = "-" if v is None else f"{v / scale:.3g}"
                ref = PAPER_TABLE_III.get(w, {}).get(m) if paper else None
                if ref is not None:
                    cell += f" ({ref[[q for q, _, _ in QUANTITIES].index(key)] / scale:.3g})"
                cells.append(cell)
            out.append([label] + cells)
    return methods, out


def table_iii(rows: Sequence[dict], *, paper: bool = True) -> str:
    """Markdown of :func:`table_iii_cells` (the bandwidth rows in bold)."""
    methods, cells = table_iii_cells(rows, paper=paper)
    out = ["| | " + " | ".join(methods) + " |",
           "|---|" + "---:|" * len(methods)]
    for row in cells:
        if row[0].startswith("W = "):
            out.append(f"| **{row[0]}** |" + " |" * len(methods))
        else:
            out.append(f"| {row[0]} | " + " | ".join(row[1:]) + " |")
    return "\n".join(out) + "\n"


def layer_table(original: Sequence[dict], compressed: Sequence[dict]) -> str:
    """Markdown: per layer, processing energy and output size before and after compression."""
    out = ["| layer | params | params after | E_p (µJ) | E_p after (µJ) | output elements | sent after |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for a, b in zip(original, compressed):
        out.append(f"| {a['layer']} | {a['params']:,} | {b['params']:,} | {1e6 * a['processing_j']:.3f} | "
                   f"{1e6 * b['processing_j']:.3f} | {a['output_elements']:,} | {b['sent_elements']:,} |")
    return "\n".join(out) + "\n"
