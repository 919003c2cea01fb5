"""The properties: one family of invariants per file, each a plain check plus a thin @given test."""
