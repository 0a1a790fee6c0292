"""OpenAI Chat Completions <-> Anthropic Messages, both ways, plain and streamed.

Pure translation over parsed JSON (the caller does the I/O and json loads/dumps):
requests and paths (`requests`), complete answers (`responses`), error bodies
(`errors`) and streams (`streams`). What is translated and what is refused:
docs/llm.md.
"""

from sidecar.llm.translate.errors import error_to_anthropic, error_to_openai
from sidecar.llm.translate.requests import (
    Format,
    Untranslatable,
    request_to_anthropic,
    request_to_openai,
    translated_path,
)
from sidecar.llm.translate.responses import response_to_anthropic, response_to_openai
from sidecar.llm.translate.streams import StreamToAnthropic, StreamToOpenAI

__all__ = [
    "Format",
    "StreamToAnthropic",
    "StreamToOpenAI",
    "Untranslatable",
    "error_to_anthropic",
    "error_to_openai",
    "request_to_anthropic",
    "request_to_openai",
    "response_to_anthropic",
    "response_to_openai",
    "translated_path",
]
