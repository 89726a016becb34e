"""Everything that imports Olive: the pass, its discovery, and the evaluators."""
