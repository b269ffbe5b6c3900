"""Puts a generated section into docs/PERFORMANCE.md between two markers.

Usage: python3 bench/write_section.py DOC SECTION NAME TITLE

The text of file SECTION replaces what lies between <!-- NAME:begin --> and
<!-- NAME:end --> in DOC. A notes block inside (<!-- NAME:notes:begin --> ...
<!-- NAME:notes:end -->) is kept from run to run. Without the markers, the
section is appended under a heading TITLE. Used by bench/compare.sh and
bench/scale.sh.
"""
import sys

doc_path, sec_path, name, title = sys.argv[1:5]
doc = open(doc_path).read()
sec = open(sec_path).read()
B, E = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
NB, NE = f"<!-- {name}:notes:begin -->", f"<!-- {name}:notes:end -->"
notes = ""
if B in doc and E in doc:
    head, rest = doc.split(B, 1)
    old, tail = rest.split(E, 1)
    if NB in old and NE in old:
        notes = NB + old.split(NB, 1)[1].split(NE, 1)[0] + NE + "\n\n"
else:
    head, tail = doc.rstrip("\n") + f"\n\n## {title}\n\n", "\n"
body = (B + f"\n<!-- written by bench/{name}.sh; only the notes block is kept from run to run -->\n\n"
        + sec + "\n" + notes + E)
open(doc_path, "w").write(head + body + tail)
