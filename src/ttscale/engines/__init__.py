"""Level 3: engines, the `Generator` side. The embedded llama.cpp engine with its pure KV-slot
planner, any OpenAI-compatible server, the model registry, and the deterministic fake engine.
llama_cpp is imported only when the embedded engine is built."""
