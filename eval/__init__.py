"""The answering stage: collect, extract and grade answers (issue #3, not built yet)."""
