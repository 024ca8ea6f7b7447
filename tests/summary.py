#!/usr/bin/python3
"""Counts test cases over a build's results: cmocka lines in the unit tests'
logs, pytest's JUnit XML, and test scripts that skipped themselves as a
whole (exit 77, e.g. tests/e2e.sh with QW_E2E=skip). Prints what was
skipped and why on a line of its own, then, always as the last line, the
totals as 'N passed, N failed' (.ci/run and test.sh end with it)."""
import glob
import os
import re
import sys
import xml.etree.ElementTree as ET

passed = failed = 0
skips = {}      # (what, why) -> count


def skip(what, why, n=1):
    key = (what, " ".join(why.split()))
    skips[key] = skips.get(key, 0) + n


def script_skips(build):
    """Test scripts whose automake result is SKIP: one skipped case each,
    with the reason their log gives ('NAME: SKIPPED because REASON')."""
    for trs in glob.glob(build + "/tests/*.trs"):
        if ":test-result: SKIP" not in open(trs, errors="replace").read():
            continue
        name = os.path.basename(trs)[:-len(".trs")]
        why = "skipped"
        log = trs[:-len(".trs")] + ".log"
        if os.path.exists(log):
            m = re.search(r"^\S+: SKIPPED because (.*)$", open(log, errors="replace").read(), re.M)
            why = m.group(1) if m else why
        skip(re.sub(r"\.sh$", "", name), why)


for build in sys.argv[1:]:
    for log in glob.glob(build + "/tests/unit/*.log"):
        text = open(log, errors="replace").read()
        m = re.search(r"\[  PASSED  \] (\d+) test", text)
        passed += int(m.group(1)) if m else 0
        m = re.search(r"\[  FAILED  \] (\d+) test", text)
        failed += int(m.group(1)) if m else 0
        if "[==========]" not in text:
            failed += 1     # crashed before cmocka could report
    for xml in glob.glob(build + "/tests/*.xml"):
        for suite in ET.parse(xml).getroot().iter("testsuite"):
            n = int(suite.get("tests", 0))
            f = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            s = int(suite.get("skipped", 0))
            passed += n - f - s
            failed += f
        for case in ET.parse(xml).getroot().iter("testcase"):
            for s in case.findall("skipped"):
                module = case.get("classname", "").split(".")[-1] or \
                    os.path.basename(xml)[:-len(".xml")]
                skip(module, s.get("message", "skipped"))
    script_skips(build)

if skips:
    n = sum(skips.values())
    parts = ["%s (%s)" % (what if k == 1 else "%d of %s" % (k, what), why)
             for (what, why), k in sorted(skips.items())]
    print("%d skipped: %s" % (n, "; ".join(parts)))
print("%d passed, %d failed" % (passed, failed))
