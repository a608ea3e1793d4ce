"""Display settings for the kernel that executes a lesson while the site is built.

:func:`configure` runs in a hidden first cell (see :mod:`recsys_course.tooling.site.execute`), so the
lessons themselves stay plain scripts. It changes how results *look* on the page, never what
they are:

* figures are captured at twice their displayed resolution (the inline backend's "retina"
  format), so they stay sharp on high-density screens and when enlarged;
* a figure's plain-text form describes it (titles and axis labels) instead of
  ``<Figure size 640x480 with 1 Axes>``; the page uses it as the image's alt text;
* DataFrames display as compact tables: no 0..n index, numbers formatted for reading,
  a dash for missing values.
"""

from __future__ import annotations

import math
import numbers
import re

MISSING = "–"  # en dash: what a table shows for NaN / None


def format_number(value) -> str:
    """A number as a reader wants it in a results table.

    Integers get thousands separators; floats four decimals below 1 (``0.9131``), four
    significant digits above (``12.35``, ``1,235``), tiny non-zero values scientific notation
    instead of ``0.0000``; NaN becomes a dash.
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if x == 0:
            return "0"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) < 1e-3:
            return f"{x:.2e}"
        # Four significant digits, trailing zeros kept (1.060, 0.1130) so columns align.
        decimals = 4 if abs(x) < 1 else max(0, 3 - int(math.floor(math.log10(abs(x)))))
        return f"{x:.{decimals}f}"
    return str(value)


# Columns whose numbers are labels, not quantities: no thousands separator, left-aligned.
LABEL_COLUMN = re.compile(r"(?i)(?:^|[ _])(?:ids?|year|seed|index|row)$")
TIMESTAMP_COLUMN = re.compile(r"(?i)timestamp")
SECONDS_COLUMN = re.compile(r"(?i)\bseconds?\b|_seconds\b|\(s\)|\bms\b")
UNIX_RANGE = (1e8, 1e10)  # seconds since 1970: March 1973 to 2286


def _finite(values) -> list[float]:
    out = []
    for value in values:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)):
            out.append(float(value))
    return out


def column_formatter(name, values):
    """One formatter for a whole column (or index level, or the column labels), so every
    row of it is written the same way. Returns ``(format function, is_text)``.

    * text, booleans and ids (a name ending in ``id``, ``year``, ``seed``...) are labels:
      left-aligned, numbers without thousands separators;
    * Unix timestamps (a name containing ``timestamp``) become UTC dates;
    * numbers that are all whole (ratings stored as floats, a batch size of 4096.0) are
      integers with thousands separators;
    * durations (a name with ``seconds``, ``(s)`` or ``ms``) get two significant digits of
      the column's shortest non-zero value (``0.42``, ``21.9735`` as ``22``);
    * other numbers get one number of decimals for the whole column: as many as its values
      have when they all have at most four (parameters such as 0.05 and 0.15, a table the
      lesson rounded), else four significant digits of its smallest non-zero value, at most
      four decimals (0.2590 and 0.2107, not 0.259 and 0.210712); a column of tiny numbers
      uses scientific notation.
    """
    import pandas as pd

    label = str(name) if name is not None else ""
    values = list(values)
    finite = _finite(values)
    numeric = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    is_numeric = bool(numeric) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in numeric
    )

    def missing_or(format_value):
        def apply(value):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return MISSING
            try:
                if pd.isna(value):
                    return MISSING
            except (TypeError, ValueError):
                pass
            return format_value(value)
        return apply

    if numeric and all(isinstance(v, (pd.Timestamp,)) for v in numeric):
        return missing_or(lambda v: v.strftime("%Y-%m-%d %H:%M")), False
    if not is_numeric:
        return missing_or(str), True
    if TIMESTAMP_COLUMN.search(label) and finite and all(UNIX_RANGE[0] <= v <= UNIX_RANGE[1] for v in finite):
        return missing_or(lambda v: pd.Timestamp(float(v), unit="s").strftime("%Y-%m-%d %H:%M")), False
    whole = all(v.is_integer() for v in finite)
    if LABEL_COLUMN.search(label):
        return missing_or(lambda v: f"{int(v)}" if float(v).is_integer() else f"{v}"), True
    if whole:
        return missing_or(lambda v: format_number(int(v)) if math.isfinite(float(v)) else format_number(v)), False
    # float32 values rounded by the lesson differ from their decimal by about 1e-8.
    exact = next((d for d in range(1, 5) if all(abs(v - round(v, d)) <= 1e-6 * max(1.0, abs(v)) for v in finite)), None)
    nonzero = [abs(v) for v in finite if v != 0]
    if SECONDS_COLUMN.search(label) and nonzero:
        # Durations: two significant digits of the shortest, as claims.fmt(kind="seconds").
        decimals = min(3, max(0, 1 - math.floor(math.log10(min(nonzero)))))
    elif exact is not None:
        decimals = exact  # values typed or rounded by the lesson (0.05, 0.15): shown as they are
    elif nonzero and max(nonzero) < 1e-3:
        return missing_or(lambda v: "0" if v == 0 else f"{float(v):.2e}"), False
    else:
        smallest = min(nonzero) if nonzero else 1.0
        decimals = min(4, max(0, 3 - math.floor(math.log10(smallest))))

    def decimal(value):
        x = float(value)
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        return f"{x:,.{decimals}f}".replace("-", "−")

    return missing_or(decimal), False


def dataframe_html(frame) -> str:
    """HTML for a DataFrame: the index only when it carries meaning (named or not 0..n-1),
    each column formatted as one (see :func:`column_formatter`), text columns marked
    ``class="text"`` so the page aligns them left and numbers right. A frame the column
    formatting cannot handle (duplicate labels) is formatted value by value instead."""
    if not (frame.columns.is_unique and frame.index.is_unique):
        return _plain_html(frame)
    return _columns_html(frame)


def _plain_html(frame) -> str:
    styler = frame.style.format(format_number, na_rep=MISSING)
    styler = styler.format_index(format_number, axis=0).format_index(format_number, axis=1)
    return styler.set_uuid("t").set_table_attributes('class="dataframe"').to_html()


def _columns_html(frame) -> str:
    import pandas as pd

    styler = frame.style
    text_columns = []
    for position, column in enumerate(frame.columns):
        formatter, is_text = column_formatter(column, frame[column].tolist())
        styler = styler.format(formatter, subset=[column])
        if is_text:
            text_columns.append(position)
    index_formatters = [
        column_formatter(name, frame.index.get_level_values(level).tolist())[0]
        for level, name in enumerate(frame.index.names)
    ]
    for level, formatter in enumerate(index_formatters):
        styler = styler.format_index(formatter, axis=0, level=level)
    labels = column_formatter(frame.columns.name, list(frame.columns))[0]
    styler = styler.format_index(labels, axis=1)
    default_index = isinstance(frame.index, pd.RangeIndex) and frame.index.name is None and (
        frame.index.start == 0 and frame.index.step == 1
    )
    if default_index:
        styler = styler.hide(axis="index")
    classes = pd.DataFrame("", index=frame.index, columns=frame.columns)
    for position in text_columns:
        classes.iloc[:, position] = "text"
    styler = styler.set_td_classes(classes).set_uuid("t")
    html = styler.set_table_attributes('class="dataframe"').to_html()
    for position in text_columns:
        heading = f'class="col_heading level0 col{position}'
        html = html.replace(heading + '"', heading + ' text"')
    return html


def describe_figure(figure, printer=None, cycle=False):
    """Alt text for a matplotlib figure, from its titles and axis labels."""
    parts = []
    if figure._suptitle is not None and figure._suptitle.get_text():
        parts.append(figure._suptitle.get_text())
    for axes in figure.get_axes():
        title = axes.get_title() or axes.get_title(loc="left")
        labels = [label for label in (axes.get_xlabel(), axes.get_ylabel()) if label]
        if title and labels:
            parts.append(f"{title} ({' vs '.join(reversed(labels))})")
        elif title or labels:
            parts.append(title or " vs ".join(reversed(labels)))
    text = "; ".join(parts) or "Figure"
    text = "Figure: " + text.replace("\n", " ")
    if printer is not None:
        printer.text(text)
    return text


def configure() -> None:
    """Apply the display settings to the running IPython kernel."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:  # not in a kernel: nothing to configure
        return
    # Loading the inline backend resets every Figure formatter, and pyplot loads it lazily
    # (at the first figure): load it now, so the formats and formatters set below stay.
    import matplotlib.pyplot as plt
    import pandas as pd

    plt.close(plt.figure())
    from matplotlib.figure import Figure

    shell.run_line_magic("config", "InlineBackend.figure_formats = ['retina']")
    formatters = shell.display_formatter.formatters
    formatters["text/html"].for_type(pd.DataFrame, dataframe_html)
    formatters["text/plain"].for_type(Figure, describe_figure)
