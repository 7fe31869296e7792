"""Runs inside a virtualenv that has llama-index-llms-openai (it pins openai<3, which clashes with
Keel's dev environment): one LlamaIndex chat call against the fake model server, traced with
keel.init + keel.instrument.

    python llama_index_run.py <fake model base url> <keel url> <api key>

Prints the reply, then the trace id of the run's root span on the last line.
"""

from __future__ import annotations

import sys

import keel


def main() -> None:
    model_url, keel_url, api_key = sys.argv[1:4]
    keel.init(endpoint=keel_url, api_key=api_key, service_name="llama-index-run", strict=True)
    print(keel.instrument("llama_index"), flush=True)
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    llm = OpenAI(model="gpt-4o-mini", api_base=model_url, api_key="sk-fake", max_retries=0)
    with keel.span("llama-index-run", kind="chain") as root:
        resp = llm.chat([ChatMessage(role="user", content="Say hello in one sentence.")])
    print("OUTPUT", resp.message.content, flush=True)
    keel.shutdown()
    print(format(root.otel_span.get_span_context().trace_id, "032x"), flush=True)


if __name__ == "__main__":
    main()
