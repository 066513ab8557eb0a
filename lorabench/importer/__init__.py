"""The importer: scan folders, plan (the dry-run diff), read headers in batches, hash in a pool."""

from lorabench.importer._report import ImportReport
from lorabench.importer._run import import_library
from lorabench.importer._scan import Found, ScanResult, scan

__all__ = ["Found", "ImportReport", "ScanResult", "import_library", "scan"]
