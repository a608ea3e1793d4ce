// MathJax reads this object when it loads. pymdownx.arithmatex (generic mode) wraps maths
// in \( \) and \[ \] inside elements of class "arithmatex"; typeset only those.
window.MathJax = {
  tex: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]] },
  options: { ignoreHtmlClass: ".*", processHtmlClass: "arithmatex" },
  svg: { fontCache: "global" },
};
