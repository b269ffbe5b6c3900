"""A peer process for the tests: runs Python snippets sent by the test.

Protocol: one JSON object per line on stdin, ``{"code": "..."}``; the
snippet runs in one namespace kept across snippets (``te``, ``np``, ``os``
and ``json`` are imported), and the reply is one JSON line on stdout:
``{"ok": true, "result": <the value of the name 'result'>}`` or
``{"ok": false, "error": "<traceback>"}``. End of stdin ends the process.
"""

import json
import os
import sys
import traceback

import numpy as np

import te

ns: dict = {"te": te, "np": np, "os": os, "json": json}
out = sys.stdout
sys.stdout = sys.stderr  # prints of snippets must not mix with replies

for line in sys.stdin:
    ns.pop("result", None)
    try:
        exec(json.loads(line)["code"], ns)
        reply = {"ok": True, "result": ns.get("result")}
    except BaseException:  # noqa: BLE001 - the test wants to see everything
        reply = {"ok": False, "error": traceback.format_exc()}
    out.write(json.dumps(reply) + "\n")
    out.flush()
