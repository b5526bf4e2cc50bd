"""Search the catalog: natural-language hybrid search, more like this, and track details for the UI."""

from search.engine import Filters, Hit, SearchEngine, SearchError, SearchResult
from search.query import ParsedQuery, parse_query

__all__ = ["Filters", "Hit", "ParsedQuery", "SearchEngine", "SearchError", "SearchResult", "parse_query"]
