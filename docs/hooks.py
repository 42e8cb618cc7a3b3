"""mkdocs hooks for the kernelcalc site (registered in mkdocs.yml; not a page).

The docstrings are written for both ``help()`` and this site: markdown with ``$...$`` maths and
``**Arguments:**`` lists, plus a few Sphinx cross-reference roles (``:class:`~kernelcalc.Kernel```)
that markdown renders as ``:class:<code>~kernelcalc.Kernel</code>``.  ``on_page_content`` turns each
role into plain code: ``~a.b.C`` shows ``C`` (Sphinx's meaning of ``~``), anything else the full name.
"""

import re

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):<code>(~?)([^<]*)</code>")


def _code(match: re.Match) -> str:
    short, name = match.group(1), match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if short else name}</code>"


def on_page_content(html, **kwargs):
    return _ROLE.sub(_code, html)
