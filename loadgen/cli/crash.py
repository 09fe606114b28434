"""What `main()` says about an exception no command turned into an `error:` line: an OSError as
one plain sentence, anything else as a traceback saved to a file (the run folder once a command
knows it)."""

from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from loadgen import __version__
from loadgen.redact import redact_text

# Where a crash's traceback goes: the run folder once a command knows it (`crash_folder`).
_crash_dir: Path | None = None


def crash_folder(path: Path) -> None:
    global _crash_dir  # the one piece of state main() reads after a crash
    _crash_dir = path


def os_error_message(exc: OSError) -> str:
    """`[Errno 28] No space left on device: 'x'` as `cannot write x: No space left on device`."""
    what = exc.strerror or str(exc)
    if exc.filename is None:
        return what
    action = "cannot use"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        action = "cannot write"
    elif exc.errno == errno.ENOENT:
        action = "not found:"
        return f"{action} {exc.filename}"
    return f"{action} {exc.filename}: {what}"


def save_traceback(exc: BaseException) -> Path:
    """The traceback, in the run folder when there is one, else under the user's cache folder."""
    text = redact_text("".join(traceback.format_exception(exc)))
    name = f"loadgen-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loadgen"
    for folder in (_crash_dir, cache, Path(tempfile.gettempdir())):
        if folder is None or (folder is not cache and not folder.is_dir()):
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"loadgen {__version__}\n{redact_text(' '.join(sys.argv))}\n\n{text}")
            return folder / name
        except OSError:
            continue
    raise exc
