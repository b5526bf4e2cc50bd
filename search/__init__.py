"""Search the catalog: natural-language hybrid search, more like this, and track details for the UI."""

from search.engine import SearchEngine
from search.query import ParsedQuery, parse_query
from search.types import Filters, Hit, SearchError, SearchResult

__all__ = ["Filters", "Hit", "ParsedQuery", "SearchEngine", "SearchError", "SearchResult", "parse_query"]
