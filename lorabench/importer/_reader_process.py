"""Entry point of an import's reader process: ``python -m lorabench.importer._reader_process``.

Kept apart from :mod:`lorabench.importer._read` (which the package imports) so that running it
as ``__main__`` does not import the same module twice.
"""

from __future__ import annotations

import sys

from lorabench.importer._read import serve

if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
