"""Fakes shipped beside the real adapters: a protocol-faithful fake LLM upstream
(``fake_upstream``, one module per wire format) and a real Triton server on CPU
(``triton_server``). Nothing here is imported by the data plane itself."""
