"""The test command also runs the package's docstring examples (``--doctest-modules`` on ``auq/``)."""

import shlex


def test_the_readme_test_command_collects_the_package_doctests(pytestconfig, repo_root):
    # the configuration pytest loaded (pyproject.toml): doctests on, the package among the test paths
    assert "--doctest-modules" in pytestconfig.getini("addopts")
    assert pytestconfig.option.doctestmodules
    assert {"auq", "tests"} <= set(pytestconfig.getini("testpaths"))
    # the README's test command (run verbatim by .ci/run) names no paths, so testpaths applies
    readme = (repo_root / "README.md").read_text(encoding="utf-8").splitlines()
    at = readme.index("<!-- test-command -->")
    command = readme[at + 2]
    assert "python -m pytest" in command, command
    pytest_args = shlex.split(command.split("python -m pytest", 1)[1])
    assert [a for a in pytest_args if not a.startswith("-")] == [], command
