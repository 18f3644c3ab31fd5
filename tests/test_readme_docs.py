"""The README stays a short front page that leads into the documentation site (``docs/``, built by MkDocs):
at most 250 lines, every link it gives reaching a file of the repository, and CI's test command building
the site with warnings as errors."""

import re

from test_readme_numbers import ROOT

MAX_README_LINES = 250
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")  # [text](path) or [text](path#anchor); not bare #anchors


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_the_readme_is_short():
    lines = readme().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES}): move detail to docs/"


def test_every_readme_link_reaches_a_file():
    links = [target for target in LINK.findall(readme()) if "://" not in target]
    assert any(target.startswith("docs/") for target in links), "the README links to no documentation page"
    missing = [target for target in links if not (ROOT / target).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_ci_builds_the_site_strictly():
    after = readme().split("<!-- ci:test -->", 1)[1]
    command = after.split("```bash\n", 1)[1].split("```", 1)[0]
    build = re.search(r"mkdocs build[^&;|\n]*", command)
    assert build and "--strict" in build.group(0), command
    # --quiet hides the warnings from the count --strict fails on: the build would pass with them
    assert not re.search(r"(^|\s)(-q|--quiet)(\s|$)", build.group(0)), build.group(0)
