"""Tiny real components (a SentencePiece model trained in seconds, fairseq2-layout state dicts) and the one
restatement of the reference SONAR-LLM algorithms, shared by the tests and the benchmarks. Not Hub code."""
