"""Sixteen clients at once on the shared live server get exactly what each gets alone: greedy and
seeded sampling, completions, chat and /infill, streamed and not."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

PROMPTS = ["def foo(", "import json\n", "x = 1\n", "class A:\n", "for i in range(", "# parse the file\n",
           "return ", "if __name__"]


def requests() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for i, prompt in enumerate(PROMPTS):
        sampling = {"temperature": 0} if i % 2 else {"temperature": 0.8, "seed": 100 + i}
        route, body = [
            ("/v1/completions", {"prompt": prompt, "max_tokens": 20 + i}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}], "max_tokens": 20 + i}),
            ("/infill", {"input_prefix": prompt, "input_suffix": "\npass\n", "n_predict": 20 + i}),
            ("/v1/completions", {"prompt": prompt, "suffix": "\n", "n": 2, "max_tokens": 16}),
        ][i % 4]
        out.append((route, {**body, **sampling}))
        out.append((route, {**body, **sampling, "stream": True}))
    return out


def answer(route: str, body: dict[str, Any], response: httpx.Response | list[str]) -> list[str]:
    """The generated texts of one response (whole or streamed), one per choice."""
    if isinstance(response, httpx.Response):
        assert response.status_code == 200, response.text
        data = response.json()
        if route == "/infill":
            return [data["content"]]
        return [c["text"] if "text" in c else c["message"]["content"] for c in data["choices"]]
    texts: dict[int, str] = {}
    for line in response:
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[len("data: "):])
        if route == "/infill":
            texts[0] = texts.get(0, "") + event["content"]
        for c in event.get("choices", []):
            texts[c["index"]] = texts.get(c["index"], "") + (c.get("text") or c.get("delta", {}).get("content") or "")
    return [texts[i] for i in sorted(texts)]


async def ask(client: httpx.AsyncClient, route: str, body: dict[str, Any]) -> list[str]:
    if not body.get("stream"):
        return answer(route, body, await client.post(route, json=body))
    async with client.stream("POST", route, json=body) as response:
        assert response.status_code == 200
        return answer(route, body, [line async for line in response.aiter_lines()])


async def alone_then_together(url: str) -> tuple[list[list[str]], list[list[str]]]:
    todo = requests()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=32)) as client:
        alone = [await ask(client, route, body) for route, body in todo]
        together = await asyncio.gather(*(ask(client, route, body) for route, body in todo))
    return alone, list(together)


def test_sixteen_concurrent_clients_get_what_each_gets_alone(live: tuple[str, Any]) -> None:
    url, scheduler = live
    assert len(requests()) == 16
    alone, together = asyncio.run(alone_then_together(url))
    assert together == alone
    assert all(text for texts in alone for text in texts)
    assert scheduler.metrics.value("smallcode_running_rows") == 0
