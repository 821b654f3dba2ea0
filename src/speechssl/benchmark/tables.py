"""Plain-text tables: Markdown (GitHub pipe tables) and LaTeX (booktabs).

Generic on purpose: every function takes ``headers`` (a list of strings) and ``rows``
(a list of lists of *already formatted* strings), so number formatting stays with the
caller (statistics, HTML report, ...). Nothing here knows about score rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from speechssl.errors import ConfigError

__all__ = ["latex_escape", "latex_table", "markdown_table"]

# Characters special to LaTeX in text mode. "<" and ">" are listed because the default
# OT1 font encoding prints them as inverted punctuation; the few non-ASCII symbols are
# those that turn up in result tables and would otherwise need a Unicode-aware engine.
_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "\n": " ",
    "→": r"$\rightarrow$",
    "←": r"$\leftarrow$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "±": r"$\pm$",
    "×": r"$\times$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "−": "$-$",
    "–": "--",
    "—": "---",
}

_ALIGNMENTS = {"l", "c", "r"}


def latex_escape(s) -> str:
    """``s`` (any object, via ``str``) with LaTeX's special characters escaped for text mode."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(s))


def _check_shape(headers: Sequence[str], rows: Sequence[Sequence[str]], align) -> list[str]:
    """The alignment list (default: all left), after checking that every row fits the headers."""
    if not headers:
        raise ConfigError("a table needs at least one column header")
    for i, row in enumerate(rows):
        if len(row) != len(headers):
            raise ConfigError(f"table row {i} has {len(row)} cells but there are {len(headers)} headers")
    if align is None:
        return ["l"] * len(headers)
    align = list(align)
    if len(align) != len(headers) or not set(align) <= _ALIGNMENTS:
        raise ConfigError(f"align must give one of l/c/r per column ({len(headers)}), got {align!r}")
    return align


def _md_cell(s) -> str:
    # A pipe would end the cell and a newline the row.
    return str(s).replace("|", r"\|").replace("\n", " ").strip()


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown pipe table (no trailing newline).

    ``align`` gives ``"l"``, ``"c"`` or ``"r"`` per column (default: all left). Pipes in
    cells are escaped and newlines become spaces.
    """
    align = _check_shape(headers, rows, align)
    rule = {"l": "---", "c": ":---:", "r": "---:"}
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
             "|" + "|".join(rule[a] for a in align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def latex_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str | None = None,
    label: str | None = None,
    align: Sequence[str] | None = None,
    escape: bool = True,
) -> str:
    """A booktabs ``tabular`` (no trailing newline); needs ``\\usepackage{booktabs}``.

    With a ``caption`` or ``label`` the tabular is wrapped in a ``table`` float (caption
    on top, as is usual for tables). Headers, cells and the caption are escaped with
    :func:`latex_escape` unless ``escape=False`` (then they are inserted verbatim, for
    callers that write their own LaTeX); the label is never escaped.
    """
    align = _check_shape(headers, rows, align)
    esc = latex_escape if escape else str
    body = [
        r"\begin{tabular}{" + "".join(align) + "}",
        r"\toprule",
        " & ".join(esc(h) for h in headers) + r" \\",
        r"\midrule",
        *(" & ".join(esc(c) for c in row) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if caption is None and label is None:
        return "\n".join(body)
    head = [r"\begin{table}[t]", r"\centering"]
    if caption is not None:
        head.append(r"\caption{" + esc(caption) + "}")
    if label is not None:
        head.append(r"\label{" + label + "}")
    return "\n".join(head + body + [r"\end{table}"])
