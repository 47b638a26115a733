"""The local completion server: ``scheduler`` (continuous batching over the engine), ``metrics``
(Prometheus), ``formats`` (prompt layouts), ``app`` (the OpenAI- and llama.cpp-compatible HTTP API).

Nothing is imported here, so that ``import smallcode.runtime.metrics`` does not pull in FastAPI and
the scheduler does not pull in the HTTP stack.
"""
