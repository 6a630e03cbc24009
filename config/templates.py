"""HTML pages from Jinja2 templates shipped inside a package (`<package>/templates/*.html`,
package data beside the code that renders them), escaped by construction: every `{{ value }}`
is HTML-escaped, so text that people or clause files wrote (names, titles, causes, actors)
cannot become markup on a page. No template marks anything `|safe`; don't start.

Every renderer gets its Environment here, so the safety settings cannot differ between pages:

- `autoescape=True` for every template, whatever its file name (all of them are HTML; an
  extension-based choice would leave a misnamed template unescaped);
- `StrictUndefined`: a misspelt or missing name fails the rendering instead of printing nothing;
- `trim_blocks` and `lstrip_blocks`: a line holding only a `{% ... %}` tag leaves nothing in the
  output, so templates can be laid out for reading.

Templates are read once per process and cached (they are package data and do not change while
the process runs). No database, no network: the lowest layer that may read files (rules/ may
not), so compliance/, energy/ and alerts/ can all use it.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2


@functools.cache
def environment(package: str) -> jinja2.Environment:
    """The Environment of `package`'s `templates/` folder (one per package, cached)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def render(package: str, template: str, /, **context: Any) -> str:
    """`package`'s `templates/<template>` rendered with `context`, every value escaped."""
    return environment(package).get_template(template).render(**context)
