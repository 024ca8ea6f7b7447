#!/usr/bin/python3
"""Counts test cases over a build's results: cmocka lines in the unit tests'
logs and pytest's JUnit XML. Prints the totals as 'N passed, N failed'."""
import glob
import re
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
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
            skipped += s
line = "%d passed, %d failed" % (passed, failed)
if skipped:
    line += ", %d skipped" % skipped
print(line)
