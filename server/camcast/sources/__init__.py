"""Frame sources and the capture supervisor that keeps them running."""

from camcast.sources.base import Source, SourceError
from camcast.sources.factory import make_source, open_source_spec, resolve_source

__all__ = ["Source", "SourceError", "make_source", "open_source_spec", "resolve_source"]
