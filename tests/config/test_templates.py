"""The one Jinja2 environment every HTML page is rendered with: every value escaped, a missing
name an error, and the templates the packages ship all parse."""

from __future__ import annotations

import jinja2
import pytest

from config.templates import environment

PACKAGES = ["compliance"]  # every package with a templates/ folder


@pytest.mark.parametrize("package", PACKAGES)
def test_every_value_is_escaped_and_a_missing_name_is_an_error(package: str) -> None:
    env = environment(package)
    assert env.from_string("{{ x }}").render(x="<b title='a'>&\"") == (
        "&lt;b title=&#39;a&#39;&gt;&amp;&#34;"
    )
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    assert environment(package) is env  # read once per process


@pytest.mark.parametrize("package", PACKAGES)
def test_shipped_templates_parse(package: str) -> None:
    env = environment(package)
    names = env.list_templates()
    assert names and all(name.endswith(".html") for name in names)
    for name in names:
        env.get_template(name)
