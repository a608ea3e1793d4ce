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


def dataframe_html(frame) -> str:
    """HTML for a DataFrame: the index only when it carries meaning (named or not 0..n-1)."""
    import pandas as pd

    styler = frame.style.format(format_number, na_rep=MISSING)
    styler = styler.format_index(format_number, axis=0).format_index(format_number, axis=1)
    default_index = isinstance(frame.index, pd.RangeIndex) and frame.index.name is None and (
        frame.index.start == 0 and frame.index.step == 1
    )
    if default_index:
        styler = styler.hide(axis="index")
    return styler.set_table_attributes('class="dataframe"').to_html()


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
