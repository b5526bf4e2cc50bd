"""MusiLingo: a frozen audio encoder, temporal compression, one trained linear adapter and a frozen LLM.

`model/` is the root of the dependency graph: it imports nothing from the other packages.
"""
