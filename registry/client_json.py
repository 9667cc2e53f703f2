"""JSON from outside (request bodies, stored manifests that another registry may have written).

json.loads raises RecursionError, not ValueError, on deeply nested input (100,000 `[`), which
slipped past every `except ValueError` into a 500: every such document is parsed here instead.
"""

from __future__ import annotations

import json
from typing import Any


def parse_json(data: bytes | str) -> Any:
    """The document; ValueError (with a short reason) for anything that is not JSON."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
