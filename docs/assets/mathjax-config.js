// MathJax 3 for pymdownx.arithmatex (generic mode): \( \) inline, \[ \] display. The SVG output needs
// no web fonts, and tex-svg-full.js holds every TeX extension, so nothing is fetched: the site works
// offline. Material's instant navigation is off, so a full page load typesets each page.
window.MathJax = {
  tex: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true },
  options: { ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex" },
  svg: { fontCache: "global" }
};
