"""The appraisal core: evidence + trust + policy -> one result (DESIGN.md, "appraise/")."""
