"""The local completion server: the runtime (``smallcode.runtime``'s scheduler and prompt formats)
behind HTTP. It defines no model logic: it does not batch, cache, sample or lay out prompts.

* ``app``: ``create_app``, the app factory: the gate (API key, body size), the error handlers,
  ``/health``, ``/metrics``, and the routers below;
* ``openai``: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``;
* ``mistral``: ``/v1/fim/completions``;
* ``llamacpp``: llama.cpp's ``/infill`` (and its ``n_indent``), ``/completion``, ``/tokenize``,
  ``/detokenize``, ``/props``, ``/slots``;
* ``service``: ``Service`` (a parsed request to scheduler submissions), ``Limits``, ``APIError``;
* ``handles``: consuming the scheduler's handles (collecting, merging, cancelling when the client goes);
* ``responses``: the shared answer shapes (errors, usage, log-probabilities, server-sent events);
* ``protocol``: the request bodies (pydantic) and the error body.

Nothing is imported here, so that importing one module does not pull in the others.
"""
