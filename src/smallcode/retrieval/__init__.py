"""Repository retrieval: an index of a repository's Python files (definitions, imports, chunks for
lexical search) and the context files it picks for a completion. Local only: nothing leaves the machine."""

from smallcode.retrieval.index import (
    Definition,
    Hit,
    IndexLimits,
    RepoIndex,
    RetrievalBudget,
    bm25_terms,
    index_directory,
)

__all__ = ["Definition", "Hit", "IndexLimits", "RepoIndex", "RetrievalBudget", "bm25_terms", "index_directory"]
