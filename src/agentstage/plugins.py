"""What plugin authors import: ``@tool`` to make a tool from a typed function, and the
``ProviderKind`` protocol (with ``BaseProviderKind``) to add a kind of model provider.

Declare them in your package's entry points::

    [project.entry-points."agentstage.tools"]
    word_count = "my_plugin:word_count"

    [project.entry-points."agentstage.providers"]
    echo = "my_plugin:EchoKind"
"""

from agentstage.core.function_tools import FunctionTool, tool
from agentstage.core.messages import Message, ToolCall, Usage
from agentstage.core.model import (
    BaseProviderKind,
    Model,
    ModelRequest,
    ModelResponse,
    ProviderKind,
    TextDelta,
    ToolCallChunk,
)
from agentstage.core.tools import ToolContext

__all__ = [
    "BaseProviderKind",
    "FunctionTool",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ProviderKind",
    "TextDelta",
    "ToolCall",
    "ToolCallChunk",
    "ToolContext",
    "Usage",
    "tool",
]
