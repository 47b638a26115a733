"""The one server-sent-events parser: lines in, each event's ``data`` out.

An event is its ``data:`` lines (one leading space dropped, several joined by newlines) ended by a
blank line; ``data: [DONE]`` (OpenAI's end of stream) is an event of its own at once. Other fields
(``event:``, ``id:``, ``retry:``) and comments (``:``) carry nothing a completion client uses. A
stream that ends without its last blank line still gives its last event (llama.cpp and proxies
cut the trailing newline off). Lines may be ``str`` or ``bytes`` (UTF-8; anything else is a
``ValueError``), with or without their line ending; ``iter_events`` reads a sync source,
``aiter_events`` an async one, through the same :class:`SSEParser`. What the data means (JSON
chunks, errors) is the reader's business (``client.http``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

DONE = "[DONE]"


class SSEParser:
    """Feed it lines one at a time; each call gives the events those lines completed."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str | bytes) -> list[str]:
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"the stream is not UTF-8 text (byte {e.start} of a line)") from e
        line = line.rstrip("\r\n")
        if line.startswith("data:"):
            value = line[5:].removeprefix(" ")
            if value == DONE:
                return [*self.finish(), DONE]
            self._data.append(value)
            return []
        if not line:  # a blank line ends an event
            return self.finish()
        return []

    def finish(self) -> list[str]:
        """The event still open (the stream ended without its blank line), if any."""
        if not self._data:
            return []
        event, self._data = "\n".join(self._data), []
        return [event]


def iter_events(lines: Iterable[str | bytes]) -> Iterator[str]:
    """The events of a sync line source."""
    parser = SSEParser()
    for line in lines:
        yield from parser.feed(line)
    yield from parser.finish()


async def aiter_events(lines: AsyncIterable[str | bytes]) -> AsyncIterator[str]:
    """The events of an async line source."""
    parser = SSEParser()
    async for line in lines:
        for event in parser.feed(line):
            yield event
    for event in parser.finish():
        yield event
