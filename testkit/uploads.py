"""A local file handed to predict() as Cog hands over a file it downloaded for a request.

predict() reads only files that Cog's download of this process wrote (e5/uploads.py records them); tests
that call predict() directly with a file they wrote record it the same way first. The real download path
is tested through the real server (tests/test_security.py).
"""

from __future__ import annotations

from pathlib import Path

from cog import Path as CogPath

from e5.uploads import DOWNLOADS


def as_upload(path: str | Path) -> CogPath:
    DOWNLOADS.record(path)
    return CogPath(path)
