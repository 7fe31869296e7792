"""Runs inside a virtualenv that has CrewAI (its pins clash with Keel's dev environment):
a one-agent crew against the fake model server, traced with keel.init + keel.instrument.

    python crewai_run.py <fake model base url> <keel url> <api key>

Prints the trace id of the run's root span on the last line.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("CREWAI_TESTING", "true")

import keel


def main() -> None:
    model_url, keel_url, api_key = sys.argv[1:4]
    keel.init(endpoint=keel_url, api_key=api_key, service_name="crewai-run", strict=True)
    print(keel.instrument("crewai", "openai"), flush=True)
    from crewai import LLM, Agent, Crew, Task

    llm = LLM(model="openai/gpt-4o-mini", base_url=model_url, api_key="sk-fake")
    agent = Agent(
        role="Greeter",
        goal="Greet the user",
        backstory="A friendly assistant.",
        llm=llm,
        max_iter=1,
        verbose=False,
    )
    task = Task(description="Say hello in one sentence.", expected_output="A greeting", agent=agent)
    with keel.span("crew-run", kind="agent") as root:
        out = Crew(agents=[agent], tasks=[task], verbose=False).kickoff()
    print("OUTPUT", out, flush=True)
    keel.shutdown()
    print(format(root.otel_span.get_span_context().trace_id, "032x"))


if __name__ == "__main__":
    main()
