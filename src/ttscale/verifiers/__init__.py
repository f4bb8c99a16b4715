"""Level 3: verifiers, the `Scorer` side. Model-free ones (log-probability, self-certainty),
the LLM judge, process reward models through transformers, the hidden-state value probe, a
PRM served by vLLM, and one registry that builds any of them by name."""
