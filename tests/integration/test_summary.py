"""tests/summary.py: skipped tests are counted and named, with their reason,
on a line of their own; the last line stays exactly 'N passed, N failed'
(.ci/run and test.sh end with it)."""
import os
import subprocess
import sys

from conftest import TOP

SRC = os.environ.get("QW_SRCDIR", TOP)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites>
<testsuite name="pytest" errors="0" failures="1" skipped="2" tests="6">
<testcase classname="tests.integration.test_package" name="test_a">
<skipped type="pytest.skip" message="dpkg-buildpackage is not installed"/></testcase>
<testcase classname="tests.integration.test_package" name="test_b">
<skipped type="pytest.skip" message="dpkg-buildpackage is not installed"/></testcase>
</testsuite></testsuites>"""


def summary(*builds):
    p = subprocess.run([sys.executable, os.path.join(SRC, "tests", "summary.py")] +
                       [str(b) for b in builds], capture_output=True, text=True, check=True)
    return p.stdout.splitlines()


def test_skipped_e2e_script_counted_last_line_unchanged(tmp_path):
    t = tmp_path / "tests"
    (t / "unit").mkdir(parents=True)
    (t / "unit" / "test_a.log").write_text("[==========] 3 test(s) run.\n[  PASSED  ] 3 test(s).\n")
    (t / "e2e.sh.trs").write_text(":test-result: SKIP\n:global-test-result: SKIP\n")
    (t / "e2e.sh.log").write_text("e2e: SKIPPED because QW_E2E=skip\nSKIP: tests/e2e.sh\n")
    (t / "integration.xml").write_text(JUNIT)
    lines = summary(tmp_path)
    assert lines[-1] == "6 passed, 1 failed"
    assert lines[-2] == ("3 skipped: e2e (QW_E2E=skip); "
                         "2 of test_package (dpkg-buildpackage is not installed)")


def test_nothing_skipped_one_line(tmp_path):
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "t.log").write_text("[==========] 1 test(s) run.\n"
                                                       "[  PASSED  ] 1 test(s).\n")
    assert summary(tmp_path) == ["1 passed, 0 failed"]
